package ext

import (
	"encoding/binary"
	"fmt"

	"github.com/mpaged/mpaged/mpage"
)

// The indirect mapper's write side: allocation (Create) and truncation.
// Both run with m.mu held exclusively. Pointers in i_block change in
// m.iblock (the inode is committed later, by whoever called the mapper);
// pointers in indirect blocks change in the metadata mapping.

// slot is where a block pointer lives: in i_block (blk 0) or in indirect
// block blk, at index idx.
type slot struct {
	blk uint64
	idx uint64
}

// readPtr returns the pointer at s.
func (m *indirectMapper) readPtr(s slot) (uint32, error) {
	if s.blk == 0 {
		return binary.LittleEndian.Uint32(m.iblock[4*s.idx:]), nil
	}
	var w [4]byte
	if err := m.v.readMeta(w[:], s.blk, int(s.idx)*4); err != nil {
		return 0, fmt.Errorf("ext: inode %d: indirect block %d: %w", m.ino, s.blk, err)
	}
	return binary.LittleEndian.Uint32(w[:]), nil
}

// setPtrs stores vals at consecutive slots from s.
func (m *indirectMapper) setPtrs(s slot, vals ...uint32) error {
	if s.blk == 0 {
		for i, val := range vals {
			binary.LittleEndian.PutUint32(m.iblock[4*(s.idx+uint64(i)):], val)
		}
		return nil
	}
	err := m.v.updateMeta(s.blk, func(b []byte) error {
		for i, val := range vals {
			binary.LittleEndian.PutUint32(b[4*(s.idx+uint64(i)):], val)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ext: inode %d: indirect block %d: %w", m.ino, s.blk, err)
	}
	return nil
}

// goal picks where the data block for file block b should go: right
// after the last block allocated if b follows it, else after the nearest
// non-zero pointer before b's slot in the deepest existing pointer array
// on its path (near), else after that array's indirect block, else the
// start of the inode's group (the seeds' ext2_find_goal / ext2_find_near).
func (m *indirectMapper) goal(b uint64, near slot) (uint64, error) {
	if m.lastPhys != 0 && b == m.lastLogical+1 {
		return m.lastPhys + 1, nil
	}
	for i := near.idx; i > 0; i-- {
		p, err := m.readPtr(slot{near.blk, i - 1})
		if err != nil {
			return 0, err
		}
		if p != 0 {
			return uint64(p) + 1, nil
		}
	}
	if near.blk != 0 {
		return near.blk + 1, nil
	}
	sb := m.v.sb
	return sb.groupFirstBlock((m.ino - 1) / sb.InodesPerGroup), nil
}

// create maps bm.Block, allocating if it is a hole: the indirect blocks
// its pointer needs, then between 1 and bm.Len data blocks (as many of
// the hole's blocks in the same pointer array as lie contiguous on the
// device from the goal). Mapped blocks are answered as a read would.
func (m *indirectMapper) create(bm *mpage.BlockMap) error {
	probe := mpage.BlockMap{Block: bm.Block, Len: bm.Len}
	if err := m.mapRead(&probe); err != nil {
		return err
	}
	if probe.Flags&mpage.Mapped != 0 {
		bm.Flags, bm.PBlock, bm.Len = probe.Flags, probe.PBlock, probe.Len
		return nil
	}
	want := uint64(max(bm.Len, 1))
	offs, depth, ok := m.path(bm.Block)
	if !ok {
		return fmt.Errorf("%w: inode %d: file block %d past the triple-indirect range", ErrTooLarge, m.ino, bm.Block)
	}
	// Walk down to the first zero pointer: chain[k] is the slot of the
	// level-k pointer; levels past missing have no array yet.
	var chain [4]slot
	chain[0] = slot{0, offs[0]}
	missing := -1
	for k := 0; k <= depth; k++ {
		p, err := m.readPtr(chain[k])
		if err != nil {
			return err
		}
		if p == 0 {
			missing = k
			break
		}
		if k < depth {
			if err := m.checkPtr(p, 1, bm.Block); err != nil {
				return err
			}
			chain[k+1] = slot{uint64(p), offs[k+1]}
		}
	}
	if missing < 0 {
		return fmt.Errorf("%w: inode %d: file block %d both mapped and a hole", ErrCorrupt, m.ino, bm.Block)
	}
	nInd := depth - missing // indirect blocks to allocate
	final := chain[depth]   // valid only when nInd == 0
	arrLen := uint64(nDirect)
	if depth > 0 {
		arrLen = m.ptrs
	}
	idx := offs[depth]
	nData := min(want, arrLen-idx)
	if nInd == 0 && nData > 1 {
		// The array exists: the hole ends at its next mapped pointer.
		var raw []byte
		if final.blk == 0 {
			raw = m.iblock[4*idx : 4*(idx+nData)]
		} else {
			buf := m.v.getBlockBuf()
			defer m.v.putBlockBuf(buf)
			raw = buf[:4*nData]
			if err := m.v.readMeta(raw, final.blk, int(idx)*4); err != nil {
				return fmt.Errorf("ext: inode %d: indirect block %d: %w", m.ino, final.blk, err)
			}
		}
		for k := uint64(1); k < nData; k++ {
			if binary.LittleEndian.Uint32(raw[4*k:]) != 0 {
				nData = k
				break
			}
		}
	}
	goal, err := m.goal(bm.Block, chain[missing])
	if err != nil {
		return err
	}

	// Indirect blocks first, at the goal, then the data after them.
	v := m.v
	var ind []uint64
	undo := func() {
		for _, b := range ind {
			if err := v.freeBlockRange(b, 1); err != nil {
				v.logf("ext: inode %d: undoing allocation of block %d: %v", m.ino, b, err)
			}
		}
	}
	for len(ind) < nInd {
		blk, got, err := v.allocBlocks(goal, nInd-len(ind))
		if err != nil {
			undo()
			return fmt.Errorf("ext: inode %d: indirect block for file block %d: %w", m.ino, bm.Block, err)
		}
		for i := range got {
			ind = append(ind, blk+uint64(i))
		}
		goal = blk + uint64(got)
	}
	dstart, dgot, err := v.allocBlocks(goal, int(nData))
	if err != nil {
		undo()
		return fmt.Errorf("ext: inode %d: file block %d: %w", m.ino, bm.Block, err)
	}
	if dstart+uint64(dgot) > 1<<32 {
		undo()
		_ = v.freeBlockRange(dstart, dgot)
		return fmt.Errorf("%w: inode %d: block %d past 32-bit pointers", ErrTooLarge, m.ino, dstart)
	}
	// Nothing may write stale metadata over the new data blocks.
	v.meta.ForgetBlocks(dstart, dgot)

	// Fresh indirect blocks are zeroes; then link the chain top down and
	// fill in the data pointers.
	for _, b := range ind {
		if err := v.zeroMetaBlock(b); err != nil {
			return err
		}
	}
	if nInd > 0 {
		if err := m.setPtrs(chain[missing], uint32(ind[0])); err != nil {
			return err
		}
		for j := 1; j < nInd; j++ {
			if err := m.setPtrs(slot{ind[j-1], offs[missing+j]}, uint32(ind[j])); err != nil {
				return err
			}
		}
		final = slot{ind[nInd-1], idx}
	}
	vals := make([]uint32, dgot)
	for i := range vals {
		vals[i] = uint32(dstart) + uint32(i)
	}
	if err := m.setPtrs(slot{final.blk, idx}, vals...); err != nil {
		return err
	}
	m.sectors += uint64(nInd+dgot) * uint64(v.sb.BlockSize/512)
	m.lastLogical, m.lastPhys = bm.Block+uint64(dgot)-1, dstart+uint64(dgot)-1
	m.n.mapperAllocated(bm.Block)

	bm.Flags, bm.PBlock, bm.Len = mpage.Mapped|mpage.New, dstart, dgot
	if idx+uint64(dgot) == arrLen {
		bm.Flags |= mpage.Boundary
	}
	return nil
}

// blockFreer gathers blocks to free into contiguous runs.
type blockFreer struct {
	v          *Volume
	start      uint64
	n          int
	freed      uint64 // blocks freed so far
	firstError error
}

func (f *blockFreer) add(b uint64) {
	if f.n > 0 && b == f.start+uint64(f.n) {
		f.n++
		return
	}
	f.flush()
	f.start, f.n = b, 1
}

func (f *blockFreer) flush() {
	if f.n == 0 {
		return
	}
	if err := f.v.freeBlockRange(f.start, f.n); err != nil && f.firstError == nil {
		f.firstError = err
	}
	f.freed += uint64(f.n)
	f.n = 0
}

// truncate frees every block of the file from file block keep on: data
// blocks, and indirect blocks that map nothing below keep. The caller
// has dropped the file's cached pages past keep (they would otherwise
// write to freed blocks).
func (m *indirectMapper) truncate(keep uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := &blockFreer{v: m.v}
	le := binary.LittleEndian
	for i := min(keep, nDirect); i < nDirect; i++ {
		if p := le.Uint32(m.iblock[4*i:]); p != 0 {
			f.add(uint64(p))
			le.PutUint32(m.iblock[4*i:], 0)
		}
	}
	base, span := uint64(nDirect), m.ptrs
	var err error
	for level := 1; level <= 3 && err == nil; level++ {
		s := slot{0, nDirect + uint64(level) - 1}
		p := le.Uint32(m.iblock[4*s.idx:])
		switch {
		case p == 0:
		case keep <= base:
			err = m.freeTree(f, uint64(p), level)
			le.PutUint32(m.iblock[4*s.idx:], 0)
		case keep < base+span:
			err = m.truncTree(f, uint64(p), level, keep-base)
		}
		base += span
		span *= m.ptrs
	}
	f.flush()
	m.sectors -= min(m.sectors, f.freed*uint64(m.v.sb.BlockSize/512))
	if m.lastLogical >= keep {
		m.lastLogical, m.lastPhys = 0, 0
	}
	if err == nil {
		err = f.firstError
	}
	if err != nil {
		return fmt.Errorf("ext: inode %d: truncate: %w", m.ino, err)
	}
	return nil
}

// readPtrs reads indirect block blk's pointers.
func (m *indirectMapper) readPtrs(blk uint64) ([]uint32, error) {
	buf := m.v.getBlockBuf()
	defer m.v.putBlockBuf(buf)
	if err := m.v.readBlock(buf, blk); err != nil {
		return nil, fmt.Errorf("indirect block %d: %w", blk, err)
	}
	out := make([]uint32, m.ptrs)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(buf[4*i:])
	}
	return out, nil
}

// freeTree frees the subtree under pointer blk at level (0: a data block).
func (m *indirectMapper) freeTree(f *blockFreer, blk uint64, level int) error {
	if err := m.checkPtr(uint32(blk), 1, 0); err != nil {
		return err
	}
	if level > 0 {
		ptrs, err := m.readPtrs(blk)
		if err != nil {
			return err
		}
		for _, p := range ptrs {
			if p != 0 {
				if err := m.freeTree(f, uint64(p), level-1); err != nil {
					return err
				}
			}
		}
		// A dead indirect block: drop its pending writes.
		m.v.meta.ForgetBlocks(blk, 1)
	}
	f.add(blk)
	return nil
}

// truncTree frees what the indirect block blk (at level, covering
// ptrs^level file blocks) maps from relative file block keep on, and
// clears those pointers; the block itself stays.
func (m *indirectMapper) truncTree(f *blockFreer, blk uint64, level int, keep uint64) error {
	if err := m.checkPtr(uint32(blk), 1, 0); err != nil {
		return err
	}
	ptrs, err := m.readPtrs(blk)
	if err != nil {
		return err
	}
	child := uint64(1)
	for range level - 1 {
		child *= m.ptrs
	}
	c := keep / child
	if r := keep % child; r != 0 {
		// The child holding the new end keeps its head.
		if p := ptrs[c]; p != 0 && level > 1 {
			if err := m.truncTree(f, uint64(p), level-1, r); err != nil {
				return err
			}
		}
		c++
	}
	if c >= m.ptrs {
		return nil
	}
	for i := c; i < m.ptrs; i++ {
		if p := ptrs[i]; p != 0 {
			if err := m.freeTree(f, uint64(p), level-1); err != nil {
				return err
			}
		}
	}
	zeros := make([]uint32, m.ptrs-c)
	return m.setPtrs(slot{blk, c}, zeros...)
}
