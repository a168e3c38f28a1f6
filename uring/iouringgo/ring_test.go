//go:build iouringgo

package iouringgo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
)

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

// collector hands completions to the test goroutine.
type collector chan *uring.Request

func (c collector) Complete(r *uring.Request) { c <- r }

func (c collector) wait(t testing.TB, n int) []*uring.Request {
	t.Helper()
	out := make([]*uring.Request, 0, n)
	deadline := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case r := <-c:
			out = append(out, r)
		case <-deadline:
			t.Fatalf("got %d of %d completions", len(out), n)
		}
	}
	return out
}

func do(t testing.TB, r uring.Ring, q *uring.Request) *uring.Request {
	t.Helper()
	c := make(collector, 1)
	q.Handler = c
	if err := r.Submit(q); err != nil {
		t.Fatalf("submit %s: %v", q.Op, err)
	}
	return c.wait(t, 1)[0]
}

// aligned returns n bytes of page-aligned mmap'd memory.
func aligned(t testing.TB, n int) []byte {
	t.Helper()
	size := max((n+4095)&^4095, 4096)
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(m) })
	return m[:n]
}

func fill(b []byte, off int64, seed byte) {
	for i := range b {
		x := uint64(off) + uint64(i)
		b[i] = byte(x) ^ byte(x>>9) ^ byte(x>>17) ^ seed
	}
}

func split(b []byte, n int) [][]byte {
	var v [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		v = append(v, b[:k])
		b = b[k:]
	}
	return v
}

// openData opens a scratch file with O_DIRECT when the filesystem takes it
// (and 512-byte direct I/O works), else buffered, and says which.
func openData(t testing.TB) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o644)
	if err == nil {
		probe := aligned(t, 512)
		if _, err = unix.Pwrite(int(f.Fd()), probe, 0); err == nil {
			t.Cleanup(func() { f.Close() })
			return f
		}
		f.Close()
	}
	t.Logf("%s: O_DIRECT unavailable (%v); testing buffered I/O", path, err)
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func register(t testing.TB, r uring.Ring, fd int) uring.File {
	t.Helper()
	h, err := r.RegisterFile(fd)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestRoundTrip(t *testing.T) {
	r := newRing(t, uring.Options{})
	f := openData(t)
	h := register(t, r, int(f.Fd()))
	for _, size := range []int{512, 4 << 10, 64 << 10, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			off := int64(size) * 5
			w := aligned(t, size)
			fill(w, off, byte(size>>9))
			wq := do(t, r, &uring.Request{Op: uring.OpWritev, File: h, Offset: off, Vecs: split(w, 4096), BufIndex: uring.NoBuffer})
			if wq.Err != nil || wq.Res != size {
				t.Fatalf("writev: res %d err %v", wq.Res, wq.Err)
			}
			b := aligned(t, size)
			rq := do(t, r, &uring.Request{Op: uring.OpReadv, File: h, Offset: off, Vecs: split(b, max(512, size/3&^511)), BufIndex: uring.NoBuffer})
			if rq.Err != nil || rq.Res != size {
				t.Fatalf("readv: res %d err %v", rq.Res, rq.Err)
			}
			if !bytes.Equal(b, w) {
				t.Fatal("readv returned other bytes than writev wrote")
			}
		})
	}
	// Single-buffer ops, fsync, fdatasync, nop.
	w := aligned(t, 8192)
	fill(w, 0, 9)
	if q := do(t, r, &uring.Request{Op: uring.OpWrite, File: h, Buf: w, BufIndex: uring.NoBuffer}); q.Err != nil || q.Res != 8192 {
		t.Fatalf("write: res %d err %v", q.Res, q.Err)
	}
	for _, q := range []*uring.Request{
		{Op: uring.OpFsync, File: h, BufIndex: uring.NoBuffer},
		{Op: uring.OpFsync, Flags: uring.FlagDatasync, File: h, BufIndex: uring.NoBuffer},
		{Op: uring.OpNop, BufIndex: uring.NoBuffer},
	} {
		if got := do(t, r, q); got.Err != nil || got.Res != 0 {
			t.Fatalf("%s: res %d err %v", q.Op, got.Res, got.Err)
		}
	}
	b := aligned(t, 8192)
	if q := do(t, r, &uring.Request{Op: uring.OpRead, File: h, Buf: b, BufIndex: uring.NoBuffer}); q.Err != nil || q.Res != 8192 || !bytes.Equal(b, w) {
		t.Fatalf("read: res %d err %v", q.Res, q.Err)
	}
	st := r.Stats()
	if st.BytesWrite == 0 || st.BytesRead != st.BytesWrite || st.InFlight != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestOffsetCurrent reads a file in pieces through its file position.
