package mpage

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/internal/invariants"
)

// maxBlocksPerPage is PageSize over the smallest block size (512).
const maxBlocksPerPage = PageSize >> 9

// extent is the mapper's last answer, kept so following blocks covered by
// it need no further call (the later seed's b_size reuse, extended to
// holes).
type extent struct {
	start  uint64 // first file block
	n      uint64 // blocks
	pblock uint64 // device block of start, when mapped
	flags  MapFlags
	valid  bool
}

func (e *extent) covers(b uint64) bool { return e.valid && b >= e.start && b < e.start+e.n }

// readCtx is the state one ReadPages call carries from page to page: the
// request builder, and where the layout cut a Bio.
type readCtx struct {
	bioBuilder
	// cut is the page after the last place where the layout on the
	// device (a Boundary, a discontiguity) ended a Bio mid-call; readahead
	// lines its windows up with it.
	cut    uint64
	hasCut bool
}

var readCtxPool = sync.Pool{New: func() any { return new(readCtx) }}

func getReadCtx(m *Mapping) *readCtx {
	rc := readCtxPool.Get().(*readCtx)
	rc.bioBuilder.m, rc.dir = m, Read
	return rc
}

func putReadCtx(rc *readCtx) {
	rc.flush()
	*rc = readCtx{}
	readCtxPool.Put(rc)
}

// ReadPages starts reads of the pages [start, start+nr) that are not
// cached (the readahead path, mpage_readpages): it creates them locked, maps
// their blocks and puts runs whose blocks are contiguous on the device into
// multipage Bios. Reads complete asynchronously; readers wait on the page
// lock. Page start+nr-asyncMarker (if asyncMarker > 0) gets the Readahead
// flag, so a reader reaching it starts the next window. It returns how many
// pages it started.
func (m *Mapping) ReadPages(start uint64, nr int, asyncMarker int) (int, error) {
	n, _, err := m.readPages(start, nr, asyncMarker, 0)
	return n, err
}

// readMode says how readPages works for its caller.
type readMode uint8

const (
	// readKeepFirst: return page start with a reference if this call
	// created it; the reader whose miss started the read needs no second
	// lookup.
	readKeepFirst readMode = 1 << iota
	// readNoWait: when memory is short, stop instead of waiting for it.
	// Windows started ahead of a reader that already has its page are
	// speculative: they must not make it wait (up to NoFrameWait).
	readNoWait
)

// readPages is ReadPages with a readMode.
func (m *Mapping) readPages(start uint64, nr int, asyncMarker int, mode readMode) (int, *Page, error) {
	if nr <= 0 {
		return 0, nil, nil
	}
	eof := uint64((m.Size() + PageSize - 1) >> PageShift)
	if start >= eof {
		return 0, nil, nil
	}
	if uint64(nr) > eof-start {
		nr = int(eof - start)
	}
	marker := uint64(0)
	if asyncMarker > 0 && asyncMarker <= nr {
		marker = start + uint64(nr-asyncMarker)
	} else {
		marker = ^uint64(0)
	}
	rc := getReadCtx(m)
	defer putReadCtx(rc)
	started := 0
	var first *Page
	end := start + uint64(nr)
	var batch [readBatch]*Page
	for idx := start; idx < end; {
		k, next, err := m.newReadPages(idx, min(end-idx, readBatch), rc, batch[:], mode&readNoWait == 0)
		m.dev.stats.ReadaheadPages.Add(uint64(k))
		for i, p := range batch[:k] {
			if p.Index == marker {
				p.set(Readahead)
			}
			if mode&readKeepFirst != 0 && p.Index == start {
				p.refs.Add(1)
				first = p
			}
			rc.readPage(p, nr-int(p.Index-start))
			p.Release()
			batch[i] = nil
		}
		started += k
		if err != nil {
			return started, first, err
		}
		idx = next
	}
	if rc.hasCut {
		m.noteCut(rc.cut)
	}
	return started, first, nil
}

// readBatch is how many pages ReadPages creates at a time: allocation,
// eviction and insertion in the index take their locks once per batch.
const readBatch = 32

