package ext

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/mpage"
)

// Journaled writing (ext3/ext4 with an internal journal, data=ordered).
//
// The running transaction (txn) collects every metadata block a change
// dirties: blocks of the metadata mapping join it through the mapping's
// journal hook (MarkDirty calls JoinBlock), directory blocks, which live
// in their directory's own mapping, join explicitly (writeDirBlock). A
// joined block is pinned, so writeback never takes its new bytes home
// before the transaction that holds them has committed.
//
// Handles: every change runs inside a handle (startHandle, the seeds'
// later journal_start/stop): a shared hold of jnl.handles, taken first,
// before any other lock of the volume, so that a handle never waits for a
// lock whose holder waits for a handle. A commit freezes the running
// transaction under the exclusive hold: it waits for the running handles
// to stop, holds new ones off while it copies the frozen blocks' bytes and
// starts a new running transaction, and lets them go before any I/O. A
// commit thus never captures half of a change. Handles do not nest: a
// path that may run inside a handle and would need one (the last release
// of an unlinked open file) hands its work to a goroutine of its own.
//
// Commit (after the freeze, one at a time): the data of every cached file
// is written back and waited for (ordered mode: whatever the frozen
// metadata makes reachable is on the device first; the commit writer's
// flush before the commit block makes it durable), then jbd2 writes the
// transaction, then its blocks are unpinned; writeback or the checkpoint
// takes them home. Freed metadata blocks get revoke records when a copy of
// them may be in the log (logged since the last checkpoint, or in the
// transaction being committed).
//
// The journal writes the log and checkpoints home blocks straight to the
// device (rawDevice), never through the metadata mapping: a log block may
// share a page with a pinned metadata block, which writeback would hold
// back, and a checkpoint must write the committed copy of a block whose
// cached bytes a newer, uncommitted transaction has already changed.
//
// Blocks freed by a transaction are busy until it commits: the allocator
// does not hand them out (as ext4's allocator keeps them until the commit
// callback). Until then a crash brings back the state in which they are
// still in use, so their bytes must still be theirs; and a checkpoint may
// write an old committed copy of a freed metadata block home without
// landing on anybody's data.

// journalCommitInterval is how often a running transaction with changes
// is committed (the kernel's default commit interval). A variable so
// tests can shorten it.
var journalCommitInterval = 5 * time.Second

// journalWritable lets volumes with an internal journal open read-write
// (features.go). It was off until the journaled write path passed its
// tests (e2fsck -fn, the kernel's reads, the crash cuts); turning it off
// serves such volumes read-only again, naming has_journal.
var journalWritable = true

// txn is a transaction: the blocks it journals (home block -> reference,
// pinned once) and the blocks it revokes.
// freed lists the runs of blocks it frees (busy until it commits): a
// file's blocks are freed a run at a time, so the list stays short.
type txn struct {
	blocks  map[uint64]mpage.BlockRef
	revoked map[uint64]struct{}
	freed   [][2]uint64 // first block, count
}

func newTxn() *txn {
	return &txn{blocks: map[uint64]mpage.BlockRef{}, revoked: map[uint64]struct{}{}}
}

func (t *txn) empty() bool { return len(t.blocks) == 0 && len(t.revoked) == 0 && len(t.freed) == 0 }

// volJournal is the write side of a volume's journal.
type volJournal struct {
	v   *Volume
	j   *jbd2.Journal
	dev *rawDevice

	// handles: shared by every running handle, exclusive while a commit
	// freezes the running transaction.
	handles sync.RWMutex
	// commitMu: one commit (or checkpoint) at a time.
	commitMu sync.Mutex

	// mu guards running, committing and logged. It is taken inside page
	// locks (JoinBlock), so nothing holding it takes a page lock.
	mu      sync.Mutex
	running *txn
	// committing is the frozen transaction being written, nil between
	// commits.
	committing *txn
	// logged: home blocks with a copy in the log since the last
	// checkpoint (a revoke must stop their replay if they are freed).
	logged map[uint64]struct{}

	// err is the failure that aborted the journal (commits refused
	// from then on; the log is left for recovery). stuck are the
	// transactions whose commit failed, still pinned.
	err   error
	stuck []*txn

	stop chan struct{}
	done chan struct{}
}