func TestOffsetCurrent(t *testing.T) {
	r := newRing(t, uring.Options{})
	path := filepath.Join(t.TempDir(), "pos")
	want := make([]byte, 3*4096)
	fill(want, 0, 4)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := register(t, r, int(f.Fd()))
	got := aligned(t, len(want))
	for i := range 3 {
		part := got[i*4096 : (i+1)*4096]
		if q := do(t, r, &uring.Request{Op: uring.OpRead, File: h, Offset: uring.OffsetCurrent, Buf: part, BufIndex: uring.NoBuffer}); q.Err != nil || q.Res != 4096 {
			t.Fatalf("read %d: res %d err %v", i, q.Res, q.Err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reads at the file position returned other bytes")
	}
}

func TestConcurrentSubmitters(t *testing.T) {
	r := newRing(t, uring.Options{Entries: 16})
	f := openData(t)
	h := register(t, r, int(f.Fd()))
	const goroutines, per, size = 12, 48, 4096
	var wg sync.WaitGroup
	for g := range goroutines {
		wbuf, rbuf := aligned(t, per*size), aligned(t, per*size)
		wg.Go(func() {
			c := make(collector, per)
			reqs := make([]uring.Request, per)
			base := int64(g) * per * size
			for i := range reqs {
				b := wbuf[i*size : (i+1)*size]
				fill(b, base+int64(i)*size, byte(g))
				reqs[i] = uring.Request{Op: uring.OpWritev, File: h, Offset: base + int64(i)*size, Vecs: [][]byte{b[:size/2], b[size/2:]}, Handler: c, BufIndex: uring.NoBuffer}
				if err := r.Submit(&reqs[i]); err != nil {
					t.Error(err)
					return
				}
			}
			for _, q := range c.wait(t, per) {
				if q.Err != nil || q.Res != size {
					t.Errorf("write: res %d err %v", q.Res, q.Err)
				}
			}
			ptrs := make([]*uring.Request, per)
			for i := range reqs {
				reqs[i] = uring.Request{Op: uring.OpRead, File: h, Offset: base + int64(i)*size, Buf: rbuf[i*size : (i+1)*size], Handler: c, BufIndex: uring.NoBuffer}
				ptrs[i] = &reqs[i]
			}
			if err := r.Submit(ptrs...); err != nil {
				t.Error(err)
				return
			}
			for _, q := range c.wait(t, per) {
				if q.Err != nil || q.Res != size {
					t.Errorf("read: res %d err %v", q.Res, q.Err)
				}
			}
			if !bytes.Equal(rbuf, wbuf) {
				t.Errorf("goroutine %d read back other bytes", g)
			}
		})
	}
	wg.Wait()
	st := r.Stats()
	if st.Completed != goroutines*per*2 || st.InFlight != 0 || st.Errors != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if m := r.maxInKernel(); m > r.Features().Entries {
		t.Fatalf("%d requests in the kernel at once, ring has %d entries", m, r.Features().Entries)
	}
}

func TestEOFShortRead(t *testing.T) {
	r := newRing(t, uring.Options{})
	path := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xab}, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := register(t, r, int(f.Fd()))
	b := aligned(t, 16384)
	q := do(t, r, &uring.Request{Op: uring.OpReadv, File: h, Offset: 1000, Vecs: split(b, 4096), BufIndex: uring.NoBuffer})
	if q.Err != nil || q.Res != 4000 {
		t.Fatalf("read across EOF: res %d err %v, want 4000 and no error", q.Res, q.Err)
	}
	if b[0] != 0xab || b[3999] != 0xab || b[4000] != 0 {
		t.Fatal("read across EOF: wrong bytes")
	}
	// Entirely past EOF: zero bytes, no error.
	q = do(t, r, &uring.Request{Op: uring.OpRead, File: h, Offset: 8192, Buf: b[:4096], BufIndex: uring.NoBuffer})
	if q.Err != nil || q.Res != 0 {
		t.Fatalf("read past EOF: res %d err %v", q.Res, q.Err)
	}
}

// TestShortReadSocket gets a real short read from the kernel: the socket has
// half the data when the read is issued and the rest later. The request must
// be resumed at the right place and complete once with all of it.
func TestShortReadSocket(t *testing.T) {
	r := newRing(t, uring.Options{})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	h := register(t, r, fds[0])
	want := make([]byte, 20000)
	fill(want, 0, 1)
	if _, err := unix.Write(fds[1], want[:10000]); err != nil {
		t.Fatal(err)
	}
	b := aligned(t, len(want))
	c := make(collector, 1)
	q := &uring.Request{Op: uring.OpReadv, File: h, Offset: uring.OffsetCurrent, Vecs: split(b, 3000), Handler: c, BufIndex: uring.NoBuffer}
	if err := r.Submit(q); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := unix.Write(fds[1], want[10000:]); err != nil {
		t.Fatal(err)
	}
	got := c.wait(t, 1)[0]
	if got.Err != nil || got.Res != len(want) {
		t.Fatalf("res %d err %v, want %d", got.Res, got.Err, len(want))
	}
	if !bytes.Equal(b, want) {
		t.Fatal("resumed read put bytes in the wrong place")
	}
	if st := r.Stats(); st.Resubmits == 0 || st.Completed != 1 {
		t.Fatalf("stats: %+v, want a resubmission and one completion", st)
	}
}

func TestErrorsAreErrno(t *testing.T) {
	r := newRing(t, uring.Options{})
	path := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	b := aligned(t, 4096)
	q := do(t, r, &uring.Request{Op: uring.OpWritev, File: register(t, r, int(ro.Fd())), Vecs: [][]byte{b}, BufIndex: uring.NoBuffer})
	if !errors.Is(q.Err, syscall.EBADF) || q.Res != 0 {
		t.Fatalf("writev on a read-only fd: res %d err %v, want EBADF", q.Res, q.Err)
	}
	if _, ok := q.Err.(syscall.Errno); !ok {
		t.Fatalf("error %T is not a syscall.Errno", q.Err)
	}
	if st := r.Stats(); st.Errors != 1 {
		t.Fatalf("errors counted %d", st.Errors)
	}
}

func TestInvalidAndUnsupported(t *testing.T) {
	r := newRing(t, uring.Options{})
	c := make(collector, 4)
	ok := &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}
	bad := &uring.Request{Op: uring.OpReadv, File: uring.MakeFile(0, -1), Handler: c}
	if err := r.Submit(ok, bad); !errors.Is(err, uring.ErrInvalid) {
		t.Fatalf("submit with an invalid second request: %v", err)
	}
	if q := c.wait(t, 1)[0]; q != ok {
		t.Fatal("the valid request before the invalid one did not complete")
	}
	if err := r.RegisterBuffer(0, aligned(t, 4096)); !errors.Is(err, uring.ErrNotSupported) {
		t.Fatalf("RegisterBuffer: %v", err)
	}
	if _, err := r.RegisterFile(-1); !errors.Is(err, uring.ErrInvalid) {
		t.Fatalf("RegisterFile(-1): %v", err)
	}
	f := r.Features()
	if f.Backend != "iouring-go" || f.Entries != 256 {
		t.Fatalf("features: %+v", f)
	}
}

