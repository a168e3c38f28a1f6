package ext

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// Directory entry layout (ext2_dir_entry_2): inode u32, rec_len u16,
// name_len u8, file_type u8, name. Without the filetype feature name_len
// is a u16 and there is no type.
const (
	direntHeader   = 8
	direntMinLen   = 12 // header plus a 1..4-byte name, rounded to 4
	maxNameLen     = 255
	direntTailLen  = 12   // metadata_csum: fake entry holding the block's checksum
	direntTailType = 0xDE // the tail's file_type byte

	dxCountLimitLen = 8 // limit u16, count u16, block u32
	dxEntryLen      = 8 // hash u32, block u32
	dxTailLen       = 8 // reserved u32, checksum u32
)

// DirEntry is one name in a directory.
type DirEntry struct {
	Name  string
	Inode uint32
	Type  FileType
}

func direntLen(nameLen int) int { return (direntHeader + nameLen + 3) &^ 3 }

// dirParams are what parsing entries needs from the volume.
type dirParams struct {
	filetype    bool   // the name_len high byte is a file type
	inodesCount uint32 // entries may not point past it
}

// parseDirents walks the entries filling b exactly, calling fn for each
// live one (inode != 0). Every entry must be whole, 4-aligned, long enough
// for its name, and name a valid inode; names may not hold '/' or NUL.
func parseDirents(b []byte, p dirParams, fn func(name []byte, ino uint32, ft FileType) error) error {
	le := binary.LittleEndian
	for off := 0; off < len(b); {
		if len(b)-off < direntHeader {
			return fmt.Errorf("%w: directory entry at %d: %d bytes left, header needs %d", ErrCorrupt, off, len(b)-off, direntHeader)
		}
		ino := le.Uint32(b[off:])
		recLen := int(le.Uint16(b[off+4:]))
		nameLen := int(b[off+6])
		ft := FileType(b[off+7])
		if !p.filetype {
			nameLen = int(le.Uint16(b[off+6:]))
			ft = TypeUnknown
		}
		switch {
		case recLen < direntMinLen:
			return fmt.Errorf("%w: directory entry at %d: record length %d", ErrCorrupt, off, recLen)
		case recLen%4 != 0:
			return fmt.Errorf("%w: directory entry at %d: record length %d not a multiple of 4", ErrCorrupt, off, recLen)
		case recLen > len(b)-off:
			return fmt.Errorf("%w: directory entry at %d: record length %d runs past the block (%d left)", ErrCorrupt, off, recLen, len(b)-off)
		case nameLen > maxNameLen || direntLen(nameLen) > recLen:
			return fmt.Errorf("%w: directory entry at %d: name of %d bytes in a %d-byte record", ErrCorrupt, off, nameLen, recLen)
		case ino > p.inodesCount:
			return fmt.Errorf("%w: directory entry at %d: inode %d past %d", ErrCorrupt, off, ino, p.inodesCount)
		}
		if ino != 0 {
			name := b[off+direntHeader : off+direntHeader+nameLen]
			if nameLen == 0 || bytes.IndexByte(name, 0) >= 0 || bytes.IndexByte(name, '/') >= 0 {
				return fmt.Errorf("%w: directory entry at %d: bad name %q", ErrCorrupt, off, name)
			}
			if ft > TypeSymlink {
				ft = TypeUnknown
			}
			if err := fn(name, ino, ft); err != nil {
				return err
			}
		}
		off += recLen
	}
	return nil
}

// hasDirentTail reports whether b (one directory block) ends in the
// metadata_csum tail: the entry chain from the start lands exactly on a
// 12-byte entry with inode 0, rec_len 12, name_len 0 and type 0xDE.
func hasDirentTail(b []byte) bool {
	top := len(b) - direntTailLen
	if top < 0 {
		return false
	}
	le := binary.LittleEndian
	off := 0
	for off < top {
		rl := int(le.Uint16(b[off+4:]))
		if rl < direntHeader || rl%4 != 0 {
			return false
		}
		off += rl
	}
	if off != top {
		return false
	}
	t := b[top:]
	return le.Uint32(t) == 0 && le.Uint16(t[4:]) == direntTailLen && t[6] == 0 && t[7] == direntTailType
}

