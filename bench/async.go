package bench

import (
	"sync/atomic"
	"time"

	"github.com/mpaged/mpaged/mpage"
)

// asyncReads is a worker's reads in flight through an mpage.Reader: the
// offset and start time of each, by the tag the Reader hands back.
type asyncReads struct {
	rd    *mpage.Reader
	off   []int64
	start []time.Time
	free  []uint64 // tags not in flight
}

func newAsyncReads(m *mpage.Mapping, depth int) *asyncReads {
	depth = max(depth, 1)
	a := &asyncReads{rd: m.NewReader(depth), off: make([]int64, depth), start: make([]time.Time, depth)}
	for i := range depth {
		a.free = append(a.free, uint64(depth-1-i))
	}
	return a
}

// runAsync is run for a random workload on a PageFile: one goroutine keeps
// Depth page reads in flight; the writes of a mix go through WriteAt in
// between (the page cache takes them). A read's latency runs from its
// Start to its return from Wait; its bytes are copied out of the page, as
// ReadAt would copy them.
func (wk *worker) runAsync(f File, stop *atomic.Bool) {
	a := wk.async
	defer a.drain()
	exhausted := false
	for {
		for !exhausted && !stop.Load() && a.rd.InFlight() < a.rd.Depth() {
			off, ok := wk.gen.take()
			if !ok {
				exhausted = true
				break
			}
			if !wk.nextIsRead() {
				t0 := time.Now()
				n, err := f.WriteAt(wk.buf, off)
				if !wk.done(false, off, n, err, t0, stop) {
					return
				}
				continue
			}
			if err := a.begin(off); err != nil {
				wk.done(true, off, 0, err, time.Now(), stop)
				return
			}
		}
		res, ok := a.rd.Wait()
		if !ok {
			return
		}
		tag := res.Tag
		off, t0 := a.off[tag], a.start[tag]
		a.free = append(a.free, tag)
		n := 0
		if res.Page != nil {
			n = copy(wk.buf, res.Page.Data)
			res.Page.Release()
		}
		if !wk.done(true, off, n, res.Err, t0, stop) {
			return
		}
		if wk.visit != nil {
			wk.visit(off, wk.buf[:n])
		}
	}
}

// begin starts the read of the page at off.
func (a *asyncReads) begin(off int64) error {
	tag := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	a.off[tag], a.start[tag] = off, time.Now()
	return a.rd.Start(uint64(off/mpage.PageSize), 1, tag)
}

// drain waits for the reads still in flight (a run stopped early) and
// drops their pages.
func (a *asyncReads) drain() {
	for {
		res, ok := a.rd.Wait()
		if !ok {
			return
		}
		if res.Page != nil {
			res.Page.Release()
		}
	}
}
