package jbd2

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Block is one metadata block of a transaction: its home block number on
// the volume and its new bytes (one block).
type Block struct {
	Home uint64
	Data []byte
}

// Transaction is what Commit writes as one jbd2 transaction: blocks to
// journal and blocks to revoke (freed metadata whose earlier journaled
// copies must not be replayed over what the block holds next). A block may
// not be both.
type Transaction struct {
	Blocks  []Block
	Revoked []uint64
}

// Journal writes transactions into a jbd2 log and checkpoints them: the
// commit side of the journal, which the file system's metadata layer
// calls. It keeps the latest committed copy of every block not yet
// checkpointed, so Checkpoint can write them home. Safe for concurrent
// use; one Commit or Checkpoint runs at a time.
type Journal struct {
	mu  sync.Mutex
	io  *logIO
	sb  *Superblock
	l   Layout
	buf []byte

	// head is the log block the next transaction starts at; used the
	// blocks from the log's start (the superblock's s_start) to head.
	// used == 0: the log is empty and the superblock says s_start 0.
	head uint32
	used uint64
	// seq is the next transaction's ID.
	seq uint32
	// pending is the newest committed bytes of each block not yet written
	// home.
	pending map[uint64][]byte
	closed  bool
	// aborted is the failure that stopped the journal (see ErrAborted).
	aborted error
	now     func() time.Time
	// sumV1 is the checksum v1 of the transaction being written.
	sumV1 uint32
}

// Open loads the journal superblock for writing. The log must be empty
// (Recover first: ErrNeedsRecovery otherwise). The first transaction goes
// at the log's first block, with the ID after s_sequence (jbd2 skips one
// so that no commit block left in the log can match it).
func Open(dev Device, log Log) (*Journal, error) {
	io := newLogIO(dev, log)
	sb, err := loadSuperblock(io)
	if err != nil {
		return nil, err
	}
	if sb.Start != 0 {
		return nil, fmt.Errorf("%w: log starts at block %d, transaction %d", ErrNeedsRecovery, sb.Start, sb.Sequence)
	}
	if sb.MaxLen-sb.First < 4 {
		return nil, fmt.Errorf("%w: a log of %d blocks", ErrCorrupt, sb.MaxLen-sb.First)
	}
	j := &Journal{io: io, sb: sb, l: LayoutOf(sb), buf: make([]byte, io.bs), head: sb.First,
		seq: sb.Sequence + 1, pending: make(map[uint64][]byte), now: time.Now}
	return j, nil
}

// Superblock returns a copy of the journal superblock as last written.
func (j *Journal) Superblock() Superblock {
	j.mu.Lock()
	defer j.mu.Unlock()
	return *j.sb
}

// Sequence is the ID the next transaction gets.
func (j *Journal) Sequence() uint32 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq
}

// Head is the log block the next transaction starts at.
func (j *Journal) Head() uint32 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.head
}

// Free is how many log blocks the next transaction can take without a
// checkpoint.
func (j *Journal) Free() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.free()
}

// capacity is the log's size less one block, so a full log never has its
// head on its tail.
func (j *Journal) capacity() uint64 { return uint64(j.sb.MaxLen-j.sb.First) - 1 }

func (j *Journal) free() uint64 { return j.capacity() - j.used }

// BlocksFor is how many log blocks a transaction of nblocks journaled
// blocks and nrevoked revoke records takes.
func (j *Journal) BlocksFor(nblocks, nrevoked int) uint64 {
	n := uint64(ceilDiv(nrevoked, j.l.recordsPerRevoke()))
	n += uint64(ceilDiv(nblocks, j.l.tagsPerDescriptor())) + uint64(nblocks)
	return n + 1
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// wrap folds a position past the journal's end back to the log's start.
func (j *Journal) wrap(pos uint64) uint32 {
	first, last := uint64(j.sb.First), uint64(j.sb.MaxLen)
	if pos >= last {
		pos = first + (pos-first)%(last-first)
	}
	return uint32(pos)
}

// Commit writes tx as one transaction at the head of the log and returns
// its ID. When it returns nil the transaction is durable: recovery will
// replay it. The order: callers have flushed the data the metadata points
// at; a full log is checkpointed first; an empty log gets its start
// recorded in the superblock (and flushed) before anything can depend on
// it; then the revoke blocks, descriptors and block copies are written and
// flushed, and only then the commit block, flushed again. With
// async_commit the commit block goes out with the rest and one flush
// covers all: its checksum, not the order, tells recovery whether the
// transaction arrived whole.
//
// A failure once writing has begun aborts the journal (ErrAborted from
// then on): a commit block may or may not have reached the device, and
// writing the next transaction over a half-written one could let a stale
// commit block seal blocks never committed. Recovery sorts it out.
func (j *Journal) Commit(tx *Transaction) (uint32, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return 0, err
	}
	if err := j.check(tx); err != nil {
		return 0, err
	}
	if need := j.BlocksFor(len(tx.Blocks), len(tx.Revoked)); need > j.capacity() {
		return 0, fmt.Errorf("%w: %d log blocks needed, the log has %d", ErrTooBig, need, j.capacity())
	}
	tid, err := j.commit(tx)
	if err != nil {
		j.aborted = err
	}
	return tid, err
}

