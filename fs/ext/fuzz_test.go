package ext

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/mpage"
)

// superOpts describe a synthetic superblock for parser tests and fuzzing.
type superOpts struct {
	blockSize int
	inodeSize int
	csum      bool // metadata_csum (and 64bit, 64-byte descriptors)
	gdtCsum   bool // uninit_bg
	inline    bool
}

// makeSuper builds a consistent superblock: 4 groups of 8*blocksize
// blocks, 256 inodes each.
func makeSuper(o superOpts) []byte {
	b := make([]byte, superblockSize)
	le := binary.LittleEndian
	log := uint32(0)
	for 1024<<log < o.blockSize {
		log++
	}
	bpg := uint32(8 * o.blockSize)
	first := uint32(0)
	if o.blockSize == 1024 {
		first = 1
	}
	const groups, ipg = 4, 256
	le.PutUint32(b[0x0:], groups*ipg)
	le.PutUint32(b[0x4:], groups*bpg+first-100) // the last group is short
	le.PutUint32(b[0x14:], first)
	le.PutUint32(b[0x18:], log)
	le.PutUint32(b[0x1C:], log)
	le.PutUint32(b[0x20:], bpg)
	le.PutUint32(b[0x24:], bpg)
	le.PutUint32(b[0x28:], ipg)
	le.PutUint16(b[0x38:], superMagic)
	le.PutUint16(b[0x3A:], stateValid)
	le.PutUint32(b[0x4C:], revDynamic)
	le.PutUint32(b[0x54:], goodOldFirstIno)
	le.PutUint16(b[0x58:], uint16(o.inodeSize))
	incompat := IncompatFiletype | IncompatExtents | IncompatFlexBG
	ro := ROCompatSparseSuper | ROCompatLargeFile | ROCompatHugeFile | ROCompatExtraIsize
	if o.csum {
		incompat |= Incompat64Bit
		ro |= ROCompatMetadataCsum
		le.PutUint16(b[0xFE:], 64)
		b[0x175] = 1
	}
	if o.gdtCsum {
		ro |= ROCompatGDTCsum
	}
	if o.inline {
		incompat |= IncompatInlineData
	}
	le.PutUint32(b[0x5C:], uint32(CompatExtAttr|CompatDirIndex))
	le.PutUint32(b[0x60:], uint32(incompat))
	le.PutUint32(b[0x64:], uint32(ro))
	copy(b[0x68:], "0123456789abcdef") // UUID
	b[0x174] = 4                       // 16 groups per flex group
	if o.csum {
		le.PutUint32(b[sbChecksumOff:], superblockCsum(b))
	}
	return b
}

// fuzzSupers are the volumes the descriptor, inode and directory targets
// parse against: old 32-byte descriptors without checksums, uninit_bg
// crc16, metadata_csum with 64-byte descriptors and inline data.
var fuzzSupers = func() []*Superblock {
	var out []*Superblock
	for _, o := range []superOpts{
		{blockSize: 1024, inodeSize: 128},
		{blockSize: 2048, inodeSize: 256, gdtCsum: true},
		{blockSize: 4096, inodeSize: 256, csum: true, inline: true},
		{blockSize: 1024, inodeSize: 1024, csum: true},
	} {
		sb, err := ParseSuperblock(makeSuper(o))
		if err != nil {
			panic(err)
		}
		out = append(out, sb)
	}
	return out
}()

func TestMakeSuper(t *testing.T) {
	for _, sb := range fuzzSupers {
		if sb.GroupCount != 4 {
			t.Fatalf("%d groups", sb.GroupCount)
		}
	}
}