// newReadPages creates the pages of [first, first+n) that are not cached,
// locked and referenced, inserts them and puts them in out in index order.
// It returns how many, and the index to go on from: first+n, or less when
// memory allowed only some. When memory is short it sends rc's Bio before
// waiting for writeback (unless wait is false): the pages locked in it
// must not wait on us.
func (m *Mapping) newReadPages(first, n uint64, rc *readCtx, out []*Page, wait bool) (int, uint64, error) {
	var missing [readBatch]uint64
	k := 0
	m.mu.Lock()
	for idx := first; idx < first+n; idx++ {
		if m.pages.get(idx) == nil {
			missing[k] = idx
			k++
		}
	}
	m.mu.Unlock()
	if k == 0 {
		return 0, first + n, nil
	}
	got, err := m.cache.allocPages(out[:k], false)
	if got == 0 && errors.Is(err, ErrNoFrames) && wait {
		rc.flush()
		got, err = m.cache.allocPages(out[:1], true)
	}
	if got == 0 {
		return 0, first, err
	}
	next := first + n
	if got < k {
		next = missing[got]
	}
	kept, err := m.insertNew(missing[:got], out[:got])
	return kept, next, err
}

// insertNew inserts new pages at the indices given, locked and referenced,
// under one hold of the mapping lock, and links them into the cache's
// CLOCK ring. Pages whose index someone else filled meanwhile are freed;
// the others are moved to the front of pages, in order, and counted. All
// are freed, with ErrClosed, if the mapping is closed.
func (m *Mapping) insertNew(indices []uint64, pages []*Page) (int, error) {
	kept := 0
	var err error
	m.mu.Lock()
	for i, p := range pages {
		p.Index = indices[i]
		p.set(Locked)
		p.refs.Store(1)
		if m.closed {
			err = fmt.Errorf("mpage: %s: %w", m.name, ErrClosed)
		} else if m.pages.insert(p) {
			p.mapping = m
			m.nPages++
			pages[kept] = p
			kept++
			continue
		}
		m.cache.freePage(p)
	}
	m.cache.link(pages[:kept]...)
	m.mu.Unlock()
	return kept, err
}

// ReadPage reads one locked page that is not uptodate (mpage_readpage). The
// page is unlocked when the read completes; it may complete before
// ReadPage returns.
func (m *Mapping) ReadPage(p *Page) {
	rc := getReadCtx(m)
	rc.readPage(p, 1)
	putReadCtx(rc)
}

// readPage is do_mpage_readpage: p is locked and in the mapping; nrPages is
// how many pages this call may still read (the Bio's size hint).
func (rc *readCtx) readPage(p *Page, nrPages int) {
	m := rc.m
	if invariants.Enabled {
		invariants.Check(p.Has(Locked) && !p.Has(Writeback), "page %d: read of a page not locked or under writeback (flags %v)", p.Index, p.Flags())
		invariants.Check(p.mapping == m, "page %d: read through a mapping it does not belong to", p.Index)
	}
	if p.bufs != nil {
		rc.confused(p, ReasonBuffers)
		return
	}
	if rc.ext.valid && rc.ext.flags&Mapped == 0 {
		// A hole answer is not carried to another page: between pages
		// this call may sleep (memory), and writeback may allocate the
		// hole meanwhile; mapped answers stay true as long as the file's
		// blocks do, as in the seed.
		rc.ext.valid = false
	}
	lay, why, ok := rc.mapPage(p, nrPages)
	if !ok {
		rc.confused(p, why)
		return
	}
	bpp := m.blocksPerPage()
	if lay.firstHole != bpp {
		p.zero(lay.firstHole<<m.blkbits, PageSize)
		if lay.firstHole == 0 {
			m.dev.stats.HolePages.Add(1)
			p.set(Uptodate)
			p.clear(Error)
			p.Unlock()
			return
		}
	} else if lay.fullyMapped {
		p.set(MappedToDisk)
	}
	rc.queue(p, lay, nrPages)
}

// readLayout is where a read page's blocks are: blocks[:firstHole] mapped
// and contiguous, the rest holes (firstHole == blocks per page: none).
// boundary: the page used the last block of a run after which mapping
// needs metadata I/O.
type readLayout struct {
	firstHole   int
	fullyMapped bool
	boundary    bool
}

