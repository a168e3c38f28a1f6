package mpage

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mpaged/mpaged/alloc"

	"github.com/mpaged/mpaged/internal/invariants"
)

// SyncMode says what a writeback is for.
type SyncMode uint8

const (
	// SyncNone is memory cleaning: pages under writeback are skipped, the
	// walk starts at the mapping's writeback index and wraps.
	SyncNone SyncMode = iota
	// SyncAll is data integrity (fsync): pages under writeback are waited
	// for and written again if dirty, the whole range is walked.
	SyncAll
)

// WritebackControl steers WritePages and reports what it did.
type WritebackControl struct {
	SyncMode SyncMode
	// NrToWrite stops the walk after that many pages; <= 0 is no limit.
	NrToWrite int64
	// RangeStart and RangeEnd (inclusive) limit the walk to a byte range;
	// both zero means the whole file (cyclic for SyncNone).
	RangeStart, RangeEnd int64
	// Nonblocking stops the walk when the device is congested.
	Nonblocking bool

	// Written counts pages sent (multipage or per-block).
	Written int64
	// EncounteredCongestion: a nonblocking walk stopped on congestion.
	EncounteredCongestion bool
}

// BlockForgetter is implemented by mappers whose volume caches metadata
// blocks: ForgetBlock drops any cached copy of a device block that was just
// allocated to file data (New), so stale metadata is never written over it.
type BlockForgetter interface {
	ForgetBlock(pblock uint64)
}

// BoundaryWriter is implemented by mappers that set Boundary: after a write
// Bio ending at the boundary data block pblock is submitted,
// WriteBoundary starts the write of the metadata block that follows it, so
// data and its indirect block reach the device in one sweep.
type BoundaryWriter interface {
	WriteBoundary(pblock uint64)
}

// writeCtx is the state of one WritePages walk (the seeds' mpage_data).
type writeCtx struct {
	m              *Mapping
	bio            *Bio
	lastBlockInBio uint64
	ext            extent
	bm             BlockMap
	blocks         [maxBlocksPerPage]uint64
	// runPages is how many dirty pages, starting with the one being
	// written, the walk has in a row: the mapper may allocate for all of
	// them in one call.
	runPages int
}

var writeCtxPool = sync.Pool{New: func() any { return new(writeCtx) }}

func getWriteCtx(m *Mapping) *writeCtx {
	wc := writeCtxPool.Get().(*writeCtx)
	wc.m = m
	return wc
}

func putWriteCtx(wc *writeCtx) {
	if wc.bio != nil {
		wc.bio = wc.bio.submit()
	}
	*wc = writeCtx{}
	writeCtxPool.Put(wc)
}

// pagevecSize is how many tagged pages a walk takes per lookup.
const pagevecSize = 16

// WritePages writes the mapping's dirty pages (mpage_writepages over
// write_cache_pages): runs of pages contiguous on the device go out as
// multipage Bios, confused pages block by block. It returns the first
// error a page's write setup hit (mapping failures such as ENOSPC); I/O
// errors arrive later and show in Err.
func (m *Mapping) WritePages(wbc *WritebackControl) error {
	if wbc.Nonblocking && m.dev.Congested() {
		wbc.EncounteredCongestion = true
		return nil
	}
	var index, end uint64 = 0, ^uint64(0)
	// cycled: the walk covers the whole range in one pass, no wrap needed
	// (it starts at 0, is SyncAll, or has a range).
	cycled, isRange := true, false
	if wbc.SyncMode == SyncNone {
		m.mu.Lock()
		index = m.writebackIndex
		m.mu.Unlock()
		cycled = index == 0
	}
	start := index
	if wbc.RangeStart != 0 || wbc.RangeEnd != 0 {
		if wbc.RangeStart < 0 || wbc.RangeEnd < wbc.RangeStart {
			return fmt.Errorf("mpage: %s: %w: writeback range %d..%d", m.name, ErrRange, wbc.RangeStart, wbc.RangeEnd)
		}
		index, end = uint64(wbc.RangeStart>>PageShift), uint64(wbc.RangeEnd>>PageShift)
		isRange, cycled = true, true
	}
	wc := getWriteCtx(m)
	defer putWriteCtx(wc)
	var ret error
	done := false
	var batch [pagevecSize]*Page
	for {
		for !done && index <= end {
			n := m.lookupTag(m.dirty, index, end, batch[:])
			if n == 0 {
				break
			}
			for i, p := range batch[:n] {
				if done {
					p.Release()
					continue
				}
				index = p.Index + 1
				wc.runPages = dirtyRun(batch[i:n])
				err := wc.writeOne(p, wbc)
				p.Release()
				if err != nil && ret == nil {
					ret = err
				}
				if err != nil || (wbc.NrToWrite > 0 && wbc.Written >= wbc.NrToWrite) {
					done = true
				}
				if wbc.Nonblocking && m.dev.Congested() {
					wbc.EncounteredCongestion = true
					done = true
				}
			}
			if index == 0 { // wrapped past the largest index
				break
			}
		}
		if cycled || done {
			break
		}
		// Started mid-file and reached the end with budget left: wrap to
		// the head, up to where this walk started (pages written in the
		// tail pass and redirtied since wait for the next walk).
		cycled, index, end = true, 0, start-1
	}
	if !isRange {
		m.mu.Lock()
		m.writebackIndex = index
		m.mu.Unlock()
	}
	return ret
}