// FuzzSuperblock: any 1024 bytes parse to a consistent superblock or an
// error. fixCsum recomputes a metadata_csum checksum first, so mutations
// reach the checks behind it.
func FuzzSuperblock(f *testing.F) {
	for _, o := range []superOpts{{1024, 128, false, false, false}, {4096, 256, true, false, true}, {2048, 256, false, true, false}} {
		f.Add(makeSuper(o), false)
	}
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, fixCsum bool) {
		if fixCsum && len(b) >= superblockSize {
			b = append([]byte(nil), b...)
			binary.LittleEndian.PutUint32(b[sbChecksumOff:], superblockCsum(b))
		}
		sb, err := ParseSuperblock(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNotExt) {
				t.Fatalf("error of no class: %v", err)
			}
			return
		}
		if sb.BlockSize != 1024 && sb.BlockSize != 2048 && sb.BlockSize != 4096 {
			t.Fatalf("block size %d", sb.BlockSize)
		}
		if sb.GroupCount == 0 || sb.DescPerBlock == 0 || sb.GDTBlocks == 0 {
			t.Fatalf("geometry %+v", sb)
		}
		if uint64(sb.GroupCount)*uint64(sb.InodesPerGroup) != uint64(sb.InodesCount) {
			t.Fatal("inode count")
		}
		for nr := range min(sb.GDTBlocks, 64) {
			_ = sb.descBlock(nr)
		}
		for g := range min(sb.GroupCount, 64) {
			_ = sb.groupHasSuper(g)
			if sb.groupBlocks(g) == 0 {
				t.Fatalf("group %d is empty", g)
			}
		}
		_ = sb.inodeTableBlocks()
		_ = sb.Incompat.String() + sb.ROCompat.String() + sb.Compat.String()
	})
}

// FuzzGroupDesc: descriptors parse or fail, and a parsed one lies inside
// the volume.
func FuzzGroupDesc(f *testing.F) {
	for i, sb := range fuzzSupers {
		d := make([]byte, sb.GroupDescSize)
		le := binary.LittleEndian
		le.PutUint32(d[0:], uint32(sb.FirstDataBlock)+3)
		le.PutUint32(d[4:], uint32(sb.FirstDataBlock)+4)
		le.PutUint32(d[8:], uint32(sb.FirstDataBlock)+5)
		f.Add(d, uint8(i), uint32(0), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, kind uint8, g uint32, fixCsum bool) {
		sb := fuzzSupers[int(kind)%len(fuzzSupers)]
		g %= sb.GroupCount
		if fixCsum && len(b) >= sb.GroupDescSize {
			b = append([]byte(nil), b...)
			binary.LittleEndian.PutUint16(b[gdChecksumOff:], groupDescCsum(b, g, sb))
		}
		d, err := parseGroupDesc(b, g, sb)
		if err != nil {
			return
		}
		if d.InodeTable+sb.inodeTableBlocks() > sb.BlocksCount || d.BlockBitmap >= sb.BlocksCount || d.InodeBitmap >= sb.BlocksCount {
			t.Fatalf("descriptor outside the volume: %+v", d)
		}
	})
}

