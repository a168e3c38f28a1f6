package ext

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/mpaged/mpaged/mpage"
)

// indirectMapper maps file blocks through ext2/3-style block pointers:
// i_block[0..11] point at data, i_block[12] at a block of pointers (single
// indirect), [13] at a block of pointers to such blocks (double), [14] one
// level more (triple). A zero pointer is a hole, at any level.
//
// A call maps a run: from the asked block on, every following block whose
// pointer sits in the same pointer array (the direct area or one indirect
// block) and continues the device run. When the run reaches the array's
// last pointer, Boundary is set: the next block needs another indirect
// block, so the engine submits the data it has first (the seeds' ext2
// order: data 0..11, then the indirect block, then 12...).
//
// With Create (the write side, indirect_write.go) it allocates what a hole
// needs: the missing indirect blocks first, at the goal (right after the
// data block before them), then up to Len data blocks after those, and
// answers New.
type indirectMapper struct {
	v    *Volume
	ino  uint32
	ptrs uint64 // pointers per block
	n    *node  // the inode's node: told when allocation changes the inode

	// mu guards what allocation and truncation change: reads take it
	// shared, Create and truncate exclusively.
	mu     sync.RWMutex
	iblock [iBlockLen]byte // i_block: 15 little-endian pointers
	// sectors is i_blocks in 512-byte units: data, indirect blocks and
	// the xattr block.
	sectors uint64
	// lastLogical and lastPhys are the last block allocated (file block
	// and device block): the next file block's goal is lastPhys+1, so a
	// sequential writer gets contiguous blocks. lastPhys 0: none yet.
	lastLogical, lastPhys uint64
}

func newIndirectMapper(v *Volume, in *Inode) *indirectMapper {
	return &indirectMapper{v: v, ino: in.Ino, iblock: in.Block, ptrs: uint64(v.sb.BlockSize / 4), sectors: in.Blocks}
}

// writeMapper is a mapper the write side allocates and truncates with.
type writeMapper interface {
	mpage.BlockMapper
	// snapshot returns i_block and i_blocks (512-byte units) as the
	// mapper has them, for the inode's next commit.
	snapshot() ([iBlockLen]byte, uint64)
	// truncate frees every block from file block keep on; the caller
	// has dropped the file's cached pages there.
	truncate(keep uint64) error
	// setNode tells the mapper its inode's node.
	setNode(n *node)
	// maxBlocks is how many file blocks it can address.
	maxBlocks() uint64
}

func (m *indirectMapper) setNode(n *node) { m.n = n }

func (m *indirectMapper) maxBlocks() uint64 {
	return min(indirectMaxBlocks(m.ptrs), 1<<32)
}

// snapshot returns i_block and i_blocks as the mapper has them.
func (m *indirectMapper) snapshot() ([iBlockLen]byte, uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.iblock, m.sectors
}

// indirectMaxBlocks is how many file blocks the pointers can address.
func indirectMaxBlocks(ptrs uint64) uint64 {
	return nDirect + ptrs + ptrs*ptrs + ptrs*ptrs*ptrs
}

// path returns the slot to follow at each level for file block b: first the
// i_block slot, then one index per indirect level. ok is false past the
// triple-indirect range.
func (m *indirectMapper) path(b uint64) (offs [4]uint64, depth int, ok bool) {
	p := m.ptrs
	if b < nDirect {
		return [4]uint64{b}, 0, true
	}
	b -= nDirect
	if b < p {
		return [4]uint64{nDirect, b}, 1, true
	}
	b -= p
	if b < p*p {
		return [4]uint64{nDirect + 1, b / p, b % p}, 2, true
	}
	b -= p * p
	if b < p*p*p {
		return [4]uint64{nDirect + 2, b / (p * p), b / p % p, b % p}, 3, true
	}
	return offs, 0, false
}

