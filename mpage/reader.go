package mpage

import (
	"fmt"
	"sync"
)

// Reader keeps many page reads of one Mapping in flight from one
// goroutine: Start begins a read and returns without waiting for the
// device, Wait hands back reads as they complete. It is ReadPageAsync with
// a completion queue: the completion side only queues (a short lock), and
// reads that need their submitter again (a retry after a failed read) are
// taken on by Wait, on the caller's goroutine.
//
// A Reader is for one goroutine at a time; its reads are preallocated, so
// reading allocates nothing.
type Reader struct {
	m     *Mapping
	reads []PageRead
	free  []*PageRead
	// inFlight counts reads started and not yet returned by Wait.
	inFlight int
	// ready[head:] are reads Wait took from done and has not returned
	// yet.
	ready []*PageRead
	head  int

	mu       sync.Mutex
	cond     sync.Cond
	done     []*PageRead // completed (or Again) reads, in completion order
	sleeping bool
}

// ReadResult is one completed read: its page, uptodate and referenced (the
// caller Releases it), or its error, and the tag given to Start.
type ReadResult struct {
	Index uint64
	Tag   uint64
	Page  *Page
	Err   error
}

// NewReader returns a Reader of m that keeps up to depth reads in flight.
func (m *Mapping) NewReader(depth int) *Reader {
	depth = max(depth, 1)
	rd := &Reader{m: m, reads: make([]PageRead, depth), free: make([]*PageRead, 0, depth),
		ready: make([]*PageRead, 0, depth), done: make([]*PageRead, 0, depth)}
	rd.cond.L = &rd.mu
	for i := range rd.reads {
		rd.reads[i].Handler = rd
		rd.free = append(rd.free, &rd.reads[i])
	}
	return rd
}

// InFlight is the number of reads started and not yet returned by Wait.
func (rd *Reader) InFlight() int { return rd.inFlight }

// Depth is the most reads the Reader keeps in flight.
func (rd *Reader) Depth() int { return len(rd.reads) }

// Start begins reading page idx, with want pages from it about to be
// needed (readahead's hint; 1 for a random read); tag comes back with its
// result. It may sleep as ReadPageAsync may (not for the device). It fails
// only when Depth reads are in flight: Wait for one first.
func (rd *Reader) Start(idx uint64, want int, tag uint64) error {
	if len(rd.free) == 0 {
		return fmt.Errorf("mpage: %s: reader: %w: %d reads in flight", rd.m.name, ErrBusy, rd.inFlight)
	}
	r := rd.free[len(rd.free)-1]
	rd.free = rd.free[:len(rd.free)-1]
	r.Index, r.Want, r.UserData = idx, want, tag
	rd.inFlight++
	if rd.m.ReadPageAsync(r) {
		rd.ready = append(rd.ready, r)
	}
	return nil
}

// Wait returns the next completed read. It sleeps while reads are in
// flight and none has completed; false when none is in flight.
func (rd *Reader) Wait() (ReadResult, bool) {
	for rd.head == len(rd.ready) {
		if rd.inFlight == 0 {
			return ReadResult{}, false
		}
		rd.collect(true)
	}
	return rd.pop(), true
}

// TryWait is Wait without the sleep: false when no read has completed.
func (rd *Reader) TryWait() (ReadResult, bool) {
	if rd.head == len(rd.ready) && rd.inFlight > 0 {
		rd.collect(false)
	}
	if rd.head == len(rd.ready) {
		return ReadResult{}, false
	}
	return rd.pop(), true
}

func (rd *Reader) pop() ReadResult {
	r := rd.ready[rd.head]
	rd.ready[rd.head] = nil
	if rd.head++; rd.head == len(rd.ready) {
		rd.ready, rd.head = rd.ready[:0], 0
	}
	res := ReadResult{Index: r.Index, Tag: r.UserData, Page: r.Page, Err: r.Err}
	r.Page, r.Err = nil, nil
	rd.free = append(rd.free, r)
	rd.inFlight--
	return res
}

// collect moves completed reads to ready (which Wait has emptied),
// sleeping for one if wait, and takes on the reads that need their
// submitter again.
func (rd *Reader) collect(wait bool) {
	rd.mu.Lock()
	for wait && len(rd.done) == 0 {
		rd.sleeping = true
		rd.cond.Wait()
	}
	rd.sleeping = false
	batch := rd.done
	rd.done = rd.ready[:0]
	rd.ready = batch
	rd.mu.Unlock()
	// Reads that need us again go on now; the ones that finish at once
	// are ready, the others are in flight again.
	n := 0
	for _, r := range rd.ready {
		if r.Again() && !rd.m.ReadPageAsync(r) {
			continue
		}
		rd.ready[n] = r
		n++
	}
	clear(rd.ready[n:])
	rd.ready = rd.ready[:n]
}

// PageReadDone implements PageReadHandler: it queues r for Wait.
func (rd *Reader) PageReadDone(r *PageRead) {
	rd.mu.Lock()
	rd.done = append(rd.done, r)
	if rd.sleeping {
		rd.sleeping = false
		rd.cond.Signal()
	}
	rd.mu.Unlock()
}
