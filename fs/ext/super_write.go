package ext

import (
	"encoding/binary"
	"fmt"
)

// The superblock on a volume open for writing.
//
// Its free counts live in v.freeBlocks and v.freeInodes (under allocMu)
// and reach the superblock at sync points, as the kernel's ext2 does: the
// group descriptors, written with every allocation, are the authority in
// between.
//
// The state: before the first change of a session the superblock is
// marked as a read-write mount marks it (the "cleanly unmounted" bit
// cleared, s_mnt_count up by one, s_mtime and s_wtime now) and written
// through to the device; Close, once everything else is on the device,
// puts s_state back as Open found it, as the kernel's unmount does. A
// volume left behind by a crash thus says it needs e2fsck, and one that
// was unclean at open (opened with AllowUnclean) still says so after a
// clean Close, so e2fsck -n without -f still checks it.
//
// Marking at the first change rather than at open: a session that changes
// nothing (a daemon that only served reads, a put refused before its
// first write) leaves the device byte for byte as it was, and its crash
// needs no e2fsck, since nothing can be half-written. Every change calls
// markInUse before it touches anything (createFile, Mkdir, remove,
// Rename, writeAt, truncate), so nothing reaches the device unmarked.

// superPos is the device block holding the primary superblock and its
// offset in that block.
func (v *Volume) superPos() (uint64, int) {
	return superblockOffset >> v.blkbits, superblockOffset & (v.sb.BlockSize - 1)
}

// updateSuper edits the superblock's bytes through the metadata mapping
// and recomputes its checksum. The caller holds sbMu.
func (v *Volume) updateSuper(fn func(r []byte)) error {
	blk, off := v.superPos()
	err := v.updateMeta(blk, func(b []byte) error {
		r := b[off : off+superblockSize]
		fn(r)
		if v.sb.MetadataCsum() {
			binary.LittleEndian.PutUint32(r[sbChecksumOff:], superblockCsum(r))
		}
		copy(v.sb.Raw[:], r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ext: superblock: %w", err)
	}
	return nil
}

// flushSuper puts the current free counts (and, with closing, the state
// found at open) into the superblock, through the metadata mapping.
func (v *Volume) flushSuper(closing bool) error {
	v.sbMu.Lock()
	defer v.sbMu.Unlock()
	if !v.inUse && !closing {
		return nil
	}
	v.allocMu.Lock()
	freeBlocks, freeInodes := v.freeBlocks, v.freeInodes
	v.allocMu.Unlock()
	le := binary.LittleEndian
	wtime, _ := encodeTime(now())
	return v.updateSuper(func(r []byte) {
		le.PutUint32(r[0xC:], uint32(freeBlocks))
		if v.sb.HasIncompat(Incompat64Bit) {
			le.PutUint32(r[0x158:], uint32(freeBlocks>>32))
		}
		le.PutUint32(r[0x10:], freeInodes)
		le.PutUint32(r[sbWtimeOff:], wtime)
		if v.needLargeFile.Load() {
			le.PutUint32(r[0x64:], le.Uint32(r[0x64:])|uint32(ROCompatLargeFile))
		}
		if closing {
			le.PutUint16(r[sbStateOff:], v.openState)
		}
	})
}

// markInUse marks the superblock as mounted read-write (see above) on the
// device before the session's first change. Called at the start of every
// change; cheap once done. Errors are logged: the change itself may still
// succeed, and Sync reports the metadata write.
func (v *Volume) markInUse() {
	v.sbMu.Lock()
	defer v.sbMu.Unlock()
	if v.inUse {
		return
	}
	v.inUse = true
	if v.jnl != nil {
		if err := v.markInUseJournaled(); err != nil {
			// Nothing may commit while the device does not say
			// needs_recovery: the journal refuses from now on.
			v.jnl.abort(err)
			v.logf("ext: marking the volume in use: %v", err)
		}
		return
	}
	le := binary.LittleEndian
	err := v.updateSuper(func(r []byte) {
		le.PutUint16(r[sbStateOff:], le.Uint16(r[sbStateOff:])&^stateValid)
		le.PutUint16(r[sbMntCountOff:], le.Uint16(r[sbMntCountOff:])+1)
		t, _ := encodeTime(now())
		le.PutUint32(r[sbMtimeOff:], t) // when it was last "mounted"
		le.PutUint32(r[sbWtimeOff:], t)
	})
	if err == nil {
		blk, _ := v.superPos()
		err = v.meta.SyncBlock(blk)
	}
	if err == nil {
		// Flushed before any change is written: a power cut must not
		// keep a change and lose the mark, or e2fsck -p would skip the
		// volume as clean.
		err = v.cfg.Device.Flush()
	}
	if err != nil {
		v.logf("ext: marking the volume in use: %v", err)
	}
}
