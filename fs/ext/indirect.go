package ext

import (
	"encoding/binary"
	"fmt"

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
type indirectMapper struct {
	v      *Volume
	ino    uint32
	iblock [iBlockLen]byte // i_block: 15 little-endian pointers
	ptrs   uint64          // pointers per block
}

func newIndirectMapper(v *Volume, in *Inode) *indirectMapper {
	return &indirectMapper{v: v, ino: in.Ino, iblock: in.Block, ptrs: uint64(v.sb.BlockSize / 4)}
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

// MapBlocks implements mpage.BlockMapper for reads.
func (m *indirectMapper) MapBlocks(bm *mpage.BlockMap) error {
	if bm.Create {
		return fmt.Errorf("%w: inode %d: allocation", ErrReadOnly, m.ino)
	}
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
