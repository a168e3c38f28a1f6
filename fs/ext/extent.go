package ext

import (
	"encoding/binary"
	"fmt"

	"github.com/mpaged/mpaged/mpage"
)

// Extent tree layout: a 12-byte header, then 12-byte entries (index
// entries in interior nodes, extents in leaves), then, in tree blocks of a
// metadata_csum volume, a 4-byte checksum after eh_max entries.
const (
	extentMagic      = 0xF30A
	extentHeaderLen  = 12
	extentEntryLen   = 12
	extentRootMax    = (iBlockLen - extentHeaderLen) / extentEntryLen // 4
	maxExtentDepth   = 5
	uninitExtentBase = 32768 // ee_len above it: unwritten, length ee_len-32768
	maxLogicalBlocks = 1 << 32
)

// extentHeader is a node's header.
type extentHeader struct {
	Entries, Max, Depth uint16
}

// extent is one leaf entry, decoded.
type extent struct {
	Block  uint32 // first file block
	Len    uint32 // blocks
	Start  uint64 // first device block
	Uninit bool   // allocated but unwritten: reads as zeroes
}

func leafAt(b []byte, i int) extent {
	e := b[extentHeaderLen+i*extentEntryLen:]
	le := binary.LittleEndian
	n := uint32(le.Uint16(e[4:]))
	x := extent{Block: le.Uint32(e[0:]), Start: uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))}
	if n > uninitExtentBase {
		x.Len, x.Uninit = n-uninitExtentBase, true
	} else {
		x.Len = n
	}
	return x
}

// indexAt returns interior entry i: the first file block it covers and the
// device block of its child.
func indexAt(b []byte, i int) (first uint32, child uint64) {
	e := b[extentHeaderLen+i*extentEntryLen:]
	le := binary.LittleEndian
	return le.Uint32(e[0:]), uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
}

// parseExtentHeader decodes and checks a node header. room is how many
// entries fit in the node's container (4 in i_block, (blocksize-12)/12 in a
// block); depth is the depth the parent expects, or -1 for the root.
func parseExtentHeader(b []byte, room int, depth int) (extentHeader, error) {
	var h extentHeader
	if len(b) < extentHeaderLen {
		return h, fmt.Errorf("%w: extent node of %d bytes", ErrCorrupt, len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[0:]); m != extentMagic {
		return h, fmt.Errorf("%w: extent header magic %#04x", ErrCorrupt, m)
	}
	h.Entries, h.Max, h.Depth = le.Uint16(b[2:]), le.Uint16(b[4:]), le.Uint16(b[6:])
	switch {
	case h.Max == 0 || int(h.Max) > room:
		return h, fmt.Errorf("%w: extent header: room for %d entries, node holds %d", ErrCorrupt, h.Max, room)
	case h.Entries > h.Max:
		return h, fmt.Errorf("%w: extent header: %d entries of %d", ErrCorrupt, h.Entries, h.Max)
	case h.Depth > maxExtentDepth:
		return h, fmt.Errorf("%w: extent header: depth %d (at most %d)", ErrCorrupt, h.Depth, maxExtentDepth)
	case depth >= 0 && int(h.Depth) != depth:
		return h, fmt.Errorf("%w: extent header: depth %d where %d was expected", ErrCorrupt, h.Depth, depth)
	case h.Depth > 0 && h.Entries == 0:
		return h, fmt.Errorf("%w: extent header: empty interior node", ErrCorrupt)
	case len(b) < extentHeaderLen+int(h.Max)*extentEntryLen:
		return h, fmt.Errorf("%w: extent header: %d entries do not fit %d bytes", ErrCorrupt, h.Max, len(b))
	}
	return h, nil
}

// checkExtentNode checks a node's entries: keys strictly ascending and
// extents without overlap, starting at or after the parent's key (lo),
// non-empty, and inside the volume's blocks [first, blocks). Binary search
// relies on the order, so it is checked before any lookup.
func checkExtentNode(b []byte, h extentHeader, lo uint32, blocks uint64, first uint64) error {
	var next uint64 = uint64(lo) // the lowest file block the next entry may start at
	for i := 0; i < int(h.Entries); i++ {
		if h.Depth > 0 {
			key, child := indexAt(b, i)
			if uint64(key) < next {
				return fmt.Errorf("%w: extent index %d: key %d out of order", ErrCorrupt, i, key)
			}
			if child < first || child >= blocks {
				return fmt.Errorf("%w: extent index %d: child block %d outside the volume", ErrCorrupt, i, child)
			}
			next = uint64(key) + 1
			continue
		}
		x := leafAt(b, i)
		if uint64(x.Block) < next {
			return fmt.Errorf("%w: extent %d: file block %d overlaps the previous extent", ErrCorrupt, i, x.Block)
		}
		if x.Len == 0 {
			return fmt.Errorf("%w: extent %d: zero length", ErrCorrupt, i)
		}
		end := uint64(x.Block) + uint64(x.Len)
		if end > maxLogicalBlocks {
			return fmt.Errorf("%w: extent %d: file blocks %d+%d past 2^32", ErrCorrupt, i, x.Block, x.Len)
		}
		if x.Start < first || x.Start >= blocks || uint64(x.Len) > blocks-x.Start {
			return fmt.Errorf("%w: extent %d: device blocks %d+%d outside the volume", ErrCorrupt, i, x.Start, x.Len)
		}
		next = end
	}
	return nil
}

// extentTailOff is where a tree block's checksum sits: right after eh_max
// entries. The checksum is the inode's seed over the bytes before it.
func extentTailOff(h extentHeader) int { return extentHeaderLen + int(h.Max)*extentEntryLen }

// extentMapper maps file blocks through an extent tree (read side). The
// root lives in a copy of i_block; interior and leaf blocks are read
// through the volume's metadata mapping and checked on every use (the page
// cache keeps them; checking costs far less than the I/O it guards).
type extentMapper struct {
	v    *Volume
	ino  uint32
	seed uint32 // inode checksum seed, for tree block tails
	root [iBlockLen]byte
}

func newExtentMapper(v *Volume, in *Inode) (*extentMapper, error) {
	m := &extentMapper{v: v, ino: in.Ino, seed: inodeCsumSeed(v.sb, in.Ino, in.Generation), root: in.Block}
	h, err := parseExtentHeader(m.root[:], extentRootMax, -1)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", in.Ino, err)
	}
	if err := checkExtentNode(m.root[:], h, 0, v.sb.BlocksCount, uint64(v.sb.FirstDataBlock)); err != nil {
		return nil, fmt.Errorf("inode %d: extent root: %w", in.Ino, err)
	}
	return m, nil
}

