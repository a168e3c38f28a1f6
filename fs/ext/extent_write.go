package ext

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/mpaged/mpaged/mpage"
)

// extentWriter is the write side of an extent-mapped inode. Lookups go to
// the read side's extentMapper (under mu, shared); allocation and
// truncation (mu exclusive) work on the file's extents as a sorted list
// held in memory, then write the tree again from the list:
//
//   - the tree has the smallest depth that holds the list, its nodes
//     packed full left to right (the last of each level takes the rest),
//     root in i_block; e2fsck accepts any such shape;
//   - the tree blocks it had are reused, more are allocated (near the
//     start of the inode's group) or the surplus freed;
//   - every tree block is written whole (header, entries, zeroes, and the
//     metadata_csum tail) through the metadata mapping.
//
// Rewriting costs one pass over the file's extents per allocation; a file
// written in order keeps few extents (new blocks extend the last one), so
// this stays small where it matters. New extents are initialised; a write
// into an unwritten extent splits it and initialises the part written.
type extentWriter struct {
	em *extentMapper
	v  *Volume
	n  *node

	mu      sync.RWMutex
	loaded  bool
	exts    []extent // sorted by Block, disjoint
	tree    []uint64 // device blocks of the tree below the root
	sectors uint64   // i_blocks in 512-byte units
	// lastLogical/lastPhys: the last block allocated, the next goal.
	lastLogical, lastPhys uint64
}

// maxInitLen and maxUninitLen bound ee_len for initialised and unwritten
// extents.
const (
	maxInitLen   = 1 << 15
	maxUninitLen = 1<<15 - 1
)

func newExtentWriter(v *Volume, em *extentMapper, in *Inode) *extentWriter {
	return &extentWriter{em: em, v: v, sectors: in.Blocks}
}

func (w *extentWriter) end(x extent) uint64 { return uint64(x.Block) + uint64(x.Len) }

// MapBlocks implements mpage.BlockMapper.
func (w *extentWriter) MapBlocks(bm *mpage.BlockMap) error {
	if !bm.Create {
		w.mu.RLock()
		defer w.mu.RUnlock()
		return w.em.MapBlocks(bm)
	}
	if w.n == nil || w.v.readOnly {
		return fmt.Errorf("%w: inode %d: allocation", w.v.errReadOnly(), w.em.ino)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.create(bm)
}

func (w *extentWriter) setNode(n *node) { w.n = n }

func (w *extentWriter) maxBlocks() uint64 { return maxLogicalBlocks }

func (w *extentWriter) snapshot() ([iBlockLen]byte, uint64) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.em.root, w.sectors
}

// load reads the tree into exts and tree, once. The caller holds mu.
func (w *extentWriter) load() error {
	if w.loaded {
		return nil
	}
	w.exts, w.tree = nil, nil
	if err := w.loadNode(w.em.root[:], extentRootMax, -1, 0); err != nil {
		return err
	}
	w.loaded = true
	return nil
}

func (w *extentWriter) loadNode(node []byte, room, depth int, lo uint32) error {
	sb := w.v.sb
	h, err := parseExtentHeader(node, room, depth)
	if err != nil {
		return fmt.Errorf("ext: inode %d: extent tree: %w", w.em.ino, err)
	}
	if err := checkExtentNode(node, h, lo, sb.BlocksCount, uint64(sb.FirstDataBlock)); err != nil {
		return fmt.Errorf("ext: inode %d: extent tree: %w", w.em.ino, err)
	}
	if h.Depth == 0 {
		for i := range int(h.Entries) {
			x := leafAt(node, i)
			if n := len(w.exts); n > 0 && uint64(x.Block) < w.end(w.exts[n-1]) {
				return fmt.Errorf("%w: inode %d: extent at file block %d overlaps the one before", ErrCorrupt, w.em.ino, x.Block)
			}
			w.exts = append(w.exts, x)
		}
		return nil
	}
	bs := sb.BlockSize
	buf := make([]byte, bs)
	for i := range int(h.Entries) {
		key, child := indexAt(node, i)
		if err := w.v.readBlock(buf, child); err != nil {
			return fmt.Errorf("ext: inode %d: extent block %d: %w", w.em.ino, child, err)
		}
		w.tree = append(w.tree, child)
		if err := w.loadNode(buf, (bs-extentHeaderLen)/extentEntryLen, int(h.Depth)-1, key); err != nil {
			return err
		}
	}
	return nil
}

// find returns the index of the last extent starting at or before b, or -1.
func (w *extentWriter) find(b uint64) int {
	return searchKeys(len(w.exts), uint32(b), func(i int) uint32 { return w.exts[i].Block })
}

// goal is where the data for file block b should go: right after the last
// block allocated if b follows it, else at the device block b would have
// if the extent before it went on, else the start of the inode's group.
func (w *extentWriter) goal(b uint64, prev int) uint64 {
	if w.lastPhys != 0 && b == w.lastLogical+1 {
		return w.lastPhys + 1
	}
	if prev >= 0 {
		x := w.exts[prev]
		return x.Start + (b - uint64(x.Block))
	}
	sb := w.v.sb
	return sb.groupFirstBlock((w.em.ino - 1) / sb.InodesPerGroup)
}

