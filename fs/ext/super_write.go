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
// between. The state's "cleanly unmounted" bit is cleared, and written
// through to the device, before the first change of a session, and set
// again by Close once everything else is on the device: a volume left
// behind by a crash says it needs e2fsck.

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

// flushSuper puts the current free counts (and, with clean, the "cleanly
// unmounted" state) into the superblock, through the metadata mapping.
func (v *Volume) flushSuper(clean bool) error {
	v.sbMu.Lock()
	defer v.sbMu.Unlock()
	if !v.inUse && !clean {
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
		le.PutUint32(r[0x30:], wtime)
		if v.needLargeFile.Load() {
			le.PutUint32(r[0x64:], le.Uint32(r[0x64:])|uint32(ROCompatLargeFile))
		}
		if clean {
			le.PutUint16(r[0x3A:], le.Uint16(r[0x3A:])|stateValid)
		}
	})
}

// markInUse clears the superblock's "cleanly unmounted" state on the
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
	le := binary.LittleEndian
	err := v.updateSuper(func(r []byte) {
		le.PutUint16(r[0x3A:], le.Uint16(r[0x3A:])&^stateValid)
		mt, _ := encodeTime(now())
		le.PutUint32(r[0x2C:], mt) // s_mtime: when it was last "mounted"
	})
	if err == nil {
		blk, _ := v.superPos()
		v.writeMetaBlockIfDirty(blk)
		idx, _ := v.metaPos(blk)
		v.meta.WaitWriteback(int64(idx)<<12, int64(idx)<<12+4095)
		err = v.meta.Err()
	}
	if err != nil {
		v.logf("ext: marking the volume in use: %v", err)
	}
}