// usable refuses work on a closed or aborted journal.
func (j *Journal) usable() error {
	switch {
	case j.closed:
		return ErrClosed
	case j.aborted != nil:
		return fmt.Errorf("%w: %w", ErrAborted, j.aborted)
	}
	return nil
}

// commit is Commit of a checked transaction that fits the log.
func (j *Journal) commit(tx *Transaction) (uint32, error) {
	need := j.BlocksFor(len(tx.Blocks), len(tx.Revoked))
	if need > j.free() {
		if err := j.checkpoint(); err != nil {
			return 0, err
		}
	}
	if j.used == 0 {
		if err := j.startLog(); err != nil {
			return 0, err
		}
	}
	tid := j.seq
	pos, err := j.writeBody(tx, tid)
	if err != nil {
		return 0, err
	}
	if !j.l.AsyncCommit {
		if err := j.io.dev.Flush(); err != nil {
			return 0, fmt.Errorf("jbd2: commit %d: flush before the commit block: %w", tid, err)
		}
	}
	clear(j.buf)
	t := j.now()
	j.l.fillCommit(j.buf, tid, uint64(t.Unix()), uint32(t.Nanosecond()), j.sumV1)
	if err := j.io.write(pos, j.buf); err != nil {
		return 0, err
	}
	if err := j.io.dev.Flush(); err != nil {
		return 0, fmt.Errorf("jbd2: commit %d: flush the commit block: %w", tid, err)
	}
	j.used += need
	j.head = j.wrap(uint64(pos) + 1)
	j.seq++
	j.remember(tx)
	return tid, nil
}

// check refuses malformed transactions.
func (j *Journal) check(tx *Transaction) error {
	seen := make(map[uint64]bool, len(tx.Blocks))
	for _, b := range tx.Blocks {
		switch {
		case len(b.Data) != j.io.bs:
			return fmt.Errorf("%w: block %d has %d bytes, want %d", ErrTransaction, b.Home, len(b.Data), j.io.bs)
		case b.Home >= j.io.dev.Blocks():
			return fmt.Errorf("%w: block %d outside the volume's %d blocks", ErrTransaction, b.Home, j.io.dev.Blocks())
		case seen[b.Home]:
			return fmt.Errorf("%w: block %d twice", ErrTransaction, b.Home)
		case !j.l.Is64Bit && b.Home > 0xFFFFFFFF:
			return fmt.Errorf("%w: block %d needs the 64bit journal feature", ErrTransaction, b.Home)
		}
		seen[b.Home] = true
	}
	for _, r := range tx.Revoked {
		switch {
		case seen[r]:
			return fmt.Errorf("%w: block %d both written and revoked", ErrTransaction, r)
		case r >= j.io.dev.Blocks():
			return fmt.Errorf("%w: revoke of block %d outside the volume's %d blocks", ErrTransaction, r, j.io.dev.Blocks())
		case !j.l.Is64Bit && r > 0xFFFFFFFF:
			return fmt.Errorf("%w: revoke of block %d needs the 64bit journal feature", ErrTransaction, r)
		}
	}
	if len(tx.Revoked) > 0 && !j.sb.HasIncompat(IncompatRevoke) {
		return fmt.Errorf("%w: revoke records in a journal without the revoke feature", ErrTransaction)
	}
	return nil
}

// startLog records in the superblock that the log now starts at the head
// with the next transaction, and makes that durable before the first
// block of the transaction can be acknowledged.
func (j *Journal) startLog() error {
	j.sb.Start, j.sb.Sequence = j.head, j.seq
	if err := writeSuperblock(j.io, j.sb); err != nil {
		return err
	}
	if err := j.io.dev.Flush(); err != nil {
		return fmt.Errorf("jbd2: flush journal superblock: %w", err)
	}
	return nil
}

