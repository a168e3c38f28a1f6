package mpage

import (
	"fmt"
	"syscall"
)

// pageRead is the state of one page read for a reader (ReadAt, which
// sleeps where the read must wait, and ReadPageAsync, which waits by
// callback): one path through the cache, readahead and a retry of a failed
// read, with the waits taken out so each caller waits its own way.
type pageRead struct {
	m       *Mapping
	idx     uint64
	want    int   // pages the reader still needs, readahead's hint
	p       *Page // referenced while set
	err     error
	attempt int
	state   readState
}

// readState is where a pageRead resumes.
type readState uint8

const (
	// rsLookup: find the page, starting readahead on a miss.
	rsLookup readState = iota
	// rsCheck: p (or nil: make one) is to be used if uptodate, else
	// waited for.
	rsCheck
	// rsWaited: p was waited for; use it, or read it ourselves.
	rsWaited
	// rsReadDone: our own read of p was waited for.
	rsReadDone
)

// stepResult says what a step left the caller to do.
type stepResult uint8

const (
	// stepDone: p (uptodate, referenced) or err is the answer.
	stepDone stepResult = iota
	// stepWait: wait until p is unlocked, then step again.
	stepWait
	// stepBlock: the next step may sleep (a page lock, a frame, the
	// mapper); only a step with mayBlock takes it.
	stepBlock
)

func (op *pageRead) start(m *Mapping, idx uint64, want int) {
	*op = pageRead{m: m, idx: idx, want: want}
}

// step runs the read until it is done or must wait. Without mayBlock it
// stops before anything that could sleep (the completion side runs it so).
//
// The path, which ReadAt has always taken: a cached page is used once
// uptodate; a miss starts readahead and uses the page it created. A page
// still not uptodate once unlocked (a failed readahead, a page created
// without a read) is locked and read once more by this reader, and a read
// that fails again is EIO. A page dropped from the mapping meanwhile
// (eviction, truncate) is looked up afresh.
func (op *pageRead) step(mayBlock bool) stepResult {
	m := op.m
	for {
		p := op.p
		switch op.state {
		case rsLookup:
			if !mayBlock {
				return stepBlock
			}
			op.p = op.lookup()
			op.state = rsCheck
		case rsCheck:
			if p == nil {
				// Readahead could not keep it (memory) or it was
				// evicted: read this page alone.
				if !mayBlock {
					return stepBlock
				}
				np, _, err := m.grabPage(op.idx)
				if err != nil {
					return op.fail(err)
				}
				np.Unlock()
				op.p, p = np, np
			}
			if p.Has(Uptodate) {
				return stepDone
			}
			op.state = rsWaited
			return stepWait
		case rsWaited:
			if p.Has(Uptodate) {
				return stepDone
			}
			if op.attempt > 0 && p.Has(Error) {
				return op.fail(m.readError(p, op.idx))
			}
			if !mayBlock {
				return stepBlock
			}
			if !op.readLocked() {
				continue
			}
			op.state = rsReadDone
			return stepWait
		case rsReadDone:
			if p.Has(Uptodate) {
				return stepDone
			}
			if p.Has(Error) {
				return op.fail(m.readError(p, op.idx))
			}
			op.attempt++
			op.state = rsCheck
		}
	}
}

// lookup finds page idx with a reference, starting readahead on a miss
// or at a marker, or nil when readahead could not keep it.
func (op *pageRead) lookup() *Page {
	m, st := op.m, op.m.dev.stats
	p := m.findPage(op.idx)
	if p == nil {
		st.CacheMisses.Add(1)
		if p = m.onMiss(op.idx, op.want); p == nil {
			p = m.findPage(op.idx) // someone else created it meanwhile
		}
		return p
	}
	st.CacheHits.Add(1)
	if p.Has(Readahead) {
		m.onMarker(p)
	}
	m.noteAccess(op.idx)
	return p
}

// readLocked reads op.p ourselves: false, with state set to go on, when
// the page turned out uptodate or left the mapping under the lock.
func (op *pageRead) readLocked() bool {
	m, p := op.m, op.p
	p.lock()
	if p.mapping != m {
		p.Unlock()
		p.Release()
		op.p = nil
		op.attempt++
		op.state = rsCheck
		return false
	}
	if p.Has(Uptodate) {
		p.Unlock()
		op.state = rsCheck
		return false
	}
	p.clear(Error)
	m.ReadPage(p)
	return true
}

// fail ends the read with err, dropping the page.
func (op *pageRead) fail(err error) stepResult {
	if op.p != nil {
		op.p.Release()
		op.p = nil
	}
	op.err = err
	return stepDone
}

// readError is what a reader of page idx reports when its read failed:
// EIO, wrapping the mapping failure that failed it if one did. The failure
// is the page's own (Page.mapErr), so a concurrent reader of another page
// never reports it.
func (m *Mapping) readError(p *Page, idx uint64) error {
	if merr := p.mapErr.Load(); merr != nil {
		return fmt.Errorf("mpage: %s: read page %d: %w: %w", m.name, idx, merr, syscall.EIO)
	}
	return fmt.Errorf("mpage: %s: read page %d: %w", m.name, idx, syscall.EIO)
}