// FuzzInode: inodes parse or fail; what a parsed inode leads to (inline
// data, in-inode xattrs, the extent root, direct pointers) fails cleanly
// too.
func FuzzInode(f *testing.F) {
	for i, sb := range fuzzSupers {
		in := make([]byte, sb.InodeSize)
		le := binary.LittleEndian
		le.PutUint16(in[0:], modeRegular|0o644)
		le.PutUint32(in[4:], 5000)
		le.PutUint16(in[0x1A:], 1)
		le.PutUint32(in[0x20:], FlagExtents)
		le.PutUint16(in[iBlockOff:], extentMagic)
		le.PutUint16(in[iBlockOff+2:], 1)
		le.PutUint16(in[iBlockOff+4:], 4)
		le.PutUint32(in[iBlockOff+12:], 0)
		le.PutUint16(in[iBlockOff+16:], 2)
		le.PutUint32(in[iBlockOff+20:], 500)
		if sb.InodeSize > 128 {
			le.PutUint16(in[iExtraIsizeOff:], 32)
			// An inline-data xattr: magic, one "data" entry, value.
			x := in[128+32:]
			le.PutUint32(x, xattrMagic)
			e := x[4:]
			e[0], e[1] = 4, xattrIndexSystem
			le.PutUint16(e[2:], 40)
			le.PutUint32(e[8:], 8)
			copy(e[16:], "data")
			copy(x[4+40:], "ABCDEFGH")
		}
		f.Add(in, uint8(i), uint32(12), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, kind uint8, ino uint32, fixCsum bool) {
		sb := fuzzSupers[int(kind)%len(fuzzSupers)]
		ino = ino%sb.InodesCount + 1
		if fixCsum && len(b) >= int(sb.InodeSize) && sb.MetadataCsum() {
			b = append([]byte(nil), b[:sb.InodeSize]...)
			gen := binary.LittleEndian.Uint32(b[0x64:])
			extra := 0
			if len(b) > 128 {
				extra = int(binary.LittleEndian.Uint16(b[iExtraIsizeOff:]))
			}
			c := inodeCsum(b, inodeCsumSeed(sb, ino, gen), len(b) > 128 && 128+extra >= iChecksumHiOff+2)
			binary.LittleEndian.PutUint16(b[iChecksumLoOff:], uint16(c))
			if len(b) > 128 && 128+extra >= iChecksumHiOff+2 {
				binary.LittleEndian.PutUint16(b[iChecksumHiOff:], uint16(c>>16))
			}
		}
		in, err := parseInode(b, ino, sb)
		if err != nil {
			return
		}
		_ = in.FileMode().String() + in.Type().String()
		_, _, _ = in.ibodyXattr(xattrIndexSystem, "data")
		if head, tail, err := in.inlineData(); err == nil && len(head) != iBlockLen {
			t.Fatalf("inline head of %d bytes (tail %d)", len(head), len(tail))
		}
		if h, err := parseExtentHeader(in.Block[:], extentRootMax, -1); err == nil {
			if checkExtentNode(in.Block[:], h, 0, sb.BlocksCount, uint64(sb.FirstDataBlock)) == nil && h.Depth == 0 && h.Entries > 0 {
				m := &extentMapper{}
				for _, blk := range []uint32{0, 1, 100, 1 << 31} {
					bm := mpage.BlockMap{Block: uint64(blk), Len: 64}
					m.mapLeaf(&bm, in.Block[:], h, blk, 64, maxLogicalBlocks)
					checkAnswer(t, &bm, 64, sb)
				}
			}
		}
		// Direct pointers need no metadata reads.
		v := &Volume{sb: sb}
		im := newIndirectMapper(v, in)
		for blk := uint64(0); blk < nDirect; blk++ {
			bm := mpage.BlockMap{Block: blk, Len: 20}
			if err := im.MapBlocks(&bm); err == nil {
				checkAnswer(t, &bm, 20, sb)
			}
		}
	})
}

// checkAnswer checks a mapper's answer: a length within what was asked and
// mapped blocks inside the volume.
func checkAnswer(t *testing.T, bm *mpage.BlockMap, asked int, sb *Superblock) {
	t.Helper()
	if bm.Len < 1 || bm.Len > asked {
		t.Fatalf("answer of %d blocks to a question of %d", bm.Len, asked)
	}
	if bm.Flags&mpage.Mapped != 0 && (bm.PBlock+uint64(bm.Len) > sb.BlocksCount || bm.PBlock < uint64(sb.FirstDataBlock)) {
		t.Fatalf("mapped %d+%d outside %d blocks", bm.PBlock, bm.Len, sb.BlocksCount)
	}
}

