package mpage

import "io"

// PageRead is one asynchronous read of a page (ReadPageAsync). The caller
// owns it and fills Index, Handler and UserData; from a ReadPageAsync that
// returns false until the Handler is called, the engine owns it and the
// caller must not touch it. It is reusable: a reader keeps a few and
// allocates nothing per read.
type PageRead struct {
	// Index is the page of the file to read.
	Index uint64
	// Want is how many pages from Index on the reader is about to need
	// (readahead's hint, as ReadAt's length is); 0 counts as 1.
	Want int
	// Handler is called when a read that did not finish in ReadPageAsync
	// is done or needs its submitter again.
	Handler PageReadHandler
	// UserData is the caller's; the engine never reads it.
	UserData uint64

	// Page is the page, uptodate and with a reference the caller drops
	// with Release, once the read is done without error; Err the error
	// (wrapping syscall.EIO when the page could not be read) otherwise.
	Page *Page
	Err  error

	op      pageRead
	waiter  pageWaiter
	again   bool
	pending bool
}

// PageReadHandler receives asynchronous page reads (ReadPageAsync). It is
// called on the goroutine that unlocked the page, usually the ring's
// completion side, and must not block: queue the read for a goroutine
// that may.
type PageReadHandler interface {
	PageReadDone(r *PageRead)
}

// Again reports that the read is not done but needs its submitter: the page
// was not uptodate when unlocked (a failed read to retry, a page dropped
// from the cache), and what comes next may sleep. Call ReadPageAsync(r)
// again from a goroutine that may sleep; it carries on where the read
// stopped.
func (r *PageRead) Again() bool { return r.again }

// ReadPageAsync reads page r.Index as ReadAt would (readahead on a miss,
// a failed read retried once) without waiting for the device: when the
// page is uptodate already, or the read failed before any I/O, it fills
// r.Page or r.Err and returns true, and the Handler is not called.
// Otherwise it returns false, and r.Handler.PageReadDone(r) is called once
// the page is unlocked: r is then done (Page or Err set), or Again. A read
// the device completes before ReadPageAsync gets to wait for it finishes
// inside the call too (true, no Handler call): callers handle both.
//
// Like ReadAt's lookup it may sleep before it returns (a page frame when
// memory is short, the mapper's metadata I/O, a page lock on the retry
// path), never for the page's own read: one goroutine keeps many reads in
// flight. A page wholly past i_size is io.EOF. See Reader for a completion
// queue on top.
func (m *Mapping) ReadPageAsync(r *PageRead) bool {
	if r.pending {
		panic("mpage: ReadPageAsync of a read in flight")
	}
	if !r.again {
		r.Page, r.Err = nil, nil
		if r.Index >= uint64((m.Size()+PageSize-1)>>PageShift) { // unsigned: no index is negative
			r.Err = io.EOF
			return true
		}
		r.op.start(m, r.Index, max(r.Want, 1))
	}
	r.again = false
	for {
		switch r.op.step(true) {
		case stepDone:
			r.finish()
			return true
		case stepWait:
			r.pending = true
			r.waiter.wake = r
			if r.op.p.waitUnlockedAsync(&r.waiter) {
				return false
			}
			r.pending = false
		}
	}
}

// pageUnlocked runs when the page r waits for is unlocked, on the
// unlocker's goroutine: it takes the read on as far as it goes without
// sleeping.
func (r *PageRead) pageUnlocked(*Page) {
	r.pending = false
	if r.op.step(false) == stepDone {
		r.finish()
	} else {
		r.again = true
	}
	r.Handler.PageReadDone(r)
}

func (r *PageRead) finish() {
	r.Page, r.Err = r.op.p, r.op.err
	r.op.p = nil
}
