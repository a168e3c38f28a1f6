package ext

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"time"
)

// Inode mode type bits (i_mode & 0xF000).
const (
	modeTypeMask = 0xF000
	modeFIFO     = 0x1000
	modeChar     = 0x2000
	modeDir      = 0x4000
	modeBlock    = 0x6000
	modeRegular  = 0x8000
	modeSymlink  = 0xA000
	modeSocket   = 0xC000
)

// Inode flags (i_flags) this package looks at.
const (
	FlagCompr      = 0x4        // compressed (never merged): unreadable
	FlagEncrypt    = 0x800      // contents and names are ciphertext
	FlagIndex      = 0x1000     // directory has an htree index
	FlagHugeFile   = 0x40000    // i_blocks counts fs blocks, not sectors
	FlagExtents    = 0x80000    // i_block holds an extent tree
	FlagVerity     = 0x100000   // fs-verity: data readable as is
	FlagEAInode    = 0x200000   // the inode holds an xattr value
	FlagInlineData = 0x10000000 // data lives in i_block and system.data
	FlagCasefold   = 0x40000000 // directory names fold case
)

// Inode layout.
const (
	rootIno = 2

	iBlockOff      = 0x28
	iBlockLen      = 60 // 15 32-bit words: pointers, extent root or inline bytes
	iChecksumLoOff = 0x7C
	iExtraIsizeOff = 0x80
	iChecksumHiOff = 0x82
	nDirect        = 12 // direct block pointers in i_block
	maxSymlinkLen  = 4096
)

// FileType is a file's type as directory entries record it (the numbers
// are the on-disk dirent file_type values).
type FileType uint8

const (
	TypeUnknown FileType = iota
	TypeRegular
	TypeDir
	TypeCharDev
	TypeBlockDev
	TypeFIFO
	TypeSocket
	TypeSymlink
)

// Letter is the type as ls -l shows it.
func (t FileType) Letter() byte {
	if int(t) < len(typeLetters) {
		return typeLetters[t]
	}
	return '?'
}

const typeLetters = "?-dcbpsl"

func (t FileType) String() string {
	switch t {
	case TypeRegular:
		return "regular"
	case TypeDir:
		return "directory"
	case TypeCharDev:
		return "char device"
	case TypeBlockDev:
		return "block device"
	case TypeFIFO:
		return "fifo"
	case TypeSocket:
		return "socket"
	case TypeSymlink:
		return "symlink"
	}
	return "unknown"
}

// typeOfMode maps i_mode's type bits to a FileType.
func typeOfMode(mode uint16) FileType {
	switch mode & modeTypeMask {
	case modeRegular:
		return TypeRegular
	case modeDir:
		return TypeDir
	case modeChar:
		return TypeCharDev
	case modeBlock:
		return TypeBlockDev
	case modeFIFO:
		return TypeFIFO
	case modeSocket:
		return TypeSocket
	case modeSymlink:
		return TypeSymlink
	}
	return TypeUnknown
}

// Inode is one decoded on-disk inode. Raw keeps all InodeSize bytes (the
// in-inode extended attributes live past the fixed fields, and a writer
// will need them).
type Inode struct {
	Ino        uint32
	Mode       uint16
	UID, GID   uint32
	Size       uint64
	Atime      time.Time
	Ctime      time.Time
	Mtime      time.Time
	Crtime     time.Time // zero when the inode has no room for it
	Dtime      uint32
	Links      uint16
	Blocks     uint64 // 512-byte sectors, whatever the on-disk unit
	Flags      uint32
	Generation uint32
	FileACL    uint64
	ExtraIsize uint16
	Block      [iBlockLen]byte
	Raw        []byte
}

// Type is the file type from i_mode.
func (in *Inode) Type() FileType { return typeOfMode(in.Mode) }

// IsDir reports whether the inode is a directory.
func (in *Inode) IsDir() bool { return in.Mode&modeTypeMask == modeDir }

// inUse reports whether the inode describes a live file: a mode and at
// least one link. Directories with dir_nlink may have 1 for "many".
func (in *Inode) inUse() bool { return in.Mode != 0 && in.Links != 0 }

// checkLive says whether the inode can be what a directory entry names: in
// use, and of a file type i_mode can spell.
func (in *Inode) checkLive() error {
	if !in.inUse() {
		return fmt.Errorf("%w: inode %d is not in use (mode %#o, %d links)", ErrCorrupt, in.Ino, in.Mode, in.Links)
	}
	if in.Type() == TypeUnknown {
		return fmt.Errorf("%w: inode %d: mode %#o is no file type", ErrCorrupt, in.Ino, in.Mode)
	}
	return nil
}