func (m *indirectMapper) checkPtr(ptr uint32, n uint64, fileBlock uint64) error {
	sb := m.v.sb
	if uint64(ptr) < uint64(sb.FirstDataBlock) || uint64(ptr) >= sb.BlocksCount || n > sb.BlocksCount-uint64(ptr) {
		return fmt.Errorf("%w: inode %d: file block %d: pointer to block %d (+%d) outside the volume", ErrCorrupt, m.ino, fileBlock, ptr, n)
	}
	return nil
}

// MapBlocks implements mpage.BlockMapper: reads here, Create in
// indirect_write.go.
func (m *indirectMapper) MapBlocks(bm *mpage.BlockMap) error {
	if bm.Create {
		if m.n == nil || m.v.readOnly {
			return fmt.Errorf("%w: inode %d: allocation", m.v.errReadOnly(), m.ino)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.create(bm)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.mapRead(bm)
}

// mapRead answers a lookup without allocation. The caller holds mu.
func (m *indirectMapper) mapRead(bm *mpage.BlockMap) error {
	want := uint64(max(bm.Len, 1))
	bm.Flags, bm.PBlock, bm.Len = 0, 0, 1
	offs, depth, ok := m.path(bm.Block)
	if !ok {
		return fmt.Errorf("%w: inode %d: file block %d past the triple-indirect range", ErrCorrupt, m.ino, bm.Block)
	}
	p := m.ptrs
	// Walk the indirect levels down to the array holding the data
	// pointer. At level k the pointer in hand covers p^(depth-k+1)...
	// blocks; a zero one is a hole reaching to the end of what it covers.
	ptr := binary.LittleEndian.Uint32(m.iblock[4*offs[0]:])
	for k := 1; k <= depth; k++ {
		if ptr == 0 {
			// The subtree under this pointer covers p^(depth-k+1) blocks;
			// we sit at index within it.
			span, within := uint64(1), uint64(0)
			for j := depth; j >= k; j-- {
				within += offs[j] * span
				span *= p
			}
			bm.Len = int(min(want, span-within))
			return nil
		}
		if err := m.checkPtr(ptr, 1, bm.Block); err != nil {
			return err
		}
		if k == depth {
			break
		}
		var w [4]byte
		if err := m.v.readMeta(w[:], uint64(ptr), int(offs[k])*4); err != nil {
			return fmt.Errorf("ext: inode %d: indirect block %d: %w", m.ino, ptr, err)
		}
		ptr = binary.LittleEndian.Uint32(w[:])
	}

	// The final array: the direct area, or the indirect block ptr.
	idx := offs[depth]
	if depth == 0 {
		n := min(want, nDirect-idx)
		return m.run(bm, m.iblock[4*idx:4*(idx+n)], idx, nDirect)
	}
	n := min(want, p-idx)
	buf := m.v.getBlockBuf()
	defer m.v.putBlockBuf(buf)
	raw := buf[:n*4]
	if err := m.v.readMeta(raw, uint64(ptr), int(idx)*4); err != nil {
		return fmt.Errorf("ext: inode %d: indirect block %d: %w", m.ino, ptr, err)
	}
	return m.run(bm, raw, idx, p)
}

// run maps the longest run from the first of the little-endian pointers in
// raw (which start at idx in an array of arrLen): contiguous device blocks,
// or consecutive zero pointers.
func (m *indirectMapper) run(bm *mpage.BlockMap, raw []byte, idx, arrLen uint64) error {
	le := binary.LittleEndian
	n := uint64(len(raw) / 4)
	first := le.Uint32(raw)
	count := uint64(1)
	if first == 0 {
		for count < n && le.Uint32(raw[4*count:]) == 0 {
			count++
		}
		bm.Len = int(count)
		return nil
	}
	for count < n && uint64(le.Uint32(raw[4*count:])) == uint64(first)+count {
		count++
	}
	if err := m.checkPtr(first, count, bm.Block); err != nil {
		return err
	}
	bm.Flags = mpage.Mapped
	bm.PBlock = uint64(first)
	bm.Len = int(count)
	if idx+count == arrLen {
		bm.Flags |= mpage.Boundary
	}
	return nil
}
