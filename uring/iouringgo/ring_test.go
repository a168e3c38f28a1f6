//go:build iouringgo

package iouringgo

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// The shared contract (round trips, EOF, short transfers, errno, backpressure,
// draining, ...) is in TestConformance; the tests here cover what only this
// backend has.

// newRing opens a ring for t and closes it at the end of the test.
func newRing(t testing.TB, opts uring.Options) *Ring {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		if errors.Is(err, uring.ErrUnavailable) {
			testenv.Unavailable(t, "io_uring: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func (r *Ring) maxInKernel() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxIssued
}

// TestInvalidAndUnsupported: an invalid request in a batch leaves the valid
// ones before it accepted, and the features are this backend's.
func TestInvalidAndUnsupported(t *testing.T) {
	r := newRing(t, uring.Options{})
	c := ringtest.NewCollector(4)
	ok := &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}
	bad := &uring.Request{Op: uring.OpReadv, File: uring.MakeFile(0, -1), Handler: c}
	if err := r.Submit(ok, bad); !errors.Is(err, uring.ErrInvalid) {
		t.Fatalf("submit with an invalid second request: %v", err)
	}
	if q := c.Wait(t, 1, 30*time.Second)[0]; q != ok {
		t.Fatal("the valid request before the invalid one did not complete")
	}
	if err := r.RegisterBuffer(0, ringtest.Aligned(t, 4096)); !errors.Is(err, uring.ErrNotSupported) {
		t.Fatalf("RegisterBuffer: %v", err)
	}
	f := r.Features()
	if f.Backend != "iouring-go" || f.Entries != 256 {
		t.Fatalf("features: %+v", f)
	}
}

// TestCloseCancels closes a ring under a read that never completes on its
// own and requests queued behind it: after DrainTimeout the read is
// cancelled in the kernel, the queued ones never reach it, and each gets
// exactly one ECANCELED completion.
func TestCloseCancels(t *testing.T) {
	r := newRing(t, uring.Options{Entries: 1, DrainTimeout: 50 * time.Millisecond})
	c := ringtest.NewCollector(8)
	reqs := append(ringtest.PendingReads(t, r, 2, c), &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer})
	if err := r.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("close took %v", time.Since(start))
	for _, q := range c.Wait(t, len(reqs), 30*time.Second) {
		if !errors.Is(q.Err, syscall.ECANCELED) {
			t.Fatalf("%s: res %d err %v, want ECANCELED", q.Op, q.Res, q.Err)
		}
	}
	select {
	case q := <-c.C:
		t.Fatalf("extra completion: %+v", q)
	case <-time.After(50 * time.Millisecond):
	}
	if st := r.Stats(); st.Cancelled != 3 || st.InFlight != 0 || st.Completed != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestHandlerResubmits chains requests from their handler, the way the
// engine reuses a Bio: Submit from the completion goroutine must not
// deadlock, including against Close.
func TestHandlerResubmits(t *testing.T) {
	r := newRing(t, uring.Options{Entries: 2})
	const rounds = 2000
	done := make(chan struct{})
	var count int
	var q uring.Request
	q = uring.Request{Op: uring.OpNop, BufIndex: uring.NoBuffer, Handler: uring.HandlerFunc(func(req *uring.Request) {
		count++
		if count == rounds {
			close(done)
			return
		}
		req.Res, req.Err = 0, nil
		if err := r.Submit(req); err != nil {
			t.Error(err)
			close(done)
		}
	})}
	if err := r.Submit(&q); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("chain stalled after %d rounds", count)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNoOwnAllocations checks the ring adds nothing to what the library
// allocates per request.
func TestNoOwnAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	r := newRing(t, uring.Options{Entries: 8})
	c := ringtest.NewCollector(1)
	q := &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}
	allocs := testing.AllocsPerRun(2000, func() {
		if err := r.Submit(q); err != nil {
			t.Fatal(err)
		}
		<-c.C
	})
	t.Logf("allocations per nop round trip: %.2f", allocs)
	if allocs > libAllocsPerSubmit+0.5 {
		t.Fatalf("%.2f allocations per request, the library accounts for %d", allocs, libAllocsPerSubmit)
	}
}

// libAllocsPerSubmit is what iouring-go allocates per request: a UserData,
// a request and the request's done channel in SubmitRequest, and a copy of
// the CQE (CompletionQueueEvent.Clone) in its completion loop.
const libAllocsPerSubmit = 4

// TestCloseForcesUncancellable covers the last resort of Close: a request
// in the kernel that neither completes nor answers its cancel. The test
// hides the read from the cancel pass (as if ASYNC_CANCEL could not reach
// it); Close must then close the library ring, complete the read with
// ECANCELED exactly once, and say so in its error.
func TestCloseForcesUncancellable(t *testing.T) {
	r := newRing(t, uring.Options{DrainTimeout: 30 * time.Millisecond})
	c := ringtest.NewCollector(2)
	if err := r.Submit(ringtest.PendingReads(t, r, 1, c)...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	r.mu.Lock()
	for i := range r.slots {
		if r.slots[i].state == slotIssued {
			r.slots[i].ud = nil // cancelAll skips it
		}
	}
	r.mu.Unlock()
	err := r.Close()
	if err == nil {
		t.Fatal("close reported nothing about the forced completion")
	}
	t.Logf("close: %v", err)
	q := c.Wait(t, 1, 30*time.Second)[0]
	if !errors.Is(q.Err, syscall.ECANCELED) {
		t.Fatalf("forced read: res %d err %v", q.Res, q.Err)
	}
	select {
	case q := <-c.C:
		t.Fatalf("extra completion: %+v", q)
	case <-time.After(50 * time.Millisecond):
	}
	if st := r.Stats(); st.Cancelled != 1 || st.InFlight != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if err2 := r.Close(); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second close: %v, want the first's %v", err2, err)
	}
}