// dxCountOffset returns where an htree node's count/limit header sits if b
// looks like one: an interior node starts with a fake entry (inode 0,
// rec_len = the block) and the root with "." (rec_len 12) and ".." running
// to the end of the block, followed by an 8-byte root info.
func dxCountOffset(b []byte) (int, bool) {
	le := binary.LittleEndian
	if len(b) < 40 {
		return 0, false
	}
	rl := int(le.Uint16(b[4:]))
	switch {
	case rl == len(b) && b[6] == 0 && le.Uint32(b) == 0:
		return direntHeader, true
	case rl == direntMinLen:
		dd := b[direntMinLen:]
		if int(le.Uint16(dd[4:])) != len(b)-direntMinLen || dd[6] != 2 {
			return 0, false
		}
		info := dd[direntMinLen:]
		// dx_root_info: reserved_zero u32, hash_version, info_length (8),
		// indirect_levels, unused_flags.
		if le.Uint32(info) != 0 || info[5] != 8 {
			return 0, false
		}
		return 2*direntMinLen + 8, true
	}
	return 0, false
}

// checkDirBlock verifies a directory block's checksum on a metadata_csum
// volume and returns how many leading bytes hold entries: a leaf block's
// entries stop at its tail, an htree node's at the end of the block (its
// fake entries name nothing).
func checkDirBlock(b []byte, seed uint32) (int, error) {
	le := binary.LittleEndian
	if hasDirentTail(b) {
		top := len(b) - direntTailLen
		want, got := le.Uint32(b[top+8:]), crc32c(seed, b[:top])
		if want != got {
			return 0, fmt.Errorf("%w: directory block checksum %#08x, computed %#08x", ErrCorrupt, want, got)
		}
		return top, nil
	}
	if co, ok := dxCountOffset(b); ok {
		limit := int(le.Uint16(b[co:]))
		count := int(le.Uint16(b[co+2:]))
		tail := co + limit*dxEntryLen
		if count > limit || tail+dxTailLen > len(b) {
			return 0, fmt.Errorf("%w: htree node: %d of %d entries leave no room for its checksum", ErrCorrupt, count, limit)
		}
		c := crc32c(seed, b[:co+count*dxEntryLen])
		c = crc32c(c, b[tail:tail+4]) // dt_reserved
		c = crc32c(c, zero4[:])       // dt_checksum, as zero
		if want := le.Uint32(b[tail+4:]); want != c {
			return 0, fmt.Errorf("%w: htree node checksum %#08x, computed %#08x", ErrCorrupt, want, c)
		}
		return len(b), nil
	}
	return 0, fmt.Errorf("%w: directory block without a checksum tail", ErrCorrupt)
}

// dirBlockEntries parses one directory block: checksum first (when the
// volume has them), then the entries. A block of zeroes is a hole (never
// written) and holds nothing.
func (v *Volume) dirBlockEntries(b []byte, seed uint32, fn func(name []byte, ino uint32, ft FileType) error) error {
	if allZero(b[:direntHeader]) && allZero(b) {
		return nil
	}
	limit := len(b)
	if v.sb.MetadataCsum() {
		n, err := checkDirBlock(b, seed)
		if err != nil {
			return err
		}
		limit = n
	}
	return parseDirents(b[:limit], v.dirParams(), fn)
}

func (v *Volume) dirParams() dirParams {
	return dirParams{filetype: v.sb.HasIncompat(IncompatFiletype), inodesCount: v.sb.InodesCount}
}

// errStop ends a directory walk early without an error.
var errStop = errors.New("stop")

// dirChunk is how much of a directory walkDir reads at a time.
const dirChunk = 64 << 10

// dirChunks are walkDir's read buffers: every path lookup walks a
// directory, and a GET of a small range is a lookup per request. The
// names fn is given point into one, so fn must copy what it keeps.
var dirChunks = sync.Pool{New: func() any { b := make([]byte, dirChunk); return &b }}

