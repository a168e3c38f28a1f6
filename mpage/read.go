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
// Bio being built and the mapping extent being consumed.
type readCtx struct {
	m              *Mapping
	bio            *Bio
	lastBlockInBio uint64
	ext            extent
	bm             BlockMap
	blocks         [maxBlocksPerPage]uint64
	// cut is the page after the last place where the layout on the
	// device (a Boundary, a discontiguity) ended a Bio mid-call; readahead
	// lines its windows up with it.
	cut    uint64
	hasCut bool
}

var readCtxPool = sync.Pool{New: func() any { return new(readCtx) }}

func getReadCtx(m *Mapping) *readCtx {
	rc := readCtxPool.Get().(*readCtx)
	rc.m = m
	return rc
}

func putReadCtx(rc *readCtx) {
	if rc.bio != nil {
		rc.bio = rc.bio.submit()
	}
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
		if rc.bio != nil {
			rc.bio = rc.bio.submit()
		}
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
	st := m.dev.stats
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
	blkbits := uint(m.blkbits)
	bpp := m.blocksPerPage()
	blockSize := 1 << blkbits
	blockInFile := p.Index << (PageShift - blkbits)
	lastBlock := blockInFile + uint64(nrPages*bpp)
	lastBlockInFile := uint64((m.Size() + int64(blockSize) - 1) >> blkbits)
	if lastBlock > lastBlockInFile {
		lastBlock = lastBlockInFile
	}
	firstHole := bpp
	fullyMapped := true
	pageBlock := 0
	for pageBlock < bpp {
		if !rc.ext.covers(blockInFile) {
			if blockInFile >= lastBlock {
				// Past EOF (or past what this call reads): a hole.
				rc.ext.valid = false
				fullyMapped = false
				if firstHole == bpp {
					firstHole = pageBlock
				}
				pageBlock++
				blockInFile++
				continue
			}
			bm := &rc.bm
			*bm = BlockMap{Block: blockInFile, Len: int(lastBlock - blockInFile),
				Data: p.Data[pageBlock<<blkbits : (pageBlock+1)<<blkbits]}
			st.MapCalls[Read].Add(1)
			if err := m.mapper.MapBlocks(bm); err != nil {
				rc.ext.valid = false
				rc.confused(p, ReasonMapError)
				return
			}
			n := max(bm.Len, 1)
			if bm.Flags&MapUptodate != 0 {
				n = 1 // the filled data covers this block only
			}
			rc.ext = extent{start: blockInFile, n: uint64(n), pblock: bm.PBlock, flags: bm.Flags, valid: true}
		}
		e := &rc.ext
		if e.flags&Mapped == 0 {
			fullyMapped = false
			if firstHole == bpp {
				firstHole = pageBlock
			}
			pageBlock++
			blockInFile++
			continue
		}
		if e.flags&MapUptodate != 0 {
			// The mapper filled this block: keep it as per-block state
			// so the block path does not read it again.
			p.mapBlockUptodate(pageBlock, e.pblock, e.flags, bpp)
			rc.ext.valid = false
			rc.confused(p, ReasonMapperUptodate)
			return
		}
		if firstHole != bpp {
			rc.confused(p, ReasonHole)
			return
		}
		pb := e.pblock + (blockInFile - e.start)
		if pageBlock > 0 && rc.blocks[pageBlock-1] != pb-1 {
			rc.confused(p, ReasonDiscontiguous)
			return
		}
		rc.blocks[pageBlock] = pb
		pageBlock++
		blockInFile++
	}
	// Boundary: the page used the last block of a run after which mapping
	// needs metadata I/O; push the Bio now so data goes out first.
	boundary := rc.ext.valid && rc.ext.flags&(Mapped|Boundary) == Mapped|Boundary &&
		blockInFile == rc.ext.start+rc.ext.n

	if firstHole != bpp {
		p.zero(firstHole<<blkbits, PageSize)
		if firstHole == 0 {
			st.HolePages.Add(1)
			p.set(Uptodate)
			p.clear(Error)
			p.Unlock()
			return
		}
	} else if fullyMapped {
		p.set(MappedToDisk)
	}

	if rc.bio != nil && rc.lastBlockInBio != rc.blocks[0]-1 {
		rc.bio = rc.bio.submit()
		rc.cut, rc.hasCut = p.Index, true
	}
	length := firstHole << blkbits
	for {
		if rc.bio == nil {
			rc.bio = m.dev.allocBio(m, Read, bioPages, rc.blocks[0], nrPages, readAllocFlags)
			if rc.bio == nil {
				rc.confused(p, ReasonAllocFailed)
				return
			}
		}
		if rc.bio.add(p, length) {
			break
		}
		rc.bio = rc.bio.submit()
	}
	// A full Bio goes now too, rather than be held, with the budget or
	// reserve it is charged to, across the next page's mapper call and
	// page allocation, which may sleep (see readAllocFlags).
	if boundary || firstHole != bpp || rc.bio.full() {
		rc.bio = rc.bio.submit()
		if boundary {
			rc.cut, rc.hasCut = p.Index+1, true
		}
	} else {
		rc.lastBlockInBio = rc.blocks[bpp-1]
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
	rc.m.dev.stats.Confused[Read][why].Add(1)
	if rc.bio != nil {
		rc.bio = rc.bio.submit()
	}
	if p.Has(Uptodate) {
		p.Unlock()
		return
	}
	rc.m.readPageBlocks(p)
}
