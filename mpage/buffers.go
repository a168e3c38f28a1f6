package mpage

import (
	"cmp"
	"errors"
	"sync"

	"github.com/mpaged/mpaged/alloc"
)

// errNoBio fails a per-block I/O when not even the BioSet's reserve had a
// Bio (nothing in flight could free one).
var errNoBio = errors.New("mpage: no bio for per-block I/O")

type bufState uint8

const (
	bufMapped bufState = 1 << iota
	bufUptodate
	bufDirty
	bufNew
	bufErr
	// bufBoundary: the mapper answered Boundary for the block (it ends a
	// run after which mapping needs metadata I/O), kept so that a later
	// multipage write through these buffers honours it as a write that
	// maps the page does (the seeds' buffer_boundary).
	bufBoundary
)

// buffers is a page's per-block state, the seeds' buffer heads: once a page
// takes the per-block path it keeps them, and the multipage path treats
// such a page as confused (or, for writes, uses them for the mapping).
type buffers struct {
	mu     sync.Mutex // completions of a page's blocks may run at once
	err    error      // first per-block write error since the page's last write
	state  [maxBlocksPerPage]bufState
	pblock [maxBlocksPerPage]uint64
}

// ensureBuffers gives p per-block state whose uptodate and dirty bits
// follow the page's. The caller holds the page lock.
func (p *Page) ensureBuffers(bpp int) *buffers {
	if p.bufs != nil {
		return p.bufs
	}
	b := new(buffers)
	var s bufState
	if p.Has(Uptodate) {
		s |= bufUptodate
	}
	if p.Has(Dirty) {
		s |= bufDirty
	}
	for i := range bpp {
		b.state[i] = s
	}
	p.bufs = b
	return b
}

// setMapped records the mapper's answer for block i: its device block and
// whether it ends a Boundary run. The caller holds the page lock.
func (b *buffers) setMapped(i int, pblock uint64, flags MapFlags) {
	b.state[i] |= bufMapped
	b.state[i] &^= bufBoundary
	if flags&Boundary != 0 {
		b.state[i] |= bufBoundary
	}
	b.pblock[i] = pblock
}

// mapBlockUptodate records a block the mapper filled itself (the seeds'
// map_buffer_to_page). With one block per page the page is simply
// uptodate and needs no per-block state.
func (p *Page) mapBlockUptodate(block int, pblock uint64, flags MapFlags, bpp int) {
	if p.bufs == nil && bpp == 1 {
		p.set(Uptodate)
		return
	}
	b := p.ensureBuffers(bpp)
	b.setMapped(block, pblock, flags)
	b.state[block] |= bufUptodate
}

// addBlock makes a one-block Bio carry block i of p.
// Like add, it holds a reference on p until the completion is done.
func (b *Bio) addBlock(p *Page, i int) {
	bs := 1 << b.blkbits
	p.refs.Add(1)
	b.pages = append(b.pages, p)
	b.vecs = append(b.vecs, p.Data[i*bs:(i+1)*bs])
	b.block = uint8(i)
}

// readPageBlocks reads a locked page block by block (block_read_full_page):
// mapped blocks not yet uptodate are read one I/O each, holes and blocks
// past EOF are zeroed. The page is unlocked when its last block completes.
func (m *Mapping) readPageBlocks(p *Page) {
	bpp := m.blocksPerPage()
	blkbits := uint(m.blkbits)
	bs := 1 << blkbits
	b := p.ensureBuffers(bpp)
	// A new read attempt: an Error left by an earlier failed one is stale
	// (finishBlockRead reads Error as "a block failed to map this time").
	p.clear(Error)
	first := p.Index << (PageShift - blkbits)
	lastInFile := uint64((m.Size() + int64(bs) - 1) >> blkbits)
	var toRead [maxBlocksPerPage]int
	n := 0
	var mapErr *MapError // the first mapping failure of this attempt
	for i := range bpp {
		if b.state[i]&bufUptodate != 0 {
			continue
		}
		if b.state[i]&bufMapped == 0 {
			if blk := first + uint64(i); blk < lastInFile {
				bm := BlockMap{Block: blk, Len: 1, Data: p.Data[i*bs : (i+1)*bs]}
				if merr := m.mapBlocks(&bm); merr != nil {
					mapErr = cmp.Or(mapErr, merr)
				} else if bm.Flags&Mapped != 0 {
					b.setMapped(i, bm.PBlock, bm.Flags)
					if bm.Flags&MapUptodate != 0 {
						b.state[i] |= bufUptodate
						continue
					}
				}
			}
			if b.state[i]&bufMapped == 0 {
				clear(p.Data[i*bs : (i+1)*bs])
				if mapErr == nil {
					b.state[i] |= bufUptodate
				}
				continue
			}
		}
		toRead[n] = i
		n++
	}
	// The page's readers report this attempt's mapping failure, and no
	// other page's: it travels with the page.
	p.mapErr.Store(mapErr)
	if mapErr != nil {
		p.set(Error)
	}
	if n == 0 {
		p.finishBlockRead(bpp)
		return
	}
	p.pending.Store(int32(n))
	for _, i := range toRead[:n] {
		m.submitBlock(p, Read, i, b.pblock[i])
	}
}