// create maps bm.Block, allocating if it is a hole, and initialising if it
// is in an unwritten extent. The caller holds mu.
func (w *extentWriter) create(bm *mpage.BlockMap) error {
	if err := w.load(); err != nil {
		return err
	}
	b := bm.Block
	if b >= maxLogicalBlocks {
		return fmt.Errorf("%w: inode %d: file block %d past 2^32", ErrTooLarge, w.em.ino, b)
	}
	want := min(uint64(max(bm.Len, 1)), maxLogicalBlocks-b)
	i := w.find(b)
	if i >= 0 && b < w.end(w.exts[i]) && !w.exts[i].Uninit {
		x := w.exts[i]
		bm.Flags, bm.PBlock, bm.Len = mpage.Mapped, x.Start+(b-uint64(x.Block)), int(min(want, w.end(x)-b))
		return nil
	}
	old := slices.Clone(w.exts) // to undo with
	if i >= 0 && b < w.end(w.exts[i]) {
		x := w.exts[i]
		n := min(want, w.end(x)-b)
		pb := x.Start + (b - uint64(x.Block))
		// Split the unwritten extent around [b, b+n), which becomes
		// initialised.
		var parts []extent
		if uint64(x.Block) < b {
			parts = append(parts, extent{Block: x.Block, Len: uint32(b - uint64(x.Block)), Start: x.Start, Uninit: true})
		}
		parts = append(parts, extent{Block: uint32(b), Len: uint32(n), Start: pb})
		if e := w.end(x); b+n < e {
			parts = append(parts, extent{Block: uint32(b + n), Len: uint32(e - b - n), Start: pb + n, Uninit: true})
		}
		w.exts = slices.Replace(w.exts, i, i+1, parts...)
		if err := w.store(); err != nil {
			w.exts = old
			return err
		}
		w.n.mapperAllocated(b)
		bm.Flags, bm.PBlock, bm.Len = mpage.Mapped|mpage.New, pb, int(n)
		return nil
	}
	// A hole up to the next extent.
	limit := uint64(maxLogicalBlocks)
	if i+1 < len(w.exts) {
		limit = uint64(w.exts[i+1].Block)
	}
	n := min(want, limit-b, maxInitLen)
	v := w.v
	start, got, err := v.allocBlocks(w.goal(b, i), int(n))
	if err != nil {
		return fmt.Errorf("ext: inode %d: file block %d: %w", w.em.ino, b, err)
	}
	if i >= 0 {
		if x := &w.exts[i]; !x.Uninit && w.end(*x) == b && x.Start+uint64(x.Len) == start && uint64(x.Len)+uint64(got) <= maxInitLen {
			x.Len += uint32(got)
		} else {
			i = -2 // insert below
		}
	}
	if i < 0 {
		at := w.find(b) + 1
		w.exts = slices.Insert(w.exts, at, extent{Block: uint32(b), Len: uint32(got), Start: start})
	}
	if err := w.store(); err != nil {
		w.exts = old
		if ferr := v.freeBlockRange(start, got); ferr != nil {
			v.logf("ext: inode %d: undoing allocation of blocks %d+%d: %v", w.em.ino, start, got, ferr)
		}
		return err
	}
	v.meta.ForgetBlocks(start, got)
	w.sectors += uint64(got) * uint64(v.sb.BlockSize/512)
	w.lastLogical, w.lastPhys = b+uint64(got)-1, start+uint64(got)-1
	w.n.mapperAllocated(b)
	bm.Flags, bm.PBlock, bm.Len = mpage.Mapped|mpage.New, start, got
	return nil
}

// truncate frees every block from file block keep on.
func (w *extentWriter) truncate(keep uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.load(); err != nil {
		return err
	}
	f := &blockFreer{v: w.v}
	out := w.exts[:0]
	for _, x := range w.exts {
		switch e := w.end(x); {
		case e <= keep:
			out = append(out, x)
		case uint64(x.Block) >= keep:
			for k := range uint64(x.Len) {
				f.add(x.Start + k)
			}
		default:
			cut := keep - uint64(x.Block)
			for k := cut; k < uint64(x.Len); k++ {
				f.add(x.Start + k)
			}
			x.Len = uint32(cut)
			out = append(out, x)
		}
	}
	w.exts = out
	f.flush()
	w.sectors -= min(w.sectors, f.freed*uint64(w.v.sb.BlockSize/512))
	if w.lastLogical >= keep {
		w.lastLogical, w.lastPhys = 0, 0
	}
	err := w.store()
	if err == nil {
		err = f.firstError
	}
	if err != nil {
		return fmt.Errorf("ext: inode %d: truncate: %w", w.em.ino, err)
	}
	return nil
}