// mapPage maps p's blocks into rc.blocks, reusing the mapper's last answer
// where it covers them. Blocks past EOF, or past what this call reads, are
// holes. False with why when the page must be read block by block.
func (rc *readCtx) mapPage(p *Page, nrPages int) (lay readLayout, why Reason, ok bool) {
	m := rc.m
	blkbits := uint(m.blkbits)
	bpp := m.blocksPerPage()
	blockInFile := p.Index << (PageShift - blkbits)
	lastBlock := blockInFile + uint64(nrPages*bpp)
	lastBlock = min(lastBlock, uint64((m.Size()+int64(1)<<blkbits-1)>>blkbits))
	lay = readLayout{firstHole: bpp, fullyMapped: true}
	for pageBlock := 0; pageBlock < bpp; pageBlock, blockInFile = pageBlock+1, blockInFile+1 {
		if !rc.ext.covers(blockInFile) {
			if blockInFile >= lastBlock {
				rc.ext.valid = false
				lay.fullyMapped = false
				lay.firstHole = min(lay.firstHole, pageBlock)
				continue
			}
			if !rc.mapExtent(p, pageBlock, blockInFile, lastBlock) {
				return lay, ReasonMapError, false
			}
		}
		e := &rc.ext
		switch {
		case e.flags&Mapped == 0:
			lay.fullyMapped = false
			lay.firstHole = min(lay.firstHole, pageBlock)
			continue
		case e.flags&MapUptodate != 0:
			// The mapper filled this block: keep it as per-block state
			// so the block path does not read it again.
			p.mapBlockUptodate(pageBlock, e.pblock, e.flags, bpp)
			rc.ext.valid = false
			return lay, ReasonMapperUptodate, false
		case lay.firstHole != bpp:
			return lay, ReasonHole, false
		}
		pb := e.pblock + (blockInFile - e.start)
		if pageBlock > 0 && rc.blocks[pageBlock-1] != pb-1 {
			return lay, ReasonDiscontiguous, false
		}
		rc.blocks[pageBlock] = pb
	}
	lay.boundary = rc.ext.valid && rc.ext.flags&(Mapped|Boundary) == Mapped|Boundary &&
		blockInFile == rc.ext.start+rc.ext.n
	return lay, 0, true
}

// mapExtent asks the mapper for blockInFile and what follows up to
// lastBlock, and keeps the answer in rc.ext. Data is block pageBlock of p,
// for a mapper that fills it. False, with rc.ext invalid, when the mapper
// failed.
func (rc *readCtx) mapExtent(p *Page, pageBlock int, blockInFile, lastBlock uint64) bool {
	blkbits := rc.m.blkbits
	bm := &rc.bm
	*bm = BlockMap{Block: blockInFile, Len: int(lastBlock - blockInFile),
		Data: p.Data[pageBlock<<blkbits : (pageBlock+1)<<blkbits]}
	if merr := rc.m.mapBlocks(bm); merr != nil {
		// The per-block path asks again, block by block, and its
		// answer decides the page (see readPageBlocks).
		rc.ext.valid = false
		return false
	}
	n := max(bm.Len, 1)
	if bm.Flags&MapUptodate != 0 {
		n = 1 // the filled data covers this block only
	}
	rc.ext = extent{start: blockInFile, n: uint64(n), pblock: bm.PBlock, flags: bm.Flags, valid: true}
	return true
}

// queue adds a mapped page to the Bio being built, or to a new one.
func (rc *readCtx) queue(p *Page, lay readLayout, nrPages int) {
	if rc.breakUnlessContiguous() {
		rc.cut, rc.hasCut = p.Index, true
	}
	if !rc.addPage(p, lay.firstHole<<rc.m.blkbits, nrPages, readAllocFlags) {
		rc.confused(p, ReasonAllocFailed)
		return
	}
	// A full Bio goes now too, rather than be held, with the budget or
	// reserve it is charged to, across the next page's mapper call and
	// page allocation, which may sleep (see readAllocFlags).
	bpp := rc.m.blocksPerPage()
	rc.endPage(lay.boundary || lay.firstHole != bpp || rc.bio.full(), bpp-1)
	if lay.boundary {
		rc.cut, rc.hasCut = p.Index+1, true
	}
}

// readAllocFlags is how a read asks the BioSet for a Bio. MemAlloc: when
// the budget is tight the vec count halves until a Bio fits, as writeback
// does, so the window still goes out in multipage Bios. When not even a
// 1-vec Bio fits (Bios in flight hold the budget), the read takes a 1-vec
// Bio from the reserve (a whole page in one request), and with the reserve
// out too it waits for a Free (Wait), which the Bios in flight give when
// they complete. Falling to the per-block path instead would cost a
// request per block, take the same reserve and wait the same way (it is
// how submitBlock allocates), and leave every page of the window with
// per-block state, which confuses all its later reads.
//
// Waiting cannot deadlock on a Bio that is never submitted: a read holds
// no Bio of its own when it allocates, and the reserve serves a read nested
// in a mapper call (an indirect block) while its caller holds a Bio charged
// to the budget. A reserve Bio is never held unsubmitted across a sleep
// either: it has one vec, and a full Bio is submitted as soon as it is
// filled.
const readAllocFlags = alloc.MemAlloc | alloc.UseReserve | alloc.Wait

// confused sends what is pending and reads p block by block.
func (rc *readCtx) confused(p *Page, why Reason) {
	rc.bioBuilder.confused(why)
	if p.Has(Uptodate) {
		p.Unlock()
		return
	}
	rc.m.readPageBlocks(p)
}