// submitBlock sends one block of p to the device. The reserve and Wait keep
// the per-block path moving when the budget is exhausted: it is the path of
// last resort.
func (m *Mapping) submitBlock(p *Page, dir Dir, i int, pblock uint64) {
	bio := m.dev.allocBio(m, dir, bioBlock, pblock, 1, alloc.UseReserve|alloc.Wait)
	if bio == nil {
		m.dev.stats.Errors[dir].Add(1)
		p.blockDone(dir, i, errNoBio)
		return
	}
	bio.addBlock(p, i)
	bio.submit()
}

// finishBlockRead ends a per-block read: uptodate when every block is and
// nothing failed. Unlocks the page.
func (p *Page) finishBlockRead(bpp int) {
	b := p.bufs
	b.mu.Lock()
	ok := !p.Has(Error)
	for i := range bpp {
		if b.state[i]&(bufUptodate|bufErr) != bufUptodate {
			ok = false
		}
		b.state[i] &^= bufErr
	}
	b.mu.Unlock()
	if ok {
		p.set(Uptodate)
	} else {
		p.clear(Uptodate)
		p.set(Error)
	}
	p.Unlock()
}

// blockDone is a per-block completion. The page completes when its last
// pending block does, never earlier.
func (p *Page) blockDone(dir Dir, i int, err error) {
	b := p.bufs
	b.mu.Lock()
	if err != nil {
		b.state[i] |= bufErr
		if dir == Write {
			b.state[i] |= bufDirty
			if b.err == nil {
				b.err = err
			}
		}
	} else if dir == Read {
		b.state[i] |= bufUptodate
	}
	b.mu.Unlock()
	if p.pending.Add(-1) > 0 {
		return
	}
	m := p.mapping
	if dir == Read {
		if m != nil {
			p.finishBlockRead(m.blocksPerPage())
		} else {
			p.finishBlockRead(maxBlocksPerPage)
		}
		return
	}
	// Write: the first failed block's error stands for the page.
	b.mu.Lock()
	failed := b.err
	b.err = nil
	for j := range b.state {
		b.state[j] &^= bufErr
	}
	b.mu.Unlock()
	p.writeDone(failed)
}

// writePageBlocks writes a locked page block by block
// (block_write_full_page): dirty blocks not yet mapped are mapped
// (allocating) one at a time, each dirty block within EOF becomes its own
// I/O, and the page's writeback ends when the last one completes. The page is unlocked on
// return.
func (m *Mapping) writePageBlocks(p *Page) error {
	size := m.Size()
	endIndex := uint64(size >> PageShift)
	if p.Index >= endIndex {
		off := int(size & (PageSize - 1))
		if p.Index > endIndex || off == 0 {
			// Wholly past EOF: truncated under us; nothing to write.
			p.Unlock()
			return nil
		}
		p.zero(off, PageSize)
	}
	bpp := m.blocksPerPage()
	blkbits := uint(m.blkbits)
	// A page without per-block state is dirty as a whole. One that has it
	// says which blocks are dirty (SetBlocksDirty dirties some only: a
	// metadata page whose other blocks belong to file data must not
	// write them), so those, and only those, are written.
	whole := p.bufs == nil
	b := p.ensureBuffers(bpp)
	if whole {
		for i := range bpp {
			b.state[i] |= bufDirty | bufUptodate
		}
	}
	first := p.Index << (PageShift - blkbits)
	last := uint64((size - 1) >> blkbits)
	var toWrite [maxBlocksPerPage]int
	n := 0
	for i := range bpp {
		blk := first + uint64(i)
		if blk > last {
			b.state[i] &^= bufDirty
			continue
		}
		// Only a dirty block is mapped (allocated): a clean unmapped one
		// is a hole, zeroes in the page, and must stay one; allocating
		// it without writing it would make the file read whatever the
		// device holds there.
		if b.state[i]&(bufMapped|bufDirty) == bufDirty {
			bm := BlockMap{Block: blk, Len: 1, Create: true}
			if merr := m.mapBlocks(&bm); merr != nil {
				// Nothing of this page was sent: keep it dirty for a
				// retry and report the error (ENOSPC, EIO).
				m.writeFailed(p, merr)
				p.Unlock()
				return merr
			}
			if bm.Flags&New != 0 {
				m.forgetNew(bm.PBlock, 1)
			}
			b.setMapped(i, bm.PBlock, bm.Flags)
		}
		if b.state[i]&bufDirty != 0 {
			toWrite[n] = i
			n++
		}
	}
	m.setWriteback(p)
	for _, i := range toWrite[:n] {
		b.state[i] &^= bufDirty
	}
	p.pending.Store(int32(n))
	p.Unlock()
	if n == 0 {
		p.writeDone(nil)
		return nil
	}
	for _, i := range toWrite[:n] {
		m.submitBlock(p, Write, i, b.pblock[i])
	}
	return nil
}