// MapBlocks implements mpage.BlockMapper: whole extents per call, holes
// (gaps between extents, unwritten extents, the space past the last one)
// with their length.
func (m *extentMapper) MapBlocks(bm *mpage.BlockMap) error {
	if bm.Create {
		return fmt.Errorf("%w: inode %d: allocation", ErrReadOnly, m.ino)
	}
	want := uint64(max(bm.Len, 1))
	bm.Flags, bm.PBlock, bm.Len = 0, 0, 1
	if bm.Block >= maxLogicalBlocks {
		bm.Len = int(want)
		return nil
	}
	lblk := uint32(bm.Block)
	sb := m.v.sb
	bs := sb.BlockSize
	// limit is the first file block after lblk that a later entry of some
	// ancestor maps: a hole found in this subtree ends there.
	limit := uint64(maxLogicalBlocks)
	node := m.root[:]
	room := extentRootMax
	depth := -1
	lo := uint32(0)
	var buf []byte
	for level := 0; ; level++ {
		h, err := parseExtentHeader(node, room, depth)
		if err != nil {
			return m.errf(level, err)
		}
		if level > 0 {
			if err := checkExtentNode(node, h, lo, sb.BlocksCount, uint64(sb.FirstDataBlock)); err != nil {
				return m.errf(level, err)
			}
		}
		if h.Entries == 0 {
			break // an empty root leaf: the file has no blocks
		}
		if h.Depth == 0 {
			m.mapLeaf(bm, node, h, lblk, want, limit)
			return nil
		}
		// Interior: the last entry whose key is <= lblk.
		i := searchKeys(int(h.Entries), lblk, func(i int) uint32 { k, _ := indexAt(node, i); return k })
		if i < 0 {
			first, _ := indexAt(node, 0)
			limit = min(limit, uint64(first))
			break
		}
		if i+1 < int(h.Entries) {
			next, _ := indexAt(node, i+1)
			limit = min(limit, uint64(next))
		}
		key, child := indexAt(node, i)
		if buf == nil {
			buf = m.v.getBlockBuf()
			defer m.v.putBlockBuf(buf)
		}
		if err := m.v.readBlock(buf, child); err != nil {
			return fmt.Errorf("ext: inode %d: extent block %d: %w", m.ino, child, err)
		}
		depth, room, lo, node = int(h.Depth)-1, (bs-extentHeaderLen)/extentEntryLen, key, buf
		if sb.MetadataCsum() {
			ch, err := parseExtentHeader(node, room, depth)
			if err != nil {
				return m.errf(level+1, fmt.Errorf("block %d: %w", child, err))
			}
			off := extentTailOff(ch)
			if off+4 > bs {
				return fmt.Errorf("%w: inode %d: extent block %d: no room for its checksum", ErrCorrupt, m.ino, child)
			}
			want, got := binary.LittleEndian.Uint32(node[off:]), crc32c(m.seed, node[:off])
			if want != got {
				return fmt.Errorf("%w: inode %d: extent block %d: checksum %#08x, computed %#08x", ErrCorrupt, m.ino, child, want, got)
			}
		}
	}
	// A hole from lblk up to limit.
	bm.Len = int(min(want, limit-uint64(lblk)))
	return nil
}

// mapLeaf answers from leaf node: the extent holding lblk, or the hole up
// to the next extent (or limit).
func (m *extentMapper) mapLeaf(bm *mpage.BlockMap, node []byte, h extentHeader, lblk uint32, want, limit uint64) {
	i := searchKeys(int(h.Entries), lblk, func(i int) uint32 { return leafAt(node, i).Block })
	if i >= 0 {
		x := leafAt(node, i)
		if end := uint64(x.Block) + uint64(x.Len); uint64(lblk) < end {
			n := min(want, end-uint64(lblk))
			bm.Len = int(n)
			if !x.Uninit {
				bm.Flags = mpage.Mapped
				bm.PBlock = x.Start + uint64(lblk-x.Block)
			}
			return
		}
	}
	if i+1 < int(h.Entries) {
		limit = min(limit, uint64(leafAt(node, i+1).Block))
	}
	bm.Len = int(min(want, limit-uint64(lblk)))
}

// searchKeys returns the last i in [0, n) with key(i) <= k, or -1. Keys are
// ascending (checked before use).
func searchKeys(n int, k uint32, key func(int) uint32) int {
	lo, hi := 0, n // invariant: key(<lo) <= k, key(>=hi) > k
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if key(mid) <= k {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo - 1
}

func (m *extentMapper) errf(level int, err error) error {
	return fmt.Errorf("ext: inode %d: extent tree level %d: %w", m.ino, level, err)
}