// openJournal starts the write side of v's journal: the log must be
// empty (Open replayed it). It installs the journal hook on the metadata
// mapping.
func (v *Volume) openJournal() error {
	log, err := v.journalLog()
	if err != nil {
		return err
	}
	dev, err := newRawDevice(v)
	if err != nil {
		return err
	}
	j, err := jbd2.Open(dev, log)
	if err != nil {
		dev.close()
		return fmt.Errorf("ext: journal: %w", err)
	}
	jn := &volJournal{v: v, j: j, dev: dev, running: newTxn(), logged: map[uint64]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	v.jnl = jn
	v.meta.SetJournal(jn)
	go jn.commitLoop()
	return nil
}

// JoinBlock implements mpage.BlockJournal for the metadata mapping.
func (jn *volJournal) JoinBlock(ref mpage.BlockRef) { jn.join(ref.Block(), ref) }

// join adds ref (home block home) to the running transaction, pinning it
// the first time. The caller holds ref's lock.
func (jn *volJournal) join(home uint64, ref mpage.BlockRef) {
	jn.mu.Lock()
	defer jn.mu.Unlock()
	t := jn.running
	delete(t.revoked, home)
	if old, ok := t.blocks[home]; ok {
		if old.Mapping() == ref.Mapping() && old.Block() == ref.Block() {
			return
		}
		// The block changed owner within the transaction (a freed
		// directory block reused as metadata): the new owner's bytes
		// are the ones to journal.
		old.Unpin()
	}
	ref.Pin()
	t.blocks[home] = ref
}

// ForgetBlock implements mpage.BlockJournal: blk is file data now.
func (jn *volJournal) ForgetBlock(blk uint64) {
	jn.mu.Lock()
	defer jn.mu.Unlock()
	jn.revokeLocked(blk, 1)
}

// freed records that blocks [blk, blk+n) were returned to the free pool:
// revoked where needed and busy until the transaction commits.
func (jn *volJournal) freed(blk uint64, n int) {
	jn.mu.Lock()
	defer jn.mu.Unlock()
	jn.revokeLocked(blk, n)
	t := jn.running
	if last := len(t.freed) - 1; last >= 0 && t.freed[last][0]+t.freed[last][1] == blk {
		t.freed[last][1] += uint64(n)
		return
	}
	t.freed = append(t.freed, [2]uint64{blk, uint64(n)})
}

// holdsFreed reports whether the running or the committing transaction
// frees blocks, which stay busy until it has committed.
func (jn *volJournal) holdsFreed() bool {
	jn.mu.Lock()
	defer jn.mu.Unlock()
	return len(jn.running.freed) > 0 || jn.committing != nil && len(jn.committing.freed) > 0
}

// noSpaceRetries bounds how often a change that ran out of space commits
// for the blocks a transaction freed and tries again (a writer racing it
// may take them first).
const noSpaceRetries = 3

// commitForSpace is what a change that failed with ErrNoSpace calls, with
// no handle held (a commit waits for every handle to stop): when the
// running or the committing transaction frees blocks, which the allocator
// does not hand out until it has committed, it commits them (after the
// commit in progress, if any) and reports true, so the change can try
// again, as the kernel's ext4 forces a commit and retries the allocation.
// Otherwise the volume is truly full: false at once. Without a journal it
// is always false: the quarantine (quarantine.go) gives its blocks up
// when nothing else is free.
func (v *Volume) commitForSpace() bool {
	jn := v.jnl
	if jn == nil || !jn.holdsFreed() {
		return false
	}
	if err := jn.commit(); err != nil {
		v.logf("ext: journal commit for space: %v", err)
		return false
	}
	v.spaceCommits.Add(1)
	return true
}

// busySpan says of blk whether it was freed by a transaction not yet
// committed, and where the span it starts ends: the first block from blk
// on that is not busy (busy), or the first busy block after blk (free;
// max uint64 when none is). The allocator calls it under a bitmap block's
// lock.
func (jn *volJournal) busySpan(blk uint64) (busy bool, end uint64) {
	jn.mu.Lock()
	defer jn.mu.Unlock()
	lists := [][][2]uint64{jn.running.freed}
	if jn.committing != nil {
		lists = append(lists, jn.committing.freed)
	}
	for moved := true; moved; {
		moved = false
		for _, l := range lists {
			for _, r := range l {
				if blk >= r[0] && blk < r[0]+r[1] {
					blk, busy, moved = r[0]+r[1], true, true
				}
			}
		}
	}
	if busy {
		return true, blk
	}
	end = ^uint64(0)
	for _, l := range lists {
		for _, r := range l {
			if r[0] > blk && r[0] < end {
				end = r[0]
			}
		}
	}
	return false, end
}

// revokeLocked drops blocks [blk, blk+n), freed or become file data, from
// the running transaction and revokes those a copy of which may be in the
// log. The caller holds jn.mu.
func (jn *volJournal) revokeLocked(blk uint64, n int) {
	t := jn.running
	committing := 0
	if jn.committing != nil {
		committing = len(jn.committing.blocks)
	}
	if uint64(n) > uint64(len(jn.logged)+len(t.blocks)+committing) {
		// A long run (a file's data): look the other way round.
		jn.revokeRangeLocked(blk, blk+uint64(n))
		return
	}
	for b := blk; b < blk+uint64(n); b++ {
		if ref, ok := t.blocks[b]; ok {
			ref.Unpin()
			delete(t.blocks, b)
		}
		_, logged := jn.logged[b]
		if !logged && jn.committing != nil {
			_, logged = jn.committing.blocks[b]
		}
		if logged {
			t.revoked[b] = struct{}{}
		}
	}
}

// revokeRangeLocked is revokeLocked of [from, to) by walking the
// transactions' block sets rather than the range.
func (jn *volJournal) revokeRangeLocked(from, to uint64) {
	t := jn.running
	in := func(b uint64) bool { return b >= from && b < to }
	for b, ref := range t.blocks {
		if in(b) {
			ref.Unpin()
			delete(t.blocks, b)
		}
	}
	for b := range jn.logged {
		if in(b) {
			t.revoked[b] = struct{}{}
		}
	}
	if jn.committing != nil {
		for b := range jn.committing.blocks {
			if in(b) {
				t.revoked[b] = struct{}{}
			}
		}
	}
}

// startHandle starts a change; the returned function stops it. A
// transaction grown past a quarter of the log is committed first, so one
// always fits.
func (v *Volume) startHandle() func() {
	jn := v.jnl
	if jn == nil {
		return func() {}
	}
	if jn.tooBig() {
		if err := jn.commit(); err != nil {
			v.logf("ext: journal commit: %v", err)
		}
	}
	jn.handles.RLock()
	return jn.handles.RUnlock
}

// tooBig reports whether the running transaction takes more than a
// quarter of the log.
func (jn *volJournal) tooBig() bool {
	jn.mu.Lock()
	nb, nr := len(jn.running.blocks), len(jn.running.revoked)
	jn.mu.Unlock()
	sb := jn.j.Superblock()
	return jn.j.BlocksFor(nb, nr)*4 > uint64(sb.MaxLen-sb.First)
}

// commitLoop commits the running transaction every commit interval.
func (jn *volJournal) commitLoop() {
	defer close(jn.done)
	tick := time.NewTicker(journalCommitInterval)
	defer tick.Stop()
	for {
		select {
		case <-jn.stop:
			return
		case <-tick.C:
			if err := jn.commit(); err != nil {
				jn.v.logf("ext: journal commit: %v", err)
			}
		}
	}
}

// frozen is a transaction as a commit writes it.
type frozen struct {
	t     *txn
	tx    jbd2.Transaction
	nodes []*node
}

// freeze swaps in a new running transaction, with no handle running, and
// copies the old one's blocks. It returns nil when there is nothing to
// commit.
func (jn *volJournal) freeze() *frozen {
	jn.handles.Lock()
	defer jn.handles.Unlock()
	jn.mu.Lock()
	t := jn.running
	if t.empty() {
		jn.mu.Unlock()
		return nil
	}
	jn.running = newTxn()
	jn.committing = t
	jn.mu.Unlock()
	f := &frozen{t: t}
	homes := make([]uint64, 0, len(t.blocks))
	for h := range t.blocks {
		homes = append(homes, h)
	}
	slices.Sort(homes)
	for _, h := range homes {
		ref := t.blocks[h]
		if err := ref.Lock(); err != nil {
			// The page left its mapping (a truncated directory whose
			// blocks were freed and so revoked): nothing to journal.
			continue
		}
		f.tx.Blocks = append(f.tx.Blocks, jbd2.Block{Home: h, Data: slices.Clone(ref.Data())})
		ref.Unlock()
	}
	for r := range t.revoked {
		f.tx.Revoked = append(f.tx.Revoked, r)
	}
	slices.Sort(f.tx.Revoked)
	f.nodes = jn.v.holdNodes()
	return f
}

// commit writes the running transaction to the log: freeze, ordered data,
// jbd2 commit, unpin.
func (jn *volJournal) commit() error {
	jn.commitMu.Lock()
	defer jn.commitMu.Unlock()
	if jn.err != nil {
		return jn.err
	}
	f := jn.freeze()
	if f == nil {
		return nil
	}
	err := jn.writeData(f.nodes)
	if err == nil && (len(f.tx.Blocks) > 0 || len(f.tx.Revoked) > 0) {
		_, err = jn.j.Commit(&f.tx)
	}
	jn.mu.Lock()
	if err == nil {
		for _, ref := range f.t.blocks {
			ref.Unpin()
		}
	} else {
		// Whether the commit block arrived is unknown: the frozen
		// blocks stay pinned (their bytes never go home on their own)
		// until close drops them.
		jn.stuck = append(jn.stuck, f.t)
	}
	jn.committing = nil
	if err == nil {
		for _, b := range f.tx.Blocks {
			jn.logged[b.Home] = struct{}{}
		}
		for _, r := range f.tx.Revoked {
			delete(jn.logged, r)
		}
	}
	jn.mu.Unlock()
	if err != nil {
		// The journal is aborted, so nothing commits again, and the
		// volume stays marked needs_recovery: replay decides what the
		// log holds.
		jn.err = fmt.Errorf("%w: %w", ErrJournalAborted, err)
		return jn.err
	}
	return nil
}

// abort stops the journal: no commit from now on.
func (jn *volJournal) abort(err error) {
	jn.commitMu.Lock()
	defer jn.commitMu.Unlock()
	if jn.err == nil {
		jn.err = fmt.Errorf("%w: %w", ErrJournalAborted, err)
	}
}

// writeData is ordered mode: the data of every cached file reaches the
// device before the commit block (jbd2 flushes before writing it).
func (jn *volJournal) writeData(nodes []*node) error {
	var errs []error
	for _, n := range nodes {
		if err := n.m.WriteAndWait(0, -1); err != nil {
			errs = append(errs, fmt.Errorf("ext: inode %d: %w", n.ino, err))
		}
		jn.v.putNode(n)
	}
	return errors.Join(errs...)
}

// holdNodes returns every cached node, referenced.
func (v *Volume) holdNodes() []*node {
	v.mu.Lock()
	defer v.mu.Unlock()
	nodes := make([]*node, 0, len(v.nodes))
	for _, n := range v.nodes {
		v.holdLocked(n)
		nodes = append(nodes, n)
	}
	return nodes
}

// checkpoint commits, then writes every committed block home and empties
// the log.
func (jn *volJournal) checkpoint() error {
	if err := jn.commit(); err != nil {
		return err
	}
	jn.commitMu.Lock()
	defer jn.commitMu.Unlock()
	if jn.err != nil {
		return jn.err
	}
	if err := jn.j.Checkpoint(); err != nil {
		jn.err = fmt.Errorf("%w: %w", ErrJournalAborted, err)
		return jn.err
	}
	jn.mu.Lock()
	clear(jn.logged)
	jn.mu.Unlock()
	return nil
}

// close stops the commit timer, checkpoints and closes the journal (the
// log is empty afterwards unless it failed) and removes the hook.
func (jn *volJournal) close() error {
	close(jn.stop)
	<-jn.done
	err := jn.checkpoint()
	if err == nil {
		err = jn.j.Close()
	}
	jn.v.meta.SetJournal(nil)
	jn.mu.Lock()
	// After an abort these blocks hold changes no commit covers: the
	// mappings close with them dirty and unwritten.
	for _, t := range append(jn.stuck, jn.running) {
		for _, ref := range t.blocks {
			ref.Unpin()
		}
	}
	jn.running, jn.stuck = newTxn(), nil
	jn.mu.Unlock()
	jn.dev.close()
	return err
}

// rawDevice is the jbd2.Device the journal writes through: straight to
// the device, one block at a time and waited for, through a private
// mapping of the volume whose pages serve as aligned buffers (the device
// may be open with O_DIRECT). Only the block written goes out
// (BlockRef.WriteTo), so the page's other blocks, which may be stale
// (home blocks the metadata mapping has written since), never reach the
// device from here. What it reads (the journal superblock) only it
// writes.
type rawDevice struct {
	m       *mpage.Mapping
	blkbits uint
	blocks  uint64
}

func newRawDevice(v *Volume) (*rawDevice, error) {
	sb := v.sb
	m, err := mpage.NewMapping(mpage.MappingConfig{
		Device: v.cfg.Device, Cache: v.cfg.Cache, Mapper: mpage.LinearMapper{Blocks: sb.BlocksCount},
		BlockSize: sb.BlockSize, Size: int64(sb.BlocksCount) << v.blkbits, Name: "ext journal",
	})
	if err != nil {
		return nil, fmt.Errorf("ext: journal: %w", err)
	}
	m.SetReadahead(0)
	return &rawDevice{m: m, blkbits: v.blkbits, blocks: sb.BlocksCount}, nil
}

func (d *rawDevice) close() { _ = d.m.Close() }

// ReadBlock implements jbd2.Device.
func (d *rawDevice) ReadBlock(blk uint64, b []byte) error {
	ref, err := d.m.ReadBlock(blk)
	if err != nil {
		return err
	}
	defer ref.Release()
	if err := ref.Lock(); err != nil {
		return err
	}
	copy(b, ref.Data())
	ref.Unlock()
	return nil
}

// WriteBlock implements jbd2.Device: b is written to blk and waited for.
// A page with other blocks is read first (ReadBlock), so it is uptodate;
// a page of one block is not read, and if it was not uptodate it stays
// so, and a later ReadBlock reads what was written from the device.
func (d *rawDevice) WriteBlock(blk uint64, b []byte) error {
	if blk >= d.blocks {
		return fmt.Errorf("%w: write of block %d past the end of the volume (%d blocks)", ErrCorrupt, blk, d.blocks)
	}
	var ref mpage.BlockRef
	var err error
	if d.blkbits == mpage.PageShift {
		ref, err = d.m.GetBlock(blk)
	} else {
		ref, err = d.m.ReadBlock(blk)
	}
	if err != nil {
		return err
	}
	defer ref.Release()
	if err := ref.Lock(); err != nil {
		return err
	}
	defer ref.Unlock()
	copy(ref.Data(), b)
	return ref.WriteTo(blk)
}

// Flush implements jbd2.Device.
func (d *rawDevice) Flush() error { return d.m.Device().Flush() }

// Blocks implements jbd2.Device.
func (d *rawDevice) Blocks() uint64 { return d.blocks }

// BlockSize implements jbd2.Device.
func (d *rawDevice) BlockSize() int { return 1 << d.blkbits }
