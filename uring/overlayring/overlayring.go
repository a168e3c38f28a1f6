package overlayring

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mpaged/mpaged/uring"
)

// Ring is a uring.Ring that lays an Overlay over reads of one file (see
// the package doc).
type Ring struct {
	inner uring.Ring
	shown atomic.Pointer[shown]
}

// shown is the overlay and the file it covers.
type shown struct {
	fd int
	ov *Overlay
}

// New wraps inner; until Show it passes everything through.
func New(inner uring.Ring) *Ring { return &Ring{inner: inner} }

// Inner is the wrapped ring.
func (r *Ring) Inner() uring.Ring { return r.inner }

// Show lays ov over f's reads from now on and refuses f's writes. It is
// called once, before the reads that must see the overlay are submitted
// (reads in flight at the moment may or may not see it). Pages cached
// from f before it are the caller's to drop.
func (r *Ring) Show(f uring.File, ov *Overlay) error {
	if !f.Valid() || ov == nil {
		return fmt.Errorf("%w: Show needs a registered file and an overlay", ErrOverlay)
	}
	if !r.shown.CompareAndSwap(nil, &shown{fd: f.Fd(), ov: ov}) {
		return fmt.Errorf("%w: an overlay is already shown", ErrOverlay)
	}
	return nil
}

// Shown is the overlay shown, or nil.
func (r *Ring) Shown() *Overlay {
	if s := r.shown.Load(); s != nil {
		return s.ov
	}
	return nil
}

// Submit forwards the requests. A batch with no write of the overlaid
// file and no read touching the overlay goes through whole; otherwise the
// requests go one at a time, overlaid reads with this ring's handler in
// front of the caller's.
func (r *Ring) Submit(reqs ...*uring.Request) error {
	s := r.shown.Load()
	if s == nil || !s.touches(reqs) {
		return r.inner.Submit(reqs...)
	}
	for _, q := range reqs {
		if err := r.submitOne(s, q); err != nil {
			return err
		}
	}
	return nil
}

// touches reports whether any request writes the overlaid file or reads
// an overlaid block of it.
func (s *shown) touches(reqs []*uring.Request) bool {
	for _, q := range reqs {
		if s.writes(q) || s.overlaid(q) {
			return true
		}
	}
	return false
}

func (s *shown) writes(q *uring.Request) bool { return q.Op.IsWrite() && q.File.Fd() == s.fd }

func (s *shown) overlaid(q *uring.Request) bool {
	return q.Op.IsRead() && q.File.Fd() == s.fd && q.Offset != uring.OffsetCurrent && s.ov.hits(q.Offset, q.Len())
}

// submitOne forwards q: refused if it writes the overlaid file, with an
// intercepting handler if it reads overlaid blocks. The requests before a
// refused one stay accepted, as every backend does.
func (r *Ring) submitOne(s *shown, q *uring.Request) error {
	if err := uring.Validate(q); err != nil {
		return err
	}
	switch {
	case s.writes(q):
		return fmt.Errorf("overlayring: %s of %d bytes at %d: %w: the file is shown with an overlay (read-only)",
			q.Op, q.Len(), q.Offset, syscall.EROFS)
	case !s.overlaid(q):
		return r.inner.Submit(q)
	}
	ic := intercepts.Get().(*intercept)
	ic.orig, ic.ov = q.Handler, s.ov
	q.Handler = ic
	if err := r.inner.Submit(q); err != nil {
		q.Handler = ic.orig
		ic.release()
		return err
	}
	return nil
}

// intercept stands in for an overlaid read's handler while the inner ring
// has it.
type intercept struct {
	orig uring.Handler
	ov   *Overlay
}

var intercepts = sync.Pool{New: func() any { return new(intercept) }}

func (ic *intercept) release() {
	*ic = intercept{}
	intercepts.Put(ic)
}

// Complete lays the overlay over the bytes the read transferred, then
// hands the request back to its caller.
func (ic *intercept) Complete(q *uring.Request) {
	orig := ic.orig
	if q.Err == nil && q.Res > 0 {
		ic.ov.apply(q, q.Res)
	}
	q.Handler = orig
	ic.release()
	orig.Complete(q)
}

// RegisterFile forwards to the inner ring.
func (r *Ring) RegisterFile(fd int) (uring.File, error) { return r.inner.RegisterFile(fd) }

// UnregisterFile forwards to the inner ring.
func (r *Ring) UnregisterFile(f uring.File) error { return r.inner.UnregisterFile(f) }

// RegisterBuffer forwards to the inner ring.
func (r *Ring) RegisterBuffer(i int, mem []byte) error { return r.inner.RegisterBuffer(i, mem) }

// InFlight is the inner ring's.
func (r *Ring) InFlight() int { return r.inner.InFlight() }

// Stats are the inner ring's.
func (r *Ring) Stats() uring.Stats { return r.inner.Stats() }

// Features are the inner ring's; once an overlay is shown, the backend's
// name says so.
func (r *Ring) Features() uring.Features {
	ft := r.inner.Features()
	if r.shown.Load() != nil {
		ft.Backend = "overlay(" + ft.Backend + ")"
	}
	return ft
}

// Close closes the inner ring, which drains or cancels what is in flight.
func (r *Ring) Close() error { return r.inner.Close() }