// FuzzExtentHeader: any node bytes parse and check or fail; a checked
// node's lookups answer inside it.
func FuzzExtentHeader(f *testing.F) {
	root := make([]byte, iBlockLen)
	le := binary.LittleEndian
	le.PutUint16(root[0:], extentMagic)
	le.PutUint16(root[2:], 2)
	le.PutUint16(root[4:], 4)
	le.PutUint32(root[12:], 0)
	le.PutUint16(root[16:], 10)
	le.PutUint32(root[20:], 1000)
	le.PutUint32(root[24:], 20)
	le.PutUint16(root[28:], uninitExtentBase+5)
	le.PutUint32(root[32:], 2000)
	f.Add(root, uint16(4), int8(-1), uint32(3))
	idx := make([]byte, 1024)
	le.PutUint16(idx[0:], extentMagic)
	le.PutUint16(idx[2:], 2)
	le.PutUint16(idx[4:], 84)
	le.PutUint16(idx[6:], 1)
	le.PutUint32(idx[12:], 0)
	le.PutUint32(idx[16:], 700)
	le.PutUint32(idx[24:], 500)
	le.PutUint32(idx[28:], 800)
	f.Add(idx, uint16(84), int8(1), uint32(600))
	sb := fuzzSupers[2]
	f.Fuzz(func(t *testing.T, b []byte, room uint16, depth int8, lblk uint32) {
		h, err := parseExtentHeader(b, int(room), int(depth))
		if err != nil {
			return
		}
		if int(h.Entries) > int(room) || extentHeaderLen+int(h.Max)*extentEntryLen > len(b) {
			t.Fatalf("header %+v accepted for room %d in %d bytes", h, room, len(b))
		}
		if checkExtentNode(b, h, 0, sb.BlocksCount, uint64(sb.FirstDataBlock)) != nil || h.Entries == 0 {
			return
		}
		if h.Depth == 0 {
			bm := mpage.BlockMap{Block: uint64(lblk), Len: 100}
			(&extentMapper{}).mapLeaf(&bm, b, h, lblk, 100, maxLogicalBlocks)
			checkAnswer(t, &bm, 100, sb)
			return
		}
		i := searchKeys(int(h.Entries), lblk, func(i int) uint32 { k, _ := indexAt(b, i); return k })
		if i >= int(h.Entries) {
			t.Fatalf("index %d of %d", i, h.Entries)
		}
		if i >= 0 {
			if k, child := indexAt(b, i); k > lblk || child >= sb.BlocksCount {
				t.Fatalf("index %d: key %d child %d for block %d", i, k, child, lblk)
			}
		}
	})
}

// FuzzDirEntries: directory blocks (and inline regions) parse or fail;
// parsed names are sane and inside the block.
func FuzzDirEntries(f *testing.F) {
	blk := make([]byte, 1024)
	le := binary.LittleEndian
	put := func(off, ino, recLen int, name string, ft byte) int {
		le.PutUint32(blk[off:], uint32(ino))
		le.PutUint16(blk[off+4:], uint16(recLen))
		blk[off+6], blk[off+7] = byte(len(name)), ft
		copy(blk[off+8:], name)
		return off + recLen
	}
	off := put(0, 2, 12, ".", 2)
	off = put(off, 2, 12, "..", 2)
	off = put(off, 12, 20, "hello.txt", 1)
	put(off, 0, 1024-off-12, "", 0)
	put(1024-12, 0, 12, "", 0)
	blk[1024-12+7] = direntTailType
	le.PutUint32(blk[1024-4:], crc32c(7, blk[:1024-12]))
	f.Add(append([]byte(nil), blk...), true, true)
	f.Add(blk[:56], true, false)
	f.Add([]byte{}, false, false)
	f.Fuzz(func(t *testing.T, b []byte, filetype, csum bool) {
		p := dirParams{filetype: filetype, inodesCount: 1 << 20}
		limit := len(b)
		if csum {
			n, err := checkDirBlock(b, 7)
			if err != nil {
				return
			}
			limit = n
		}
		_ = hasDirentTail(b)
		_, _ = dxCountOffset(b)
		_ = parseDirents(b[:limit], p, func(name []byte, ino uint32, ft FileType) error {
			if len(name) == 0 || len(name) > maxNameLen || bytes.ContainsAny(name, "/\x00") || ino == 0 || ino > p.inodesCount || ft > TypeSymlink {
				t.Fatalf("entry %q ino %d type %d", name, ino, ft)
			}
			return nil
		})
	})
}