// dirtyRun counts the pages at the head of pages with consecutive indices.
func dirtyRun(pages []*Page) int {
	n := 1
	for n < len(pages) && pages[n].Index == pages[n-1].Index+1 {
		n++
	}
	return n
}

// writeOne takes one tagged page through the walk's checks and writes it.
func (wc *writeCtx) writeOne(p *Page, wbc *WritebackControl) error {
	m := wc.m
	if !p.TryLock() {
		// About to sleep on the page: send the Bio this walk has built
		// first, as Linux flushes a task's plug before it sleeps. Its
		// pages are under writeback; whoever holds this lock may be
		// waiting for one of them (truncate, fsync, another walk
		// sleeping on a page of ours), and would wait forever.
		wc.flush()
		p.Lock()
	}
	if p.mapping != m {
		p.Unlock()
		return nil
	}
	if wbc.SyncMode == SyncAll && p.Has(Writeback) {
		wc.flush() // the same, before sleeping on writeback
		p.WaitWriteback()
	}
	if p.Has(Writeback) || !m.clearDirtyForIO(p) {
		p.Unlock()
		return nil
	}
	wbc.Written++
	return wc.writePage(p)
}

// WritePage writes one locked page now, whether or not it is dirty (a
// metadata block the file system wants on the device), and unlocks it. It
// waits for a write already in flight on the page first.
func (m *Mapping) WritePage(p *Page) error {
	p.WaitWriteback()
	m.clearDirtyForIO(p)
	wc := getWriteCtx(m)
	wc.runPages = 1
	err := wc.writePage(p)
	putWriteCtx(wc)
	return err
}