// putExtentHeader writes a node header.
func putExtentHeader(b []byte, entries, max, depth int) {
	le := binary.LittleEndian
	le.PutUint16(b[0:], extentMagic)
	le.PutUint16(b[2:], uint16(entries))
	le.PutUint16(b[4:], uint16(max))
	le.PutUint16(b[6:], uint16(depth))
	le.PutUint32(b[8:], 0)
}

// putLeaf writes leaf entry i.
func putLeaf(b []byte, i int, x extent) {
	le := binary.LittleEndian
	e := b[extentHeaderLen+i*extentEntryLen:]
	le.PutUint32(e[0:], x.Block)
	n := uint16(x.Len)
	if x.Uninit {
		n += uninitExtentBase
	}
	le.PutUint16(e[4:], n)
	le.PutUint16(e[6:], uint16(x.Start>>32))
	le.PutUint32(e[8:], uint32(x.Start))
}

// putIndex writes index entry i.
func putIndex(b []byte, i int, key uint32, child uint64) {
	le := binary.LittleEndian
	e := b[extentHeaderLen+i*extentEntryLen:]
	le.PutUint32(e[0:], key)
	le.PutUint32(e[4:], uint32(child))
	le.PutUint16(e[8:], uint16(child>>32))
	le.PutUint16(e[10:], 0)
}

// store writes the tree for exts: root in the mapper's copy of i_block
// (committed with the inode), blocks through the metadata mapping. On
// error (no space for tree blocks) nothing changed. The caller holds mu.
func (w *extentWriter) store() error {
	v := w.v
	sb := v.sb
	bs := sb.BlockSize
	per := (bs - extentHeaderLen) / extentEntryLen
	// counts[k] is how many nodes level k (0: leaves) has below the root.
	var counts []int
	if len(w.exts) > extentRootMax {
		c := (len(w.exts) + per - 1) / per
		counts = append(counts, c)
		for c > extentRootMax {
			c = (c + per - 1) / per
			counts = append(counts, c)
		}
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	blocks := w.tree
	var fresh []uint64
	for len(blocks)+len(fresh) < total {
		goal := sb.groupFirstBlock((w.em.ino - 1) / sb.InodesPerGroup)
		start, got, err := v.allocBlocks(goal, total-len(blocks)-len(fresh))
		if err != nil {
			for _, b := range fresh {
				_ = v.freeBlockRange(b, 1)
			}
			return fmt.Errorf("ext: inode %d: extent tree block: %w", w.em.ino, err)
		}
		for k := range got {
			fresh = append(fresh, start+uint64(k))
		}
	}
	for _, b := range fresh {
		if err := v.zeroMetaBlock(b); err != nil {
			return err
		}
	}
	blocks = append(slices.Clone(blocks), fresh...)
	surplus := blocks[total:]
	blocks = blocks[:total]

	// Level by level from the leaves: each node's first key and block.
	type nodeRef struct {
		key uint32
		blk uint64
	}
	seed := w.em.seed
	writeNode := func(blk uint64, fill func(b []byte)) error {
		return v.updateMeta(blk, func(b []byte) error {
			clear(b)
			fill(b)
			if sb.MetadataCsum() {
				h, _ := parseExtentHeader(b, per, -1)
				off := extentTailOff(h)
				binary.LittleEndian.PutUint32(b[off:], crc32c(seed, b[:off]))
			}
			return nil
		})
	}
	var below []nodeRef
	next := 0
	for level, c := range counts {
		var refs []nodeRef
		for k := range c {
			blk := blocks[next]
			next++
			var err error
			if level == 0 {
				xs := w.exts[k*per : min((k+1)*per, len(w.exts))]
				refs = append(refs, nodeRef{xs[0].Block, blk})
				err = writeNode(blk, func(b []byte) {
					putExtentHeader(b, len(xs), per, 0)
					for i, x := range xs {
						putLeaf(b, i, x)
					}
				})
			} else {
				ch := below[k*per : min((k+1)*per, len(below))]
				refs = append(refs, nodeRef{ch[0].key, blk})
				err = writeNode(blk, func(b []byte) {
					putExtentHeader(b, len(ch), per, level)
					for i, r := range ch {
						putIndex(b, i, r.key, r.blk)
					}
				})
			}
			if err != nil {
				return err
			}
		}
		below = refs
	}
	var root [iBlockLen]byte
	if len(counts) == 0 {
		putExtentHeader(root[:], len(w.exts), extentRootMax, 0)
		for i, x := range w.exts {
			putLeaf(root[:], i, x)
		}
	} else {
		putExtentHeader(root[:], len(below), extentRootMax, len(counts))
		for i, r := range below {
			putIndex(root[:], i, r.key, r.blk)
		}
	}
	w.em.root = root
	w.tree = blocks
	unit := uint64(bs / 512)
	w.sectors += uint64(len(fresh)) * unit
	for _, b := range surplus {
		v.meta.ForgetBlocks(b, 1)
		if err := v.freeBlockRange(b, 1); err != nil {
			return err
		}
		w.sectors -= min(w.sectors, unit)
	}
	return nil
}
