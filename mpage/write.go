package mpage

import (
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

// writeCtx is the state of one WritePages walk (the seeds' mpage_data):
// the request builder and the run of dirty pages ahead.
type writeCtx struct {
	bioBuilder
	// runPages is how many dirty pages, starting with the one being
	// written, the walk has in a row: the mapper may allocate for all of
	// them in one call.
	runPages int
}

var writeCtxPool = sync.Pool{New: func() any { return new(writeCtx) }}

func getWriteCtx(m *Mapping) *writeCtx {
	wc := writeCtxPool.Get().(*writeCtx)
	wc.bioBuilder.m, wc.dir = m, Write
	return wc
}

func putWriteCtx(wc *writeCtx) {
	wc.flush()
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
			n := m.lookupTag(markDirty, index, end, batch[:])
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
		p.lock()
	}
	if p.mapping != m || p.pins.Load() != 0 {
		// Gone, or pinned by a journal until its transaction commits:
		// a pinned page stays dirty for a later walk.
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
// waits for a write already in flight on the page first. A page a journal
// has pinned (BlockRef.Pin) is not written.
func (m *Mapping) WritePage(p *Page) error {
	if p.pins.Load() != 0 {
		p.Unlock()
		return nil
	}
	p.WaitWriteback()
	m.clearDirtyForIO(p)
	wc := getWriteCtx(m)
	wc.runPages = 1
	err := wc.writePage(p)
	putWriteCtx(wc)
	return err
}

// pageRun is where the first n blocks of a page go: wc.blocks[:n], each
// the device block after the one before. boundary: the last of them ends
// a run the mapper marked Boundary, and boundaryBlock is it.
type pageRun struct {
	n             int
	boundary      bool
	boundaryBlock uint64
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
	size := m.Size()
	var run pageRun
	var why Reason
	var ok bool
	if p.bufs != nil {
		run, why, ok = wc.runFromBuffers(p, size)
	} else {
		run, why, ok = wc.mapRun(p, size)
	}
	if !ok {
		return wc.confused(p, why)
	}
	endIndex := uint64(size >> PageShift)
	if p.Index >= endIndex {
		// The page straddles EOF: what lies past it goes out as zeroes.
		off := int(size & (PageSize - 1))
		if p.Index > endIndex || off == 0 {
			// Wholly past EOF: only a page with per-block state gets
			// here (mapRun checks first), one i_size dropped below
			// while Truncate had yet to drop it. The per-block path
			// writes nothing of it.
			return wc.confused(p, ReasonEOF)
		}
		p.zero(off, PageSize)
	}
	return wc.queue(p, run)
}

// queue adds a mapped page to the walk's Bio, or to a new one, and starts
// its writeback. p is unlocked on return.
func (wc *writeCtx) queue(p *Page, run pageRun) error {
	m := wc.m
	wc.breakUnlessContiguous()
	// The page goes into the Bio before its buffers are cleaned: had it
	// failed, the per-block path would still find them dirty.
	if !wc.addPage(p, run.n<<m.blkbits, m.dev.maxVecs, alloc.MemAlloc) {
		return wc.confused(p, ReasonAllocFailed)
	}
	if b := p.bufs; b != nil {
		for i := range run.n {
			b.state[i] &^= bufDirty
		}
	}
	m.setWriteback(p)
	p.Unlock()
	bpp := m.blocksPerPage()
	wc.endPage(run.boundary || run.n != bpp, bpp-1)
	if run.boundary {
		m.writeBoundary(run.boundaryBlock)
	}
	return nil
}

// runFromBuffers takes a page's blocks from its per-block state (the
// seeds' page_has_buffers branch): every mapped block must be dirty and
// the mapped ones must lead, contiguous; a dirty unmapped block within
// EOF needs the per-block path to map it. Otherwise why says which rule
// sends the page block by block.
func (wc *writeCtx) runFromBuffers(p *Page, size int64) (run pageRun, why Reason, ok bool) {
	b := p.bufs
	bpp := wc.m.blocksPerPage()
	blkbits := uint(wc.m.blkbits)
	lastBlock := uint64((size - 1) >> blkbits)
	firstUnmapped := bpp
	for i := range bpp {
		s := b.state[i]
		if s&bufMapped == 0 {
			if s&bufDirty != 0 && uint64(i)+p.Index<<(PageShift-blkbits) <= lastBlock {
				return run, ReasonBuffers, false
			}
			if firstUnmapped == bpp {
				firstUnmapped = i
			}
			continue
		}
		if firstUnmapped != bpp {
			return run, ReasonHole, false
		}
		// The seeds also send a block that is not uptodate this way.
		// None can be here: a page being written is Uptodate, and the
		// blocks of an Uptodate page all are (ensureBuffers copies the
		// page's state, a block read sets it, nothing clears it).
		if invariants.Enabled {
			invariants.Check(s&bufUptodate != 0, "page %d: block %d of an uptodate page is not uptodate", p.Index, i)
		}
		if s&bufDirty == 0 {
			return run, ReasonNotDirty, false
		}
		if i > 0 && b.pblock[i] != wc.blocks[i-1]+1 {
			return run, ReasonDiscontiguous, false
		}
		wc.blocks[i] = b.pblock[i]
		// As in mapRun: what counts is whether the page's last mapped
		// block ends a Boundary run.
		run.boundary = s&bufBoundary != 0
		if run.boundary {
			run.boundaryBlock = b.pblock[i]
		}
	}
	if firstUnmapped == 0 {
		// Nothing mapped, nothing dirty within EOF (a clean page the
		// file system writes, blocks it discarded): nothing for a Bio.
		return run, ReasonBuffers, false
	}
	run.n = firstUnmapped
	return run, 0, true
}

// mapRun maps a page without per-block state, allocating (the seeds'
// get_block loop, asking for the whole run of dirty pages at once and
// reusing a multi-block answer). Blocks past EOF are left out of the run.
func (wc *writeCtx) mapRun(p *Page, size int64) (run pageRun, why Reason, ok bool) {
	m := wc.m
	bpp := m.blocksPerPage()
	blkbits := uint(m.blkbits)
	if size <= 0 {
		return run, ReasonEOF, false
	}
	blockInFile := p.Index << (PageShift - blkbits)
	lastBlock := uint64((size - 1) >> blkbits)
	if blockInFile > lastBlock {
		return run, ReasonEOF, false
	}
	pageBlock := 0
	for pageBlock < bpp {
		if !wc.ext.covers(blockInFile) {
			if !wc.mapExtent(blockInFile, uint64(bpp-pageBlock), lastBlock) {
				return run, ReasonMapError, false
			}
		}
		e := &wc.ext
		pb := e.pblock + (blockInFile - e.start)
		if pageBlock > 0 && pb != wc.blocks[pageBlock-1]+1 {
			return run, ReasonDiscontiguous, false
		}
		wc.blocks[pageBlock] = pb
		pageBlock++
		run.boundary = e.flags&Boundary != 0 && blockInFile == e.start+e.n-1
		if run.boundary {
			run.boundaryBlock = pb
		}
		if blockInFile == lastBlock {
			break
		}
		blockInFile++
	}
	run.n = pageBlock
	return run, 0, true
}

// mapExtent asks the mapper, allocating, for file block blockInFile and
// the rest of the walk's run of dirty pages from there (left blocks of
// this page, then whole pages), up to lastBlock, and keeps the answer in
// wc.ext. False, with wc.ext invalid, when the mapper failed.
func (wc *writeCtx) mapExtent(blockInFile, left, lastBlock uint64) bool {
	m := wc.m
	want := left + uint64((wc.runPages-1)*m.blocksPerPage())
	want = min(want, lastBlock-blockInFile+1)
	bm := &wc.bm
	*bm = BlockMap{Block: blockInFile, Len: int(want), Create: true}
	if merr := m.mapBlocks(bm); merr != nil {
		// The per-block path asks again for the page's blocks one by
		// one, as the seeds' block_write_full_page does: if that fails
		// too, its MapError is what the page reports (and a mapper
		// that can map one block where it could not map the run has
		// written the page, with nothing to report).
		wc.ext.valid = false
		return false
	}
	n := min(max(bm.Len, 1), int(want))
	wc.ext = extent{start: blockInFile, n: uint64(n), pblock: bm.PBlock, flags: bm.Flags, valid: true}
	if bm.Flags&New != 0 {
		m.forgetNew(bm.PBlock, n)
	}
	return true
}

// confused sends what is pending and writes p block by block.
func (wc *writeCtx) confused(p *Page, why Reason) error {
	wc.bioBuilder.confused(why)
	return wc.m.writePageBlocks(p)
}

// forgetNew drops what the volume caches for device blocks [pblock,
// pblock+n), which the mapper just allocated to this file's data: the
// metadata mapping forgets them (a freed indirect block's pending write
// must not land over the data), and a BlockForgetter mapper is told.
func (m *Mapping) forgetNew(pblock uint64, n int) {
	if m.meta != nil {
		m.meta.ForgetBlocks(pblock, n)
	}
	if m.forget != nil {
		for k := range uint64(n) {
			m.forget.ForgetBlock(pblock + k)
		}
	}
}

// writeBoundary runs after a write Bio ending at the boundary block pblock
// was submitted: a BoundaryWriter mapper is told, and the metadata block
// after it (the indirect block the allocator placed there) is written if
// dirty, so data and its indirect block go out in one sweep.
func (m *Mapping) writeBoundary(pblock uint64) {
	if m.boundary != nil {
		m.boundary.WriteBoundary(pblock)
	}
	if m.meta != nil {
		m.meta.WriteBlockIfDirty(pblock + 1)
	}
}