// walkDir calls fn for every live entry of directory n, "." and ".."
// included, in on-disk order. Block directories are read through the
// directory's own data mapping (so their pages are cached like file data),
// htree index blocks look like empty entries and are skipped by the same
// walk; inline directories are parsed from the inode. The names fn gets
// are valid only during the call (the buffer is reused).
func (v *Volume) walkDir(n *node, fn func(name []byte, ino uint32, ft FileType) error) error {
	in := n.inode()
	if !in.IsDir() {
		return ErrNotDir
	}
	if in.Flags&FlagEncrypt != 0 {
		return fmt.Errorf("%w: inode %d: encrypted directory", ErrUnsupported, in.Ino)
	}
	wrap := func(err error) error {
		if errors.Is(err, errStop) {
			return nil
		}
		return err
	}
	if in.Flags&FlagInlineData != 0 {
		return wrap(v.walkInlineDir(in, fn))
	}
	bs := v.sb.BlockSize
	if in.Size%uint64(bs) != 0 {
		return fmt.Errorf("%w: directory inode %d: size %d is not a multiple of the block size", ErrCorrupt, in.Ino, in.Size)
	}
	seed := inodeCsumSeed(v.sb, in.Ino, in.Generation)
	// Read in chunks of whole blocks so one ReadAt feeds the engine a
	// multi-page request (readahead does the rest).
	cp := dirChunks.Get().(*[]byte)
	defer dirChunks.Put(cp)
	chunk := (*cp)[:min(int64(in.Size), dirChunk)]
	for off := int64(0); off < int64(in.Size); {
		k, err := n.readAt(chunk[:min(int64(len(chunk)), int64(in.Size)-off)], off)
		if err != nil && err != io.EOF {
			return err
		}
		for bo := 0; bo+bs <= k; bo += bs {
			blk := (off + int64(bo)) / int64(bs)
			if err := v.dirBlockEntries(chunk[bo:bo+bs], seed, fn); err != nil {
				if errors.Is(err, errStop) {
					return nil
				}
				return fmt.Errorf("directory inode %d block %d: %w", in.Ino, blk, err)
			}
		}
		if k == 0 {
			return fmt.Errorf("%w: directory inode %d: short read at %d", ErrCorrupt, in.Ino, off)
		}
		off += int64(k)
	}
	return nil
}

// walkInlineDir walks an inline directory: i_block holds the parent's
// inode number, then entries in the remaining 56 bytes; more entries fill
// the system.data attribute. "." and ".." are not stored; they are made up
// here so callers see what a block directory shows.
func (v *Volume) walkInlineDir(in *Inode, fn func(name []byte, ino uint32, ft FileType) error) error {
	head, tail, err := in.inlineData()
	if err != nil {
		return err
	}
	parent := binary.LittleEndian.Uint32(head)
	if parent == 0 || parent > v.sb.InodesCount {
		return fmt.Errorf("%w: inline directory inode %d: parent inode %d", ErrCorrupt, in.Ino, parent)
	}
	if err := fn([]byte("."), in.Ino, TypeDir); err != nil {
		return err
	}
	if err := fn([]byte(".."), parent, TypeDir); err != nil {
		return err
	}
	p := v.dirParams()
	if err := parseDirents(head[4:], p, fn); err != nil {
		if errors.Is(err, errStop) {
			return err
		}
		return fmt.Errorf("inline directory inode %d: %w", in.Ino, err)
	}
	if len(tail) > 0 {
		if err := parseDirents(tail, p, fn); err != nil {
			if errors.Is(err, errStop) {
				return err
			}
			return fmt.Errorf("inline directory inode %d (system.data): %w", in.Ino, err)
		}
	}
	return nil
}

// lookupIn finds name in directory n: its inode number, or ErrNotFound.
func (v *Volume) lookupIn(n *node, name string) (uint32, error) {
	var found uint32
	want := []byte(name)
	err := v.walkDir(n, func(nm []byte, ino uint32, _ FileType) error {
		if bytes.Equal(nm, want) {
			found = ino
			return errStop
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if found == 0 {
		return 0, ErrNotFound
	}
	return found, nil
}

// readDirNode lists directory n without "." and "..", sorted by name.
func (v *Volume) readDirNode(n *node) ([]DirEntry, error) {
	var out []DirEntry
	err := v.walkDir(n, func(nm []byte, ino uint32, ft FileType) error {
		if string(nm) == "." || string(nm) == ".." {
			return nil
		}
		out = append(out, DirEntry{Name: string(nm), Inode: ino, Type: ft})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