func TestSubmitAfterClose(t *testing.T) {
	r := newRing(t, uring.Options{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	c := make(collector, 1)
	if err := r.Submit(&uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}); !errors.Is(err, uring.ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// TestCloseDrains closes a ring with a queue far deeper than the ring: every
// accepted request completes, successfully, before Close returns.
func TestCloseDrains(t *testing.T) {
	r := newRing(t, uring.Options{Entries: 4})
	f := openData(t)
	h := register(t, r, int(f.Fd()))
	const n = 300
	b := aligned(t, 4096)
	c := make(collector, n)
	reqs := make([]uring.Request, n)
	for i := range reqs {
		reqs[i] = uring.Request{Op: uring.OpWrite, File: h, Offset: int64(i) * 4096, Buf: b, Handler: c, BufIndex: uring.NoBuffer}
		if err := r.Submit(&reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if len(c) != n {
		t.Fatalf("%d of %d completions delivered when Close returned", len(c), n)
	}
	for range n {
		if q := <-c; q.Err != nil || q.Res != 4096 {
			t.Fatalf("drained write: res %d err %v", q.Res, q.Err)
		}
	}
	if st := r.Stats(); st.Cancelled != 0 || st.InFlight != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestCloseCancels closes a ring under a read that never completes on its
// own (an empty socket) and requests queued behind it: after DrainTimeout
// the read is cancelled in the kernel, the queued ones never reach it, and
// each gets exactly one ECANCELED completion.
func TestCloseCancels(t *testing.T) {
	r := newRing(t, uring.Options{Entries: 1, DrainTimeout: 50 * time.Millisecond})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	h := register(t, r, fds[0])
	c := make(collector, 8)
	b := aligned(t, 4096)
	reqs := []*uring.Request{
		{Op: uring.OpRead, File: h, Offset: uring.OffsetCurrent, Buf: b[:1024], Handler: c, BufIndex: uring.NoBuffer},
		{Op: uring.OpRead, File: h, Offset: uring.OffsetCurrent, Buf: b[1024:2048], Handler: c, BufIndex: uring.NoBuffer},
		{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer},
	}
	if err := r.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("close took %v", time.Since(start))
	for _, q := range c.wait(t, 3) {
		if !errors.Is(q.Err, syscall.ECANCELED) {
			t.Fatalf("%s: res %d err %v, want ECANCELED", q.Op, q.Res, q.Err)
		}
	}
	select {
	case q := <-c:
		t.Fatalf("extra completion: %+v", q)
	case <-time.After(50 * time.Millisecond):
	}
	if st := r.Stats(); st.Cancelled != 3 || st.InFlight != 0 || st.Completed != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestBackpressure gives a 4-entry ring 1000 requests in one call: none
// fails, all complete, and the kernel never holds more than 4.
func TestBackpressure(t *testing.T) {
	r := newRing(t, uring.Options{Entries: 4})
	f := openData(t)
	h := register(t, r, int(f.Fd()))
	const n = 1000
	b := aligned(t, 512)
	fill(b, 0, 2)
	c := make(collector, n)
	reqs := make([]uring.Request, n)
	ptrs := make([]*uring.Request, n)
	for i := range reqs {
		reqs[i] = uring.Request{Op: uring.OpWrite, File: h, Offset: int64(i) * 512, Buf: b, Handler: c, BufIndex: uring.NoBuffer}
		ptrs[i] = &reqs[i]
	}
	if err := r.Submit(ptrs...); err != nil {
		t.Fatal(err)
	}
	if got := r.InFlight(); got < n-4 {
		t.Logf("in flight right after submit: %d", got)
	}
	for _, q := range c.wait(t, n) {
		if q.Err != nil || q.Res != 512 {
			t.Fatalf("write at %d: res %d err %v", q.Offset, q.Res, q.Err)
		}
	}
	if st, err := f.Stat(); err != nil || st.Size() != n*512 {
		t.Fatalf("file size %d (%v)", st.Size(), err)
	}
	if m := r.maxInKernel(); m > 4 || m == 0 {
		t.Fatalf("max requests in the kernel %d, ring has 4 entries", m)
	}
	if r.Features().Entries != 4 {
		t.Fatalf("entries %d", r.Features().Entries)
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
	c := make(collector, 1)
	q := &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}
	allocs := testing.AllocsPerRun(2000, func() {
		if err := r.Submit(q); err != nil {
			t.Fatal(err)
		}
		<-c
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

func (r *Ring) maxInKernel() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxIssued
}

// TestCloseForcesUncancellable covers the last resort of Close: a request
// in the kernel that neither completes nor answers its cancel. The test
// hides the read from the cancel pass (as if ASYNC_CANCEL could not reach
// it); Close must then close the library ring, complete the read with
// ECANCELED exactly once, and say so in its error.
func TestCloseForcesUncancellable(t *testing.T) {
	r := newRing(t, uring.Options{DrainTimeout: 30 * time.Millisecond})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	h := register(t, r, fds[0])
	c := make(collector, 2)
	b := aligned(t, 4096)
	if err := r.Submit(&uring.Request{Op: uring.OpRead, File: h, Offset: uring.OffsetCurrent, Buf: b, Handler: c, BufIndex: uring.NoBuffer}); err != nil {
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
	err = r.Close()
	if err == nil {
		t.Fatal("close reported nothing about the forced completion")
	}
	t.Logf("close: %v", err)
	q := c.wait(t, 1)[0]
	if !errors.Is(q.Err, syscall.ECANCELED) {
		t.Fatalf("forced read: res %d err %v", q.Res, q.Err)
	}
	select {
	case q := <-c:
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
