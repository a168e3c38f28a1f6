package crashring

import (
	"slices"

	"github.com/mpaged/mpaged/uring"
)

// Submit forwards the requests. Writes and flushes of tracked files are
// recorded and go to the inner ring one at a time, each with a handler of
// this ring's in front of the caller's; other batches go through whole.
func (c *Ring) Submit(reqs ...*uring.Request) error {
	// The valid requests before an invalid one are accepted, as every
	// backend does.
	for i, q := range reqs {
		if err := uring.Validate(q); err != nil {
			if i > 0 {
				if serr := c.Submit(reqs[:i]...); serr != nil {
					return serr
				}
			}
			return err
		}
	}
	if !c.anyTracked(reqs) {
		return c.inner.Submit(reqs...)
	}
	for _, q := range reqs {
		if err := c.submitOne(q); err != nil {
			return err
		}
	}
	return nil
}

// recorded says whether q is a request this ring records: a write at an
// explicit offset or a flush.
func recorded(q *uring.Request) bool {
	return q.Op == uring.OpFsync || q.Op.IsWrite() && q.Offset != uring.OffsetCurrent
}

func (c *Ring) isTracked(fd int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[fd] != nil
}

func (c *Ring) anyTracked(reqs []*uring.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range reqs {
		if recorded(q) && c.files[q.File.Fd()] != nil {
			return true
		}
	}
	return false
}

// intercept stands in for a recorded request's handler while the inner
// ring has it.
type intercept struct {
	c    *Ring
	orig uring.Handler
	file *tracked
	w    *write   // a write: its record
	done []*write // a flush: the writes completed (or failed) before it
}

// submitOne records q, if it is a write or flush of a tracked file, and
// forwards it. A refused request leaves no record.
func (c *Ring) submitOne(q *uring.Request) error {
	if q.Op == uring.OpFsync && c.beforeFlush != nil && c.isTracked(q.File.Fd()) {
		c.beforeFlush(q.File.Fd())
	}
	ic := c.record(q)
	if ic == nil {
		return c.inner.Submit(q)
	}
	q.Handler = ic
	if err := c.inner.Submit(q); err != nil {
		q.Handler = ic.orig
		if ic.w != nil {
			c.mu.Lock()
			ic.file.pending = slices.DeleteFunc(ic.file.pending, func(w *write) bool { return w == ic.w })
			c.mu.Unlock()
		}
		return err
	}
	if ic.w != nil {
		c.writes.Add(1)
	}
	return nil
}

// record notes a tracked write (its bytes, copied now: the caller may
// reuse them after the completion) or the writes a flush covers: those
// that completed before it was submitted.
func (c *Ring) record(q *uring.Request) *intercept {
	if !recorded(q) {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files[q.File.Fd()]
	if f == nil {
		return nil
	}
	ic := &intercept{c: c, orig: q.Handler, file: f}
	if q.Op == uring.OpFsync {
		for _, w := range f.pending {
			if w.state != inFlight {
				ic.done = append(ic.done, w)
			}
		}
		return ic
	}
	ic.w = &write{off: q.Offset, data: gather(q)}
	f.pending = append(f.pending, ic.w)
	return ic
}

// gather copies a write's bytes.
func gather(q *uring.Request) []byte {
	if q.Op == uring.OpWrite {
		return slices.Clone(q.Buf)
	}
	data := make([]byte, 0, q.Len())
	for _, v := range q.Vecs {
		data = append(data, v...)
	}
	return data
}

// Complete runs when the inner ring finishes a recorded request: a write
// is marked completed (or failed), a successful flush makes what it covers
// durable. The caller's handler runs after, outside the lock.
func (ic *intercept) Complete(q *uring.Request) {
	q.Handler = ic.orig
	c := ic.c
	c.mu.Lock()
	switch {
	case ic.w != nil:
		c.completeWrite(ic.w, q)
	case q.Err == nil:
		c.flush(ic.file, ic.done)
	}
	c.mu.Unlock()
	ic.orig.Complete(q)
}

// completeWrite marks w done. A short write without an error (a
// premature end of a file) reached the device for the bytes it reports.
// Caller holds c.mu.
func (c *Ring) completeWrite(w *write, q *uring.Request) {
	if q.Err != nil {
		w.state = failed
		return
	}
	if q.Res < len(w.data) {
		w.data = w.data[:max(q.Res, 0)]
	}
	w.state = completed
	c.seq++
	w.seq = c.seq
}

// flush applies the completed writes among done to f's shadow in the
// order they completed, and forgets them and the failed ones. Writes an
// earlier flush already took are skipped. Caller holds c.mu.
func (c *Ring) flush(f *tracked, done []*write) {
	c.flushes.Add(1)
	slices.SortFunc(done, func(a, b *write) int { return compareSeq(a.seq, b.seq) })
	for _, w := range done {
		if w.gone {
			continue
		}
		w.gone = true
		if w.state == failed {
			c.dropped.Add(1)
			continue
		}
		f.durable = apply(f.durable, w.off, w.data)
		c.durable.Add(1)
	}
	f.pending = slices.DeleteFunc(f.pending, func(w *write) bool { return w.gone })
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// apply writes data at off into img, growing it if the write reaches past
// its end (a file extended by a write).
func apply(img []byte, off int64, data []byte) []byte {
	if end := off + int64(len(data)); end > int64(len(img)) {
		img = append(img, make([]byte, end-int64(len(img)))...)
	}
	copy(img[off:], data)
	return img
}
