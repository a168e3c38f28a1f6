package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/mpaged/mpaged/mpage"
)

// The volume's side of journaled writing: the superblock's state, Sync,
// Close and directory blocks (see jtxn.go for the transaction).
//
// State: a journaled volume is marked as the kernel's ext4 marks it, not
// as an ext2 one: s_state keeps "cleanly unmounted" (the journal, not
// e2fsck, answers for an interrupted writer) and needs_recovery is set
// and made durable, straight to the device, before the session's first
// change, so before any commit that home locations depend on. Close
// commits and checkpoints everything (the log is empty), closes the
// journal, and only then clears needs_recovery, durably: the kernel and
// e2fsck then see a normal clean ext4.

// markInUseJournaled is markInUse on a journaled volume. The caller holds
// sbMu and is the session's first change, inside its handle: no block of
// the running transaction has changed yet, so the superblock block's
// cached bytes are the device's plus this change.
func (v *Volume) markInUseJournaled() error {
	// Freed metadata needs revoke records (jbd2 sets the feature when its
	// file system mounts; here, at the first change).
	if err := v.jnl.j.EnableRevoke(); err != nil {
		return fmt.Errorf("ext: journal: %w", err)
	}
	le := binary.LittleEndian
	err := v.updateSuper(func(r []byte) {
		le.PutUint32(r[0x60:], le.Uint32(r[0x60:])|uint32(IncompatRecover))
		le.PutUint16(r[sbMntCountOff:], le.Uint16(r[sbMntCountOff:])+1)
		t, _ := encodeTime(now())
		le.PutUint32(r[sbMtimeOff:], t)
		le.PutUint32(r[sbWtimeOff:], t)
	})
	if err != nil {
		return err
	}
	return v.writeSuperThrough()
}

// writeSuperThrough writes the superblock's block, as cached, straight to
// the device and flushes.
func (v *Volume) writeSuperThrough() error {
	blk, _ := v.superPos()
	r, err := v.meta.ReadBlock(blk)
	if err != nil {
		return fmt.Errorf("ext: superblock: %w", err)
	}
	defer r.Release()
	if err := r.Lock(); err != nil {
		return fmt.Errorf("ext: superblock: %w", err)
	}
	b := slices.Clone(r.Data())
	r.Unlock()
	if err := v.jnl.dev.WriteBlock(blk, b); err != nil {
		return fmt.Errorf("ext: superblock: %w", err)
	}
	if err := v.jnl.dev.Flush(); err != nil {
		return fmt.Errorf("ext: superblock: %w", err)
	}
	return nil
}

// syncJournaled is Sync on a journaled volume: inodes that writeback
// allocation changed are committed into the metadata, and the running
// transaction is committed (ordered data first). With checkpoint, the log
// is then emptied too.
func (v *Volume) syncJournaled(checkpoint bool) error {
	err := v.commitDirtyInodes()
	var cerr error
	if checkpoint {
		cerr = v.jnl.checkpoint()
	} else {
		cerr = v.jnl.commit()
	}
	return errors.Join(err, cerr)
}

// commitDirtyInodes commits, each in a handle of its own, the inodes of
// cached nodes whose mapping writeback changed since.
func (v *Volume) commitDirtyInodes() error {
	var errs []error
	for _, n := range v.holdNodes() {
		if n.inodeDirty.Load() {
			stop := v.startHandle()
			n.wmu.Lock()
			if n.inodeDirty.Load() {
				if err := n.commitLocked(nil); err != nil {
					errs = append(errs, err)
				}
			}
			n.wmu.Unlock()
			stop()
		}
		v.putNode(n)
	}
	return errors.Join(errs...)
}

// closeJournaled is Close's write-back on a journaled volume: the orphans
// freed, the superblock's counts and state in a last transaction, all of
// it committed and checkpointed, the journal closed (an empty log), and
// needs_recovery cleared. If any of it fails the flag stays set: the next
// open replays what the log holds. The caller holds life exclusively.
func (v *Volume) closeJournaled() error {
	var errs []error
	if v.inUse {
		stop := v.startHandle()
		errs = append(errs, v.freeOrphans())
		stop()
		errs = append(errs, v.commitDirtyInodes())
		stop = v.startHandle()
		errs = append(errs, v.flushSuper(true))
		stop()
	}
	err := v.jnl.close()
	errs = append(errs, err)
	if err == nil {
		// Everything is home (checkpointed); the caches still hold it
		// dirty, unpinned now: write it so the mappings close clean.
		for _, n := range v.holdNodes() {
			if err := n.m.WriteAndWait(0, -1); err != nil {
				errs = append(errs, fmt.Errorf("ext: inode %d: %w", n.ino, err))
			}
			v.putNode(n)
		}
	}
	if err == nil && v.inUse {
		errs = append(errs, v.clearRecoverFlag())
	}
	v.jnl = nil
	return errors.Join(errs...)
}

// clearRecoverFlag clears needs_recovery once the log is empty and the
// journal closed (its hook removed: this change is not journaled), and
// writes the superblock and every dirty metadata block home.
func (v *Volume) clearRecoverFlag() error {
	le := binary.LittleEndian
	v.sbMu.Lock()
	err := v.updateSuper(func(r []byte) {
		le.PutUint32(r[0x60:], le.Uint32(r[0x60:])&^uint32(IncompatRecover))
	})
	v.sbMu.Unlock()
	if err != nil {
		return err
	}
	return v.metaHome()
}

// writeDirBlockJournaled writes block blk of directory dir (b, sealed)
// as journaled metadata: the block is allocated and the directory grown
// first if it is new, then its bytes change in the directory's page under
// the block's lock, where it joins the running transaction (pinned) before
// it is marked dirty, so writeback never sees it dirty and unpinned. The
// caller holds dir.wmu, inside a handle.
func (v *Volume) writeDirBlockJournaled(dir *node, b []byte, blk int64) error {
	bs := int64(len(b))
	if end := (blk + 1) * bs; end > dir.m.Size() {
		mapped, fresh, err := dir.allocate(uint64(blk), uint64(blk))
		if len(fresh) > 0 {
			dir.markInodeDirty()
		}
		if err != nil || mapped == 0 {
			return fmt.Errorf("ext: directory inode %d block %d: %w", dir.ino, blk, err)
		}
		dir.m.SetSize(end)
	}
	bm := mpage.BlockMap{Block: uint64(blk), Len: 1}
	if err := dir.wmap.MapBlocks(&bm); err != nil {
		return fmt.Errorf("ext: directory inode %d block %d: %w", dir.ino, blk, err)
	}
	if bm.Flags&mpage.Mapped == 0 {
		return fmt.Errorf("%w: directory inode %d block %d: a hole", ErrCorrupt, dir.ino, blk)
	}
	ref, err := dir.m.ReadBlock(uint64(blk))
	if err != nil {
		return fmt.Errorf("ext: directory inode %d block %d: %w", dir.ino, blk, err)
	}
	defer ref.Release()
	if err := ref.Lock(); err != nil {
		return fmt.Errorf("ext: directory inode %d block %d: %w", dir.ino, blk, err)
	}
	copy(ref.Data(), b)
	v.jnl.join(bm.PBlock, ref)
	ref.MarkDirty()
	ref.Unlock()
	t := now()
	return dir.commitLocked(func(in *Inode) { in.Mtime, in.Ctime = t, t })
}