// FileMode converts i_mode to io/fs bits.
func (in *Inode) FileMode() fs.FileMode {
	m := fs.FileMode(in.Mode & 0o777)
	if in.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch in.Type() {
	case TypeDir:
		m |= fs.ModeDir
	case TypeSymlink:
		m |= fs.ModeSymlink
	case TypeFIFO:
		m |= fs.ModeNamedPipe
	case TypeSocket:
		m |= fs.ModeSocket
	case TypeCharDev:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case TypeBlockDev:
		m |= fs.ModeDevice
	}
	return m
}

// fits reports whether a field at off of n bytes lies inside the inode's
// used part: the 128 fixed bytes plus i_extra_isize.
func (in *Inode) fits(off, n int) bool {
	return off+n <= goodOldInodeSize+int(in.ExtraIsize)
}

// inodeCsumSeed is the seed of every checksum that belongs to one inode
// (the inode itself, its extent blocks, its directory blocks).
func inodeCsumSeed(sb *Superblock, ino, gen uint32) uint32 {
	return crc32cU32(crc32cU32(sb.seed, ino), gen)
}

// inodeCsum computes the checksum of raw inode bytes with both checksum
// fields taken as zero. hasHi says whether i_checksum_hi is inside the
// inode's extra space.
func inodeCsum(raw []byte, seed uint32, hasHi bool) uint32 {
	c := crc32c(seed, raw[:iChecksumLoOff])
	c = crc32c(c, zero4[:2])
	c = crc32c(c, raw[iChecksumLoOff+2:goodOldInodeSize])
	if len(raw) > goodOldInodeSize {
		if hasHi {
			c = crc32c(c, raw[goodOldInodeSize:iChecksumHiOff])
			c = crc32c(c, zero4[:2])
			c = crc32c(c, raw[iChecksumHiOff+2:])
		} else {
			c = crc32c(c, raw[goodOldInodeSize:])
		}
	}
	return c
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// decodeTime turns a 32-bit seconds field and its optional extra word (two
// epoch bits extending the seconds past 2038, then nanoseconds) into a
// time.
func decodeTime(sec uint32, extra uint32, hasExtra bool) time.Time {
	s := int64(int32(sec))
	var ns int64
	if hasExtra {
		s += int64(extra&3) << 32
		ns = int64(extra >> 2)
		if ns > 999_999_999 {
			ns = 999_999_999
		}
	}
	return time.Unix(s, ns)
}

// parseInode decodes inode ino from b (at least InodeSize bytes) and
// verifies its checksum. An all-zero inode (never initialised: a lazily
// zeroed inode table) has no checksum and decodes as unused.
func parseInode(b []byte, ino uint32, sb *Superblock) (*Inode, error) {
	size := int(sb.InodeSize)
	if len(b) < size || size < goodOldInodeSize {
		return nil, fmt.Errorf("%w: inode %d: %d bytes, want %d", ErrCorrupt, ino, len(b), size)
	}
	le := binary.LittleEndian
	in := &Inode{Ino: ino, Raw: append([]byte(nil), b[:size]...)}
	r := in.Raw
	if size > goodOldInodeSize {
		in.ExtraIsize = le.Uint16(r[iExtraIsizeOff:])
		if int(in.ExtraIsize) > size-goodOldInodeSize || in.ExtraIsize&3 != 0 {
			return nil, fmt.Errorf("%w: inode %d: extra inode size %d (inode size %d)", ErrCorrupt, ino, in.ExtraIsize, size)
		}
	}
	if sb.MetadataCsum() && !allZero(r) {
		in.Generation = le.Uint32(r[0x64:])
		hasHi := size > goodOldInodeSize && in.fits(iChecksumHiOff, 2)
		want := uint32(le.Uint16(r[iChecksumLoOff:]))
		got := inodeCsum(r, inodeCsumSeed(sb, ino, in.Generation), hasHi)
		if hasHi {
			want |= uint32(le.Uint16(r[iChecksumHiOff:])) << 16
		} else {
			got &= 0xFFFF
		}
		if got != want {
			return nil, fmt.Errorf("%w: inode %d: checksum %#08x, computed %#08x", ErrCorrupt, ino, want, got)
		}
	}
	in.Mode = le.Uint16(r[0x0:])
	in.UID = uint32(le.Uint16(r[0x2:])) | uint32(le.Uint16(r[0x78:]))<<16
	in.GID = uint32(le.Uint16(r[0x18:])) | uint32(le.Uint16(r[0x7A:]))<<16
	in.Size = uint64(le.Uint32(r[0x4:]))
	// i_size_high is the size's high half for regular files (and for
	// directories once large_dir allows them past 4 GiB); ext2 used the
	// same word as i_dir_acl for directories.
	if in.Mode&modeTypeMask == modeRegular || sb.HasIncompat(IncompatLargeDir) {
		in.Size |= uint64(le.Uint32(r[0x6C:])) << 32
	}
	in.Dtime = le.Uint32(r[0x14:])
	in.Links = le.Uint16(r[0x1A:])
	in.Flags = le.Uint32(r[0x20:])
	in.Generation = le.Uint32(r[0x64:])
	in.FileACL = uint64(le.Uint32(r[0x68:]))
	if sb.HasIncompat(Incompat64Bit) {
		in.FileACL |= uint64(le.Uint16(r[0x76:])) << 32
	}
	copy(in.Block[:], r[iBlockOff:iBlockOff+iBlockLen])

	blocks := uint64(le.Uint32(r[0x1C:]))
	if sb.HasROCompat(ROCompatHugeFile) {
		blocks |= uint64(le.Uint16(r[0x74:])) << 32
		if in.Flags&FlagHugeFile != 0 {
			blocks *= uint64(sb.BlockSize / 512)
		}
	}
	in.Blocks = blocks

	ext := func(off int) (uint32, bool) {
		if size > goodOldInodeSize && in.fits(off, 4) {
			return le.Uint32(r[off:]), true
		}
		return 0, false
	}
	e, ok := ext(0x84)
	in.Ctime = decodeTime(le.Uint32(r[0xC:]), e, ok)
	e, ok = ext(0x88)
	in.Mtime = decodeTime(le.Uint32(r[0x10:]), e, ok)
	e, ok = ext(0x8C)
	in.Atime = decodeTime(le.Uint32(r[0x8:]), e, ok)
	if cr, ok := ext(0x90); ok {
		e, ok = ext(0x94)
		in.Crtime = decodeTime(cr, e, ok)
	}
	return in, nil
}

// xattrs in the inode body (after i_extra_isize): a 4-byte magic, then
// entries of 16 bytes plus the name padded to 4, ending with 4 zero bytes.
// Values sit later in the same space at offsets counted from the first
// entry.
const (
	xattrMagic       = 0xEA020000
	xattrEntryLen    = 16
	xattrIndexSystem = 7
)

// ibodyXattr returns the value of the in-inode attribute with the given
// name index and name, or ok=false if it has none.
func (in *Inode) ibodyXattr(index uint8, name string) (val []byte, ok bool, err error) {
	start := goodOldInodeSize + int(in.ExtraIsize)
	if len(in.Raw) <= goodOldInodeSize || start+4 > len(in.Raw) {
		return nil, false, nil
	}
	area := in.Raw[start:]
	if binary.LittleEndian.Uint32(area) != xattrMagic {
		return nil, false, nil
	}
	first := area[4:] // entries, and the base of value offsets
	for off := 0; ; {
		if off+4 > len(first) {
			return nil, false, fmt.Errorf("%w: inode %d: in-inode xattrs run past the inode", ErrCorrupt, in.Ino)
		}
		if binary.LittleEndian.Uint32(first[off:]) == 0 {
			return nil, false, nil
		}
		if off+xattrEntryLen > len(first) {
			return nil, false, fmt.Errorf("%w: inode %d: in-inode xattr entry at %d runs past the inode", ErrCorrupt, in.Ino, off)
		}
		e := first[off:]
		nameLen := int(e[0])
		idx := e[1]
		valOff := int(binary.LittleEndian.Uint16(e[2:]))
		valInum := binary.LittleEndian.Uint32(e[4:])
		valSize := int(binary.LittleEndian.Uint32(e[8:]))
		next := off + (xattrEntryLen+nameLen+3)&^3
		if off+xattrEntryLen+nameLen > len(first) {
			return nil, false, fmt.Errorf("%w: inode %d: in-inode xattr name at %d runs past the inode", ErrCorrupt, in.Ino, off)
		}
		if idx == index && string(e[xattrEntryLen:xattrEntryLen+nameLen]) == name {
			if valInum != 0 {
				return nil, false, fmt.Errorf("%w: inode %d: xattr %d.%s in an EA inode", ErrUnsupported, in.Ino, index, name)
			}
			if valSize < 0 || valOff+valSize > len(first) || (valSize > 0 && valOff < next) {
				return nil, false, fmt.Errorf("%w: inode %d: xattr %d.%s value %d+%d outside the inode", ErrCorrupt, in.Ino, index, name, valOff, valSize)
			}
			return first[valOff : valOff+valSize], true, nil
		}
		off = next
	}
}

// inlineData returns the bytes an INLINE_DATA_FL inode holds: the 60 bytes
// of i_block, then the value of the system.data attribute.
func (in *Inode) inlineData() (head, tail []byte, err error) {
	tail, ok, err := in.ibodyXattr(xattrIndexSystem, "data")
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: inode %d: inline data without a system.data attribute", ErrCorrupt, in.Ino)
	}
	return in.Block[:], tail, nil
}
