package ext

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Group descriptor flags (bg_flags), trusted only with uninit_bg or
// metadata_csum.
const (
	bgInodeUninit = 0x1 // inode table and bitmap not initialised
	bgBlockUninit = 0x2 // block bitmap not initialised
	bgInodeZeroed = 0x4 // inode table zeroed

	gdChecksumOff = 0x1E
)

// GroupDesc is one decoded block group descriptor. Fields that have a high
// half in 64-byte descriptors are combined.
type GroupDesc struct {
	BlockBitmap     uint64
	InodeBitmap     uint64
	InodeTable      uint64
	FreeBlocks      uint32
	FreeInodes      uint32
	UsedDirs        uint32
	ItableUnused    uint32
	Flags           uint16
	ExcludeBitmap   uint64
	BlockBitmapCsum uint32
	InodeBitmapCsum uint32
	Checksum        uint16
}

// groupDescCsum is the descriptor checksum of group g: with metadata_csum
// the low 16 bits of crc32c(seed, group, descriptor without its checksum
// field); with uninit_bg crc16 over the UUID, group and descriptor.
func groupDescCsum(b []byte, g uint32, sb *Superblock) uint16 {
	size := sb.GroupDescSize
	if sb.MetadataCsum() {
		c := crc32cU32(sb.seed, g)
		c = crc32c(c, b[:gdChecksumOff])
		c = crc32c(c, zero4[:2])
		c = crc32c(c, b[gdChecksumOff+2:size])
		return uint16(c)
	}
	var gb [4]byte
	binary.LittleEndian.PutUint32(gb[:], g)
	c := crc16(0xFFFF, sb.UUID[:])
	c = crc16(c, gb[:])
	c = crc16(c, b[:gdChecksumOff])
	// Old 32-byte descriptors end at the checksum; the bytes after it in
	// a 64-byte one are covered too.
	if size > gdChecksumOff+2 {
		c = crc16(c, b[gdChecksumOff+2:size])
	}
	return c
}

// parseGroupDesc decodes descriptor g from b (at least GroupDescSize
// bytes), verifies its checksum when the volume has one, and checks that
// its bitmaps and inode table lie inside the volume (inside the group,
// without flex_bg, which lets them move).
func parseGroupDesc(b []byte, g uint32, sb *Superblock) (GroupDesc, error) {
	var d GroupDesc
	size := sb.GroupDescSize
	if len(b) < size || size < 32 {
		return d, fmt.Errorf("%w: group %d: descriptor of %d bytes, want %d", ErrCorrupt, g, len(b), size)
	}
	le := binary.LittleEndian
	d.BlockBitmap = uint64(le.Uint32(b[0x0:]))
	d.InodeBitmap = uint64(le.Uint32(b[0x4:]))
	d.InodeTable = uint64(le.Uint32(b[0x8:]))
	d.FreeBlocks = uint32(le.Uint16(b[0xC:]))
	d.FreeInodes = uint32(le.Uint16(b[0xE:]))
	d.UsedDirs = uint32(le.Uint16(b[0x10:]))
	d.Flags = le.Uint16(b[0x12:])
	d.ExcludeBitmap = uint64(le.Uint32(b[0x14:]))
	d.BlockBitmapCsum = uint32(le.Uint16(b[0x18:]))
	d.InodeBitmapCsum = uint32(le.Uint16(b[0x1A:]))
	d.ItableUnused = uint32(le.Uint16(b[0x1C:]))
	d.Checksum = le.Uint16(b[gdChecksumOff:])
	if size >= 64 {
		d.BlockBitmap |= uint64(le.Uint32(b[0x20:])) << 32
		d.InodeBitmap |= uint64(le.Uint32(b[0x24:])) << 32
		d.InodeTable |= uint64(le.Uint32(b[0x28:])) << 32
		d.FreeBlocks |= uint32(le.Uint16(b[0x2C:])) << 16
		d.FreeInodes |= uint32(le.Uint16(b[0x2E:])) << 16
		d.UsedDirs |= uint32(le.Uint16(b[0x30:])) << 16
		d.ItableUnused |= uint32(le.Uint16(b[0x32:])) << 16
		d.ExcludeBitmap |= uint64(le.Uint32(b[0x34:])) << 32
		d.BlockBitmapCsum |= uint32(le.Uint16(b[0x38:])) << 16
		d.InodeBitmapCsum |= uint32(le.Uint16(b[0x3A:])) << 16
	}
	if sb.groupCsum() {
		if got := groupDescCsum(b, g, sb); got != d.Checksum {
			return d, fmt.Errorf("%w: group %d: descriptor checksum %#04x, computed %#04x", ErrCorrupt, g, d.Checksum, got)
		}
		if d.ItableUnused > sb.InodesPerGroup {
			return d, fmt.Errorf("%w: group %d: %d unused inodes of %d", ErrCorrupt, g, d.ItableUnused, sb.InodesPerGroup)
		}
	}
	lo, hi := uint64(sb.FirstDataBlock), sb.BlocksCount
	if !sb.HasIncompat(IncompatFlexBG) {
		lo = sb.groupFirstBlock(g)
		hi = lo + sb.groupBlocks(g)
	}
	check := func(what string, blk, n uint64) error {
		if blk < lo || blk >= hi || n > hi-blk {
			return fmt.Errorf("%w: group %d: %s at block %d (+%d) outside blocks %d..%d", ErrCorrupt, g, what, blk, n, lo, hi-1)
		}
		return nil
	}
	if err := check("block bitmap", d.BlockBitmap, 1); err != nil {
		return d, err
	}
	if err := check("inode bitmap", d.InodeBitmap, 1); err != nil {
		return d, err
	}
	if err := check("inode table", d.InodeTable, sb.inodeTableBlocks()); err != nil {
		return d, err
	}
	return d, nil
}

// groupTable holds every group's descriptor, decoded. The read side only
// looks them up; the write side will change counts and flags under mu and
// write the descriptor blocks back (descBlock says where) through the
// metadata mapping, so the type already serialises access.
type groupTable struct {
	mu    sync.RWMutex
	descs []GroupDesc
}

// get returns group g's descriptor. g must be < GroupCount.
func (t *groupTable) get(g uint32) GroupDesc {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.descs[g]
}

// loadGroups reads and checks every group descriptor through the
// metadata mapping.
func (v *Volume) loadGroups() error {
	sb := v.sb
	// Grow the table as descriptor blocks are read rather than sizing it
	// from the superblock up front: a corrupt group count then costs no
	// more memory than the device has descriptor blocks to back it.
	t := &groupTable{descs: make([]GroupDesc, 0, min(sb.GroupCount, 1<<16))}
	buf := make([]byte, sb.BlockSize)
	for nr := uint32(0); nr < sb.GDTBlocks; nr++ {
		blk := sb.descBlock(nr)
		if err := v.readBlock(buf, blk); err != nil {
			return fmt.Errorf("ext: group descriptor block %d: %w", nr, err)
		}
		for i := 0; i < sb.DescPerBlock; i++ {
			g := nr*uint32(sb.DescPerBlock) + uint32(i)
			if g >= sb.GroupCount {
				break
			}
			d, err := parseGroupDesc(buf[i*sb.GroupDescSize:], g, sb)
			if err != nil {
				return fmt.Errorf("%w (descriptor block %d at device block %d)", err, nr, blk)
			}
			t.descs = append(t.descs, d)
		}
	}
	v.groups = t
	return nil
}