// TestWriteFuzzSeeds refreshes the kept corpus from real mke2fs images:
// MPAGED_WRITE_FUZZ_SEEDS=1 go test -run WriteFuzzSeeds ./fs/ext
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("MPAGED_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set MPAGED_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz seeds from mke2fs images")
	}
	src := t.TempDir()
	buildTree(t, src, treeOpts{blockSize: 1024, manyFiles: 40})
	type img struct {
		name, typ string
		bs        int
		extra     []string
	}
	for _, c := range []img{
		{"ext2-1k", "ext2", 1024, nil},
		{"ext3-2k", "ext3", 2048, nil},
		{"ext4-4k", "ext4", 4096, nil},
		{"ext4-1k-metabg", "ext4", 1024, []string{"-O", "meta_bg,^resize_inode"}},
		{"ext4-inline", "ext4", 4096, []string{"-O", "inline_data"}},
		{"ext4-uninit", "ext4", 1024, []string{"-O", "^metadata_csum,uninit_bg,^64bit"}},
	} {
		p := mkfs(t, c.typ, c.bs, src, "24M", c.extra...)
		v := mustOpenImage(t, p, openOpts{})
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sb := v.sb
		writeSeed(t, "FuzzSuperblock", c.name, raw[superblockOffset:superblockOffset+superblockSize], false)
		kind := uint8(0)
		for i, fs := range fuzzSupers {
			if fs.GroupDescSize == sb.GroupDescSize && fs.MetadataCsum() == sb.MetadataCsum() {
				kind = uint8(i)
			}
		}
		gd := int(sb.descBlock(0)) * sb.BlockSize
		writeSeed(t, "FuzzGroupDesc", c.name, raw[gd:gd+sb.GroupDescSize], kind, uint32(0), true)
		for _, path := range []string{"/tiny/f02-100", "/sparse/fragmented", "/links/fast", "/many", "/blocks/double"} {
			ino, err := v.Lookup(path)
			if err != nil {
				t.Fatal(err)
			}
			off := inodeOffset(t, v, ino)
			in := raw[off : off+int64(sb.InodeSize)]
			name := c.name + "-" + filepath.Base(path)
			writeSeed(t, "FuzzInode", name, in, kind, ino, true)
			writeSeed(t, "FuzzExtentHeader", name, in[iBlockOff:iBlockOff+iBlockLen], uint16(extentRootMax), int8(-1), uint32(5))
			if path == "/many" && !sb.HasIncompat(IncompatInlineData) {
				segs := debugfsSegments(t, p, path)
				b := int64(segs[0].pstart) * int64(sb.BlockSize)
				writeSeed(t, "FuzzDirEntries", name, raw[b:b+int64(sb.BlockSize)], sb.HasIncompat(IncompatFiletype), false)
			}
		}
	}
}

func writeSeed(t *testing.T, target, name string, args ...any) {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			buf.WriteString("[]byte(" + strconv.Quote(string(v)) + ")\n")
		case bool:
			if v {
				buf.WriteString("bool(true)\n")
			} else {
				buf.WriteString("bool(false)\n")
			}
		case uint8:
			buf.WriteString("uint8(" + strconv.FormatInt(int64(v), 10) + ")\n")
		case uint16:
			buf.WriteString("uint16(" + strconv.FormatInt(int64(v), 10) + ")\n")
		case int8:
			buf.WriteString("int8(" + strconv.FormatInt(int64(v), 10) + ")\n")
		case uint32:
			buf.WriteString("uint32(" + strconv.FormatInt(int64(v), 10) + ")\n")
		default:
			t.Fatalf("seed arg %T", a)
		}
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzSplitPath: a path is refused with ErrInvalidPath, or split into
// components that name exactly what it spelled: each non-empty, not "."
// or "..", without a slash or a NUL, at most 255 bytes, and joined back
// (with the trailing slash it may have had) they are the path.
func FuzzSplitPath(f *testing.F) {
	for _, p := range []string{"/", "", "a", "/a/b", "/a/b/", "/a//b", "/./a", "/a/..", "/a\x00b", "/" + strings.Repeat("n", 256),
		"/" + strings.Repeat("n", 255), "/" + strings.Repeat("d/", 2048), "/...", "//"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		comps, trailing, err := splitPath(p)
		if err != nil {
			if !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("splitPath(%q): error of another class: %v", p, err)
			}
			return
		}
		if len(p) > maxPathLen {
			t.Fatalf("splitPath accepted %d bytes", len(p))
		}
		for _, c := range comps {
			if c == "" || c == "." || c == ".." || len(c) > maxNameLen || strings.ContainsAny(c, "/\x00") {
				t.Fatalf("splitPath(%q): component %q", p, c)
			}
		}
		back := "/" + strings.Join(comps, "/")
		if trailing {
			back += "/"
		}
		if back != p {
			t.Fatalf("splitPath(%q) = %q (trailing %v): joined back %q", p, comps, trailing, back)
		}
	})
}
