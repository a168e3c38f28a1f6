package ext

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"
)

// Inode fields the writer sets, beyond those parseInode names.
const (
	iSizeHighOff  = 0x6C
	iBlocksHiOff  = 0x74
	iFileACLHiOff = 0x76
	iUIDHighOff   = 0x78
	iGIDHighOff   = 0x7A
	newExtraIsize = 32 // sizeof(struct ext4_inode) - 128: every extra field
	ext2LinkMax   = 32000
	ext4LinkMax   = 65000
	maxRev0Size   = 1<<31 - 1 // without large_file (or in rev 0) sizes stay below 2 GiB
	maxBlocksLo32 = 1<<32 - 1
	maxBlocksHuge = 1<<48 - 1
)

// encodeTime splits t into the 32-bit seconds field and its extra word
// (two epoch bits, then nanoseconds), the inverse of decodeTime.
func encodeTime(t time.Time) (sec, extra uint32) {
	s := t.Unix()
	sec = uint32(int32(s))
	epoch := uint32((s-int64(int32(s)))>>32) & 3
	return sec, epoch | uint32(t.Nanosecond())<<2
}

// encodeInode returns in's on-disk bytes: its Raw bytes (which keep every
// field this package does not decode, in-inode xattrs included) with the
// decoded fields written back and, with metadata_csum, a fresh checksum.
func (v *Volume) encodeInode(in *Inode) ([]byte, error) {
	sb := v.sb
	le := binary.LittleEndian
	r := append([]byte(nil), in.Raw...)
	if len(r) != int(sb.InodeSize) {
		return nil, fmt.Errorf("ext: inode %d: %d raw bytes, want %d", in.Ino, len(r), sb.InodeSize)
	}
	le.PutUint16(r[0x0:], in.Mode)
	le.PutUint16(r[0x2:], uint16(in.UID))
	le.PutUint16(r[iUIDHighOff:], uint16(in.UID>>16))
	le.PutUint16(r[0x18:], uint16(in.GID))
	le.PutUint16(r[iGIDHighOff:], uint16(in.GID>>16))
	le.PutUint32(r[0x4:], uint32(in.Size))
	switch {
	case in.Mode&modeTypeMask == modeRegular || sb.HasIncompat(IncompatLargeDir):
		le.PutUint32(r[iSizeHighOff:], uint32(in.Size>>32))
	case in.Size>>32 != 0:
		return nil, fmt.Errorf("%w: inode %d: size %d", ErrTooLarge, in.Ino, in.Size)
	}
	le.PutUint32(r[0x14:], in.Dtime)
	le.PutUint16(r[0x1A:], in.Links)
	le.PutUint32(r[0x64:], in.Generation)
	le.PutUint32(r[0x68:], uint32(in.FileACL))
	if sb.HasIncompat(Incompat64Bit) {
		le.PutUint16(r[iFileACLHiOff:], uint16(in.FileACL>>32))
	}
	copy(r[iBlockOff:iBlockOff+iBlockLen], in.Block[:])

	// i_blocks: 512-byte sectors in 32 bits, or 48 with huge_file. The
	// writer never sets HUGE_FILE_FL (fs-block units), so it clears it.
	flags := in.Flags &^ FlagHugeFile
	switch {
	case in.Blocks <= maxBlocksLo32:
		le.PutUint32(r[0x1C:], uint32(in.Blocks))
		if sb.HasROCompat(ROCompatHugeFile) {
			le.PutUint16(r[iBlocksHiOff:], 0)
		}
	case sb.HasROCompat(ROCompatHugeFile) && in.Blocks <= maxBlocksHuge:
		le.PutUint32(r[0x1C:], uint32(in.Blocks))
		le.PutUint16(r[iBlocksHiOff:], uint16(in.Blocks>>32))
	default:
		return nil, fmt.Errorf("%w: inode %d: %d sectors", ErrTooLarge, in.Ino, in.Blocks)
	}
	le.PutUint32(r[0x20:], flags)

	put := func(lo int, extra int, t time.Time) {
		sec, ex := encodeTime(t)
		le.PutUint32(r[lo:], sec)
		if extra > 0 && len(r) > goodOldInodeSize && in.fits(extra, 4) {
			le.PutUint32(r[extra:], ex)
		}
	}
	put(0x8, 0x8C, in.Atime)
	put(0xC, 0x84, in.Ctime)
	put(0x10, 0x88, in.Mtime)
	if len(r) > goodOldInodeSize && in.fits(0x90, 4) && !in.Crtime.IsZero() {
		put(0x90, 0x94, in.Crtime)
	}
	if sb.MetadataCsum() {
		hasHi := len(r) > goodOldInodeSize && in.fits(iChecksumHiOff, 2)
		c := inodeCsum(r, inodeCsumSeed(sb, in.Ino, in.Generation), hasHi)
		le.PutUint16(r[iChecksumLoOff:], uint16(c))
		if hasHi {
			le.PutUint16(r[iChecksumHiOff:], uint16(c>>16))
		}
	}
	return r, nil
}