// writePage is __mpage_writepage: p is locked, uptodate and no longer
// tagged dirty. It joins the walk's Bio if its blocks are contiguous and
// follow the Bio's last block, else starts a new one, or falls back to the
// per-block path. p is unlocked on return.
func (wc *writeCtx) writePage(p *Page) error {
	m := wc.m
	if invariants.Enabled {
		invariants.Check(p.Has(Locked|Uptodate) && !p.Has(Writeback), "page %d: write of a page not locked, not uptodate or already under writeback (flags %v)", p.Index, p.Flags())
	}
	bpp := m.blocksPerPage()
	blkbits := uint(m.blkbits)
	size := m.Size()
	firstUnmapped := bpp
	boundary := false
	var boundaryBlock uint64

	if b := p.bufs; b != nil {
		for i := range bpp {
			s := b.state[i]
			if s&bufMapped == 0 {
				if s&bufDirty != 0 && uint64(i)+p.Index<<(PageShift-blkbits) <= uint64((size-1)>>blkbits) {
					return wc.confused(p, ReasonBuffers)
				}
				if firstUnmapped == bpp {
					firstUnmapped = i
				}
				continue
			}
			if firstUnmapped != bpp {
				return wc.confused(p, ReasonHole)
			}
			if s&(bufDirty|bufUptodate) != bufDirty|bufUptodate {
				return wc.confused(p, ReasonNotDirty)
			}
			if i > 0 && b.pblock[i] != wc.blocks[i-1]+1 {
				return wc.confused(p, ReasonDiscontiguous)
			}
			wc.blocks[i] = b.pblock[i]
			// As below: what counts is whether the page's last
			// mapped block ends a Boundary run.
			boundary = s&bufBoundary != 0
			if boundary {
				boundaryBlock = b.pblock[i]
			}
		}
		if firstUnmapped == 0 {
			return wc.confused(p, ReasonBuffers)
		}
	} else {
		if size <= 0 {
			return wc.confused(p, ReasonEOF)
		}
		blockInFile := p.Index << (PageShift - blkbits)
		lastBlock := uint64((size - 1) >> blkbits)
		if blockInFile > lastBlock {
			return wc.confused(p, ReasonEOF)
		}
		pageBlock := 0
		for pageBlock < bpp {
			if !wc.ext.covers(blockInFile) {
				want := uint64(bpp-pageBlock) + uint64((wc.runPages-1)*bpp)
				want = min(want, lastBlock-blockInFile+1)
				bm := &wc.bm
				*bm = BlockMap{Block: blockInFile, Len: int(want), Create: true}
				m.dev.stats.MapCalls[Write].Add(1)
				err := m.mapper.MapBlocks(bm)
				if err == nil && bm.Flags&Mapped == 0 {
					err = errors.New("mpage: mapper left a block unmapped on create")
				}
				if err != nil {
					wc.ext.valid = false
					return wc.confused(p, ReasonMapError)
				}
				n := min(max(bm.Len, 1), int(want))
				wc.ext = extent{start: blockInFile, n: uint64(n), pblock: bm.PBlock, flags: bm.Flags, valid: true}
				if bm.Flags&New != 0 && m.forget != nil {
					for k := range uint64(n) {
						m.forget.ForgetBlock(bm.PBlock + k)
					}
				}
			}
			e := &wc.ext
			pb := e.pblock + (blockInFile - e.start)
			if pageBlock > 0 && pb != wc.blocks[pageBlock-1]+1 {
				return wc.confused(p, ReasonDiscontiguous)
			}
			wc.blocks[pageBlock] = pb
			pageBlock++
			boundary = e.flags&Boundary != 0 && blockInFile == e.start+e.n-1
			if boundary {
				boundaryBlock = pb
			}
			if blockInFile == lastBlock {
				break
			}
			blockInFile++
		}
		firstUnmapped = pageBlock
	}

	endIndex := uint64(size >> PageShift)
	if p.Index >= endIndex {
		// The page straddles EOF: what lies past it goes out as zeroes.
		off := int(size & (PageSize - 1))
		if p.Index > endIndex || off == 0 {
			return wc.confused(p, ReasonEOF)
		}
		p.zero(off, PageSize)
	}

	if wc.bio != nil && wc.lastBlockInBio != wc.blocks[0]-1 {
		wc.bio = wc.bio.submit()
	}
	length := firstUnmapped << blkbits
	for {
		if wc.bio == nil {
			wc.bio = m.dev.allocBio(m, Write, bioPages, wc.blocks[0], m.dev.maxVecs, alloc.MemAlloc)
			if wc.bio == nil {
				return wc.confused(p, ReasonAllocFailed)
			}
		}
		// The page goes into the Bio before its buffers are cleaned:
		// had it failed, the per-block path would still find them dirty.
		if wc.bio.add(p, length) {
			break
		}
		wc.bio = wc.bio.submit()
	}
	if b := p.bufs; b != nil {
		for i := range firstUnmapped {
			b.state[i] &^= bufDirty
		}
	}
	m.setWriteback(p)
	p.Unlock()
	if boundary || firstUnmapped != bpp {
		wc.bio = wc.bio.submit()
		if boundary && m.boundary != nil {
			m.boundary.WriteBoundary(boundaryBlock)
		}
	} else {
		wc.lastBlockInBio = wc.blocks[bpp-1]
	}
	return nil
}

// flush submits the Bio being built, if any.
func (wc *writeCtx) flush() {
	if wc.bio != nil {
		wc.bio = wc.bio.submit()
	}
}

// confused sends what is pending and writes p block by block.
func (wc *writeCtx) confused(p *Page, why Reason) error {
	wc.m.dev.stats.Confused[Write][why].Add(1)
	if wc.bio != nil {
		wc.bio = wc.bio.submit()
	}
	return wc.m.writePageBlocks(p)
}