// writeBody writes tx's revoke blocks, then its descriptors each followed
// by the copies it tags, from the head; it returns the position of the
// commit block. j.sumV1 is the checksum v1 of the descriptors and copies.
func (j *Journal) writeBody(tx *Transaction, tid uint32) (uint32, error) {
	pos := j.head
	j.sumV1 = ^uint32(0)
	per := j.l.recordsPerRevoke()
	for i := 0; i < len(tx.Revoked); i += per {
		clear(j.buf)
		j.l.fillRevoke(j.buf, tid, tx.Revoked[i:min(i+per, len(tx.Revoked))])
		if err := j.io.write(pos, j.buf); err != nil {
			return 0, err
		}
		pos = j.wrap(uint64(pos) + 1)
	}
	per = j.l.tagsPerDescriptor()
	for i := 0; i < len(tx.Blocks); i += per {
		var err error
		if pos, err = j.writeDescriptor(tx.Blocks[i:min(i+per, len(tx.Blocks))], tid, pos); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

// writeDescriptor writes one descriptor block for blocks at pos and the
// copies after it, escaping copies that start with the magic; it returns
// the position after the last copy.
func (j *Journal) writeDescriptor(blocks []Block, tid uint32, pos uint32) (uint32, error) {
	desc := make([]byte, j.io.bs)
	putHeader(desc, BlockDescriptor, tid)
	copies := make([][]byte, len(blocks))
	off := headerLen
	for i, b := range blocks {
		data := b.Data
		var flags TagFlags
		if binary.BigEndian.Uint32(data) == Magic {
			data = slices.Clone(data)
			clear(data[:4])
			flags |= TagEscape
		}
		copies[i] = data
		if i > 0 {
			flags |= TagSameUUID
		}
		if i == len(blocks)-1 {
			flags |= TagLastTag
		}
		t := Tag{Block: b.Home, Flags: flags}
		if j.l.CsumV2or3 {
			t.Checksum = j.l.TagChecksum(tid, data)
		}
		j.l.putTag(desc[off:], t)
		off += j.l.TagBytes
		if i == 0 {
			copy(desc[off:], j.sb.UUID[:])
			off += 16
		}
	}
	j.l.setTail(desc)
	if err := j.io.write(pos, desc); err != nil {
		return 0, err
	}
	if j.l.CsumV1 {
		j.sumV1 = crc32BE(j.sumV1, desc)
	}
	for _, c := range copies {
		pos = j.wrap(uint64(pos) + 1)
		if err := j.io.write(pos, c); err != nil {
			return 0, err
		}
		if j.l.CsumV1 {
			j.sumV1 = crc32BE(j.sumV1, c)
		}
	}
	return j.wrap(uint64(pos) + 1), nil
}

// remember keeps the committed bytes for the checkpoint; a revoked block
// is dropped (it is free now: writing its old bytes home could land on
// what it holds next).
func (j *Journal) remember(tx *Transaction) {
	for _, r := range tx.Revoked {
		delete(j.pending, r)
	}
	for _, b := range tx.Blocks {
		j.pending[b.Home] = slices.Clone(b.Data)
	}
}

// Checkpoint writes every committed block home, flushes, and then marks
// the log empty in the journal superblock (s_start 0, s_sequence the next
// transaction), flushed too: only once the home blocks are durable may the
// log stop protecting them.
func (j *Journal) Checkpoint() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	if err := j.checkpoint(); err != nil {
		j.aborted = err
		return err
	}
	return nil
}

func (j *Journal) checkpoint() error {
	if j.used == 0 {
		return nil
	}
	homes := make([]uint64, 0, len(j.pending))
	for h := range j.pending {
		homes = append(homes, h)
	}
	slices.Sort(homes)
	for _, h := range homes {
		if err := j.io.dev.WriteBlock(h, j.pending[h]); err != nil {
			return fmt.Errorf("jbd2: checkpoint block %d: %w", h, err)
		}
	}
	if err := j.io.dev.Flush(); err != nil {
		return fmt.Errorf("jbd2: checkpoint: flush home blocks: %w", err)
	}
	j.sb.Start, j.sb.Sequence = 0, j.seq
	if err := writeSuperblock(j.io, j.sb); err != nil {
		return err
	}
	if err := j.io.dev.Flush(); err != nil {
		return fmt.Errorf("jbd2: checkpoint: flush journal superblock: %w", err)
	}
	j.used = 0
	clear(j.pending)
	return nil
}

// Close checkpoints what is left and leaves the log empty. An aborted
// journal is closed without touching the device: its log is for recovery.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		j.closed = true
		return err
	}
	j.closed = true
	return j.checkpoint()
}

// EnableRevoke sets the revoke feature in the journal superblock (durably)
// if it is not set, as jbd2 does when its file system mounts: a log
// without it must not hold revoke blocks, and a file system that frees
// journaled metadata needs them. Only the journal's own superblock
// changes; v1 superblocks have no feature words and are refused.
func (j *Journal) EnableRevoke() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usable(); err != nil {
		return err
	}
	if j.sb.HasIncompat(IncompatRevoke) {
		return nil
	}
	if j.sb.Version != 2 {
		return fmt.Errorf("%w: a v1 journal superblock has no revoke feature", ErrUnsupported)
	}
	j.sb.Incompat |= IncompatRevoke
	if err := writeSuperblock(j.io, j.sb); err != nil {
		return err
	}
	if err := j.io.dev.Flush(); err != nil {
		return fmt.Errorf("jbd2: flush journal superblock: %w", err)
	}
	// The layout (tags, checksums) does not depend on the revoke
	// feature: j.l stays, and BlocksFor reads it without the lock.
	return nil
}