// inodeLocation returns the device block holding inode ino and the byte
// offset of the inode in it.
func (v *Volume) inodeLocation(ino uint32) (uint64, int) {
	sb := v.sb
	g := (ino - 1) / sb.InodesPerGroup
	idx := (ino - 1) % sb.InodesPerGroup
	off := uint64(idx) * uint64(sb.InodeSize)
	d := v.groups.get(g)
	return d.InodeTable + off>>v.blkbits, int(off & (uint64(sb.BlockSize) - 1))
}

// writeInode encodes in and puts it in its inode table block through the
// metadata mapping, returning the bytes written (in's new Raw). An inode on
// the orphan list gets its successor in i_dtime (orphan.go), written
// under the list's lock so a predecessor's rewrite cannot interleave.
func (v *Volume) writeInode(in *Inode) ([]byte, error) {
	v.orphans.mu.Lock()
	if next, ok := v.orphans.nextLocked(in.Ino); ok {
		defer v.orphans.mu.Unlock()
		in.Dtime = next
		return v.writeInodeRaw(in)
	}
	v.orphans.mu.Unlock()
	return v.writeInodeRaw(in)
}

// writeInodeRaw is writeInode without the orphan list.
func (v *Volume) writeInodeRaw(in *Inode) ([]byte, error) {
	raw, err := v.encodeInode(in)
	if err != nil {
		return nil, err
	}
	blk, off := v.inodeLocation(in.Ino)
	err = v.updateMeta(blk, func(b []byte) error {
		copy(b[off:off+len(raw)], raw)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ext: inode %d: %w", in.Ino, err)
	}
	return raw, nil
}

// newInode builds the in-memory inode of a new file: type and permission
// bits from mode, one link (two for a directory, counting its "."), all
// times now, no blocks. Its Raw bytes are zero but for i_extra_isize.
func (v *Volume) newInode(ino uint32, mode uint16, now time.Time) *Inode {
	sb := v.sb
	in := &Inode{Ino: ino, Mode: mode, Links: 1, Atime: now, Ctime: now, Mtime: now,
		Generation: rand.Uint32(), Raw: make([]byte, sb.InodeSize)}
	if mode&modeTypeMask == modeDir {
		in.Links = 2
	}
	if sb.InodeSize > goodOldInodeSize {
		extra := uint16(newExtraIsize)
		if int(extra) > int(sb.InodeSize)-goodOldInodeSize {
			extra = uint16(int(sb.InodeSize) - goodOldInodeSize)
		}
		if sb.WantExtraIsize > extra && int(sb.WantExtraIsize) <= int(sb.InodeSize)-goodOldInodeSize {
			extra = sb.WantExtraIsize
		}
		in.ExtraIsize = extra
		binary.LittleEndian.PutUint16(in.Raw[iExtraIsizeOff:], extra)
		in.Crtime = now
	}
	return in
}

// commitLocked publishes a new version of n's inode: a copy of the
// current one with the mapper's i_block and i_blocks, changed by mod (nil
// for none), written through the metadata mapping. The caller holds
// n.wmu.
func (n *node) commitLocked(mod func(in *Inode)) error {
	cur := n.inode()
	in := *cur
	// The engine's mark first, then ours: an allocation marking both
	// from here on is either in the snapshot below or committed again.
	n.m.ClearInodeDirty()
	n.inodeDirty.Store(false)
	if n.wmap != nil {
		// For inodes the writer maps, the mapping's size is i_size (it
		// grows as data enters the cache).
		in.Block, in.Blocks = n.wmap.snapshot()
		in.Size = uint64(n.m.Size())
	}
	if mod != nil {
		mod(&in)
	}
	v := n.v
	if in.Size > maxRev0Size && in.Mode&modeTypeMask == modeRegular && !v.sb.HasROCompat(ROCompatLargeFile) {
		// The next superblock write records that files may now be
		// past 2 GiB.
		v.needLargeFile.Store(true)
	}
	raw, err := v.writeInode(&in)
	if err != nil {
		n.markInodeDirty()
		return err
	}
	in.Raw = raw
	n.cur.Store(&in)
	return nil
}

// linkMax is the most links the volume lets a directory have.
func (v *Volume) linkMax() uint16 {
	if v.sb.HasROCompat(ROCompatDirNlink) {
		return ext4LinkMax
	}
	return ext2LinkMax
}
