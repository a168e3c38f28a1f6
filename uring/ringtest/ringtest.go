// Package ringtest is the conformance suite every uring.Ring backend passes:
// one table of tests run against the native ring, the sync ring, the
// iouring-go ring and the fault ring, so they keep one contract.
package ringtest

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

// NewRing builds the ring under test with the given options; the suite
// closes it.
type NewRing func(t *testing.T, opts uring.Options) uring.Ring

// Run runs every conformance test against rings from newRing.
func Run(t *testing.T, newRing NewRing) {
	tests := []struct {
		name string
		fn   func(*testing.T, NewRing)
	}{
		{"RoundTripFile", testRoundTripFile},
		{"RoundTripLoopDevice", testRoundTripLoop},
		{"ReadWriteSingleBuffer", testSingleBuffer},
		{"ConcurrentSubmitters", testConcurrent},
		{"EOFShortRead", testEOF},
		{"ShortTransferResubmit", testShortTransfer},
		{"ErrorsAreErrno", testErrno},
		{"FsyncAndNop", testFsyncNop},
		{"InvalidRequests", testInvalid},
		{"Backpressure", testBackpressure},
		{"CloseDrains", testCloseDrains},
		{"CloseWithIOInFlight", testCloseInFlight},
		{"SubmitAfterClose", testSubmitAfterClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newRing) })
	}
}

// Collector is a Handler that hands completions to the test goroutine.
type Collector struct{ C chan *uring.Request }

// NewCollector buffers up to n completions.
func NewCollector(n int) *Collector { return &Collector{C: make(chan *uring.Request, n)} }

// Complete implements uring.Handler.
func (c *Collector) Complete(r *uring.Request) { c.C <- r }

// Wait receives n completions or fails after timeout.
func (c *Collector) Wait(t testing.TB, n int, timeout time.Duration) []*uring.Request {
	t.Helper()
	out := make([]*uring.Request, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case r := <-c.C:
			out = append(out, r)
		case <-deadline:
			t.Fatalf("got %d of %d completions after %v", len(out), n, timeout)
		}
	}
	return out
}

// Aligned returns n bytes of page-aligned memory outside the Go heap, as the
// kernel needs for O_DIRECT and as uring's doc asks of buffers.
func Aligned(t testing.TB, n int) []byte {
	t.Helper()
	size := (n + 4095) &^ 4095
	if size == 0 {
		size = 4096
	}
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap %d: %v", size, err)
	}
	t.Cleanup(func() { _ = unix.Munmap(m) })
	return m[:n]
}

// Pattern fills b with bytes that depend on the absolute offset and a seed,
// so misplaced or stale data shows.
func Pattern(b []byte, off int64, seed byte) {
	for i := range b {
		x := uint64(off) + uint64(i)
		b[i] = byte(x) ^ byte(x>>9) ^ byte(x>>17) ^ seed
	}
}

// OpenDirect opens path with O_DIRECT when the filesystem allows it and says
// which it got.
func OpenDirect(t testing.TB, path string, flag int) (*os.File, bool) {
	t.Helper()
	f, err := os.OpenFile(path, flag|unix.O_DIRECT, 0o644)
	if err == nil {
		return f, true
	}
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Logf("%s: O_DIRECT refused by the filesystem; testing buffered I/O", path)
	f, err = os.OpenFile(path, flag, 0o644)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return f, false
}

func openRing(t *testing.T, newRing NewRing, opts uring.Options) uring.Ring {
	t.Helper()
	r := newRing(t, opts)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func register(t testing.TB, r uring.Ring, f *os.File) uring.File {
	t.Helper()
	h, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		t.Fatalf("register %s: %v", f.Name(), err)
	}
	t.Cleanup(func() { _ = r.UnregisterFile(h) })
	return h
}

// doSync submits one request and waits for it.
func doSync(t testing.TB, r uring.Ring, req *uring.Request) *uring.Request {
	t.Helper()
	c := NewCollector(1)
	req.Handler = c
	if err := r.Submit(req); err != nil {
		t.Fatalf("submit %s: %v", req.Op, err)
	}
	return c.Wait(t, 1, 30*time.Second)[0]
}

// splitVecs cuts buf into vecs of at most vecSize bytes.
func splitVecs(buf []byte, vecSize int) [][]byte {
	var vecs [][]byte
	for len(buf) > 0 {
		n := min(vecSize, len(buf))
		vecs = append(vecs, buf[:n])
		buf = buf[n:]
	}
	return vecs
}

var roundTripSizes = []int{512, 4096, 64 << 10, 1 << 20}

// roundTrip writes a pattern with writev at several offsets and reads it
// back with readv into differently shaped vecs.
func roundTrip(t *testing.T, r uring.Ring, f uring.File, base int64) {
	for _, size := range roundTripSizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			off := base + int64(size)*3
			wbuf := Aligned(t, size)
			Pattern(wbuf, off, byte(size))
			wvec := min(size, 4096)
			w := doSync(t, r, &uring.Request{Op: uring.OpWritev, File: f, Offset: off, Vecs: splitVecs(wbuf, wvec), BufIndex: uring.NoBuffer})
			if w.Err != nil || w.Res != size {
				t.Fatalf("writev %d at %d: res %d err %v", size, off, w.Res, w.Err)
			}
			rbuf := Aligned(t, size)
			rvec := min(size, 512*((size/512+3)/4)) // four-ish vecs of whole sectors
			rd := doSync(t, r, &uring.Request{Op: uring.OpReadv, File: f, Offset: off, Vecs: splitVecs(rbuf, rvec), BufIndex: uring.NoBuffer})
			if rd.Err != nil || rd.Res != size {
				t.Fatalf("readv %d at %d: res %d err %v", size, off, rd.Res, rd.Err)
			}
			if !bytes.Equal(rbuf, wbuf) {
				t.Fatalf("readv %d at %d: data differs from what writev wrote", size, off)
			}
		})
	}
}

func testRoundTripFile(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	f, _ := OpenDirect(t, filepath.Join(t.TempDir(), "data"), os.O_RDWR|os.O_CREATE)
	defer f.Close()
	roundTrip(t, r, register(t, r, f), 1<<20)
}

func testRoundTripLoop(t *testing.T, newRing NewRing) {
	dev, _ := testenv.LoopDevice(t, 64<<20)
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open %s O_DIRECT: %v", dev, err)
	}
	defer f.Close()
	r := openRing(t, newRing, uring.Options{})
	roundTrip(t, r, register(t, r, f), 8<<20)
}

func testSingleBuffer(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	f, _ := OpenDirect(t, filepath.Join(t.TempDir(), "data"), os.O_RDWR|os.O_CREATE)
	defer f.Close()
	h := register(t, r, f)
	wbuf := Aligned(t, 8192)
	Pattern(wbuf, 4096, 7)
	if w := doSync(t, r, &uring.Request{Op: uring.OpWrite, File: h, Offset: 4096, Buf: wbuf, BufIndex: uring.NoBuffer}); w.Err != nil || w.Res != len(wbuf) {
		t.Fatalf("write: res %d err %v", w.Res, w.Err)
	}
	rbuf := Aligned(t, 8192)
	if rd := doSync(t, r, &uring.Request{Op: uring.OpRead, File: h, Offset: 4096, Buf: rbuf, BufIndex: uring.NoBuffer}); rd.Err != nil || rd.Res != len(rbuf) {
		t.Fatalf("read: res %d err %v", rd.Res, rd.Err)
	}
	if !bytes.Equal(rbuf, wbuf) {
		t.Fatal("read returned other bytes than written")
	}
}

// testConcurrent has many goroutines write and read back their own regions
// at once through one ring: under -race this checks the ring's locking, and
// the data check catches crossed completions.
func testConcurrent(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{Entries: 32})
	f, _ := OpenDirect(t, filepath.Join(t.TempDir(), "data"), os.O_RDWR|os.O_CREATE)
	defer f.Close()
	h := register(t, r, f)
	const goroutines, perG, size = 16, 64, 4096
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wbuf := Aligned(t, perG*size)
		rbuf := Aligned(t, perG*size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewCollector(perG)
			reqs := make([]uring.Request, perG)
			base := int64(g) * perG * size
			for i := range reqs {
				off := base + int64(i)*size
				b := wbuf[i*size : (i+1)*size]
				Pattern(b, off, byte(g))
				reqs[i] = uring.Request{Op: uring.OpWrite, File: h, Offset: off, Buf: b, Handler: c, BufIndex: uring.NoBuffer}
				if err := r.Submit(&reqs[i]); err != nil {
					errs <- err
					return
				}
			}
			for range perG {
				if q := <-c.C; q.Err != nil || q.Res != size {
					errs <- fmt.Errorf("write at %d: res %d err %v", q.Offset, q.Res, q.Err)
					return
				}
			}
			ptrs := make([]*uring.Request, perG)
			for i := range reqs {
				reqs[i] = uring.Request{Op: uring.OpReadv, File: h, Offset: base + int64(i)*size, Vecs: [][]byte{rbuf[i*size : (i+1)*size]}, Handler: c, BufIndex: uring.NoBuffer}
				ptrs[i] = &reqs[i]
			}
			if err := r.Submit(ptrs...); err != nil {
				errs <- err
				return
			}
			for range perG {
				if q := <-c.C; q.Err != nil || q.Res != size {
					errs <- fmt.Errorf("read at %d: res %d err %v", q.Offset, q.Res, q.Err)
					return
				}
			}
			if !bytes.Equal(rbuf, wbuf) {
				errs <- fmt.Errorf("goroutine %d read back other bytes", g)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := r.Stats(); st.Completed < goroutines*perG*2 || st.InFlight != 0 {
		t.Errorf("stats after run: completed %d in flight %d", st.Completed, st.InFlight)
	}
}

func testEOF(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	path := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xab}, 6000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := Aligned(t, 16384)
	rd := doSync(t, r, &uring.Request{Op: uring.OpReadv, File: register(t, r, f), Offset: 4096, Vecs: splitVecs(buf, 4096), BufIndex: uring.NoBuffer})
	if rd.Err != nil || rd.Res != 6000-4096 {
		t.Fatalf("read across EOF: res %d err %v, want %d bytes and no error", rd.Res, rd.Err, 6000-4096)
	}
	if buf[0] != 0xab || buf[6000-4096-1] != 0xab {
		t.Fatal("read across EOF: data missing")
	}
}

// testShortTransfer makes the kernel return a real short read: a socket has
// half the bytes when the readv is issued, the rest arrives later. The ring
// must resume where it stopped and complete once with everything.
func testShortTransfer(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	h, err := r.RegisterFile(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer r.UnregisterFile(h)
	want := make([]byte, 24<<10)
	Pattern(want, 0, 3)
	if _, err := unix.Write(fds[1], want[:10<<10]); err != nil {
		t.Fatal(err)
	}
	buf := Aligned(t, len(want))
	c := NewCollector(1)
	req := &uring.Request{Op: uring.OpReadv, File: h, Offset: uring.OffsetCurrent, Vecs: splitVecs(buf, 8192), Handler: c, BufIndex: uring.NoBuffer}
	if err := r.Submit(req); err != nil {
		t.Fatal(err)
	}
	// Let the first part land so the kernel really returns short.
	time.Sleep(50 * time.Millisecond)
	if _, err := unix.Write(fds[1], want[10<<10:]); err != nil {
		t.Fatal(err)
	}
	got := c.Wait(t, 1, 10*time.Second)[0]
	if got.Err != nil || got.Res != len(want) {
		t.Fatalf("socket readv: res %d err %v, want %d", got.Res, got.Err, len(want))
	}
	if !bytes.Equal(buf, want) {
		t.Fatal("socket readv: resumed transfer put bytes in the wrong place")
	}
	if st := r.Stats(); st.Resubmits == 0 {
		t.Errorf("no resubmission counted for a transfer that arrived in two parts: %+v", st)
	}
}

func testErrno(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	path := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	buf := Aligned(t, 4096)
	w := doSync(t, r, &uring.Request{Op: uring.OpWritev, File: register(t, r, ro), Offset: 0, Vecs: [][]byte{buf}, BufIndex: uring.NoBuffer})
	if !errors.Is(w.Err, syscall.EBADF) {
		t.Fatalf("writev on a read-only fd: err %v, want EBADF", w.Err)
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	rd := doSync(t, r, &uring.Request{Op: uring.OpRead, File: register(t, r, dir), Offset: 0, Buf: buf, BufIndex: uring.NoBuffer})
	if !errors.Is(rd.Err, syscall.EISDIR) {
		t.Fatalf("read of a directory: err %v, want EISDIR", rd.Err)
	}
	if st := r.Stats(); st.Errors < 2 {
		t.Errorf("errors counted %d, want >= 2", st.Errors)
	}
}

func testFsyncNop(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	f, err := os.Create(filepath.Join(t.TempDir(), "sync"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := register(t, r, f)
	for _, req := range []*uring.Request{
		{Op: uring.OpFsync, File: h, BufIndex: uring.NoBuffer},
		{Op: uring.OpFsync, Flags: uring.FlagDatasync, File: h, BufIndex: uring.NoBuffer},
		{Op: uring.OpNop, BufIndex: uring.NoBuffer},
	} {
		if got := doSync(t, r, req); got.Err != nil || got.Res != 0 {
			t.Errorf("%s: res %d err %v", req.Op, got.Res, got.Err)
		}
	}
}

func testInvalid(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	c := NewCollector(1)
	f := uring.MakeFile(0, -1)
	for name, req := range map[string]*uring.Request{
		"no handler":     {Op: uring.OpNop},
		"no file":        {Op: uring.OpRead, Buf: make([]byte, 1), Handler: c},
		"no vecs":        {Op: uring.OpReadv, File: f, Handler: c},
		"too many vecs":  {Op: uring.OpWritev, File: f, Vecs: make([][]byte, uring.MaxVecs+1), Handler: c},
		"negative":       {Op: uring.OpRead, File: f, Offset: -7, Buf: make([]byte, 1), Handler: c},
		"unknown opcode": {Op: uring.Op(200), File: f, Handler: c},
	} {
		if err := r.Submit(req); !errors.Is(err, uring.ErrInvalid) {
			t.Errorf("%s: Submit err %v, want ErrInvalid", name, err)
		}
	}
	select {
	case q := <-c.C:
		t.Fatalf("a refused request completed: %+v", q)
	case <-time.After(20 * time.Millisecond):
	}
}

// testBackpressure hands a small ring far more requests than it has entries
// in one call: none may fail.
func testBackpressure(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{Entries: 4, Workers: 2})
	f, err := os.Create(filepath.Join(t.TempDir(), "bp"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := register(t, r, f)
	const n = 1000
	buf := Aligned(t, 512)
	Pattern(buf, 0, 1)
	c := NewCollector(n)
	reqs := make([]uring.Request, n)
	ptrs := make([]*uring.Request, n)
	for i := range reqs {
		reqs[i] = uring.Request{Op: uring.OpWrite, File: h, Offset: int64(i) * 512, Buf: buf, Handler: c, BufIndex: uring.NoBuffer}
		ptrs[i] = &reqs[i]
	}
	if err := r.Submit(ptrs...); err != nil {
		t.Fatalf("submit %d into a 4-entry ring: %v", n, err)
	}
	for _, q := range c.Wait(t, n, 60*time.Second) {
		if q.Err != nil || q.Res != 512 {
			t.Fatalf("write at %d: res %d err %v", q.Offset, q.Res, q.Err)
		}
	}
	if st, err := f.Stat(); err != nil || st.Size() != n*512 {
		t.Fatalf("file size %v (%v), want %d", st.Size(), err, n*512)
	}
}

func testCloseDrains(t *testing.T, newRing NewRing) {
	r := newRing(t, uring.Options{Entries: 8})
	f, err := os.Create(filepath.Join(t.TempDir(), "drain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	const n = 256
	buf := Aligned(t, 4096)
	c := NewCollector(n)
	reqs := make([]uring.Request, n)
	for i := range reqs {
		reqs[i] = uring.Request{Op: uring.OpWrite, File: h, Offset: int64(i) * 4096, Buf: buf, Handler: c, BufIndex: uring.NoBuffer}
		if err := r.Submit(&reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Every accepted request completed before Close returned.
	if len(c.C) != n {
		t.Fatalf("%d of %d completions delivered when Close returned", len(c.C), n)
	}
	for range n {
		if q := <-c.C; q.Err != nil || q.Res != 4096 {
			t.Fatalf("drained write: res %d err %v", q.Res, q.Err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// testCloseInFlight closes a ring while a read waits on a socket that has no
// data. The request must get exactly one completion: ECANCELED where the
// backend can cancel, or the data/EOF that unblocks it where it cannot.
func testCloseInFlight(t *testing.T, newRing NewRing) {
	r := newRing(t, uring.Options{DrainTimeout: 100 * time.Millisecond})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	h, err := r.RegisterFile(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(2)
	buf := Aligned(t, 4096)
	req := &uring.Request{Op: uring.OpRead, File: h, Offset: uring.OffsetCurrent, Buf: buf, Handler: c, BufIndex: uring.NoBuffer}
	if err := r.Submit(req); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	var closeErr error
	closeDone := false
	select {
	case closeErr = <-closed:
		closeDone = true
	case <-time.After(5 * time.Second):
	}
	// A backend that cannot cancel leaves the read in its syscall; ending
	// the peer unblocks it with EOF.
	select {
	case q := <-c.C:
		c.C <- q
	case <-time.After(500 * time.Millisecond):
	}
	if len(c.C) == 0 {
		unix.Close(fds[1])
		fds[1] = -1
	}
	if !closeDone {
		closeErr = <-closed
	}
	if fds[1] >= 0 {
		unix.Close(fds[1])
	}
	got := c.Wait(t, 1, 10*time.Second)[0]
	t.Logf("in-flight read completed with res %d err %v; close: %v", got.Res, got.Err, closeErr)
	if got.Err != nil && !errors.Is(got.Err, syscall.ECANCELED) && !errors.Is(got.Err, syscall.EINTR) {
		t.Fatalf("in-flight read: err %v, want ECANCELED or a clean end", got.Err)
	}
	select {
	case q := <-c.C:
		t.Fatalf("second completion for one request: %+v", q)
	case <-time.After(50 * time.Millisecond):
	}
	if r.InFlight() != 0 {
		t.Fatalf("in flight after close: %d", r.InFlight())
	}
}

func testSubmitAfterClose(t *testing.T, newRing NewRing) {
	r := newRing(t, uring.Options{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	c := NewCollector(1)
	if err := r.Submit(&uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}); !errors.Is(err, uring.ErrClosed) {
		t.Fatalf("submit after close: %v, want ErrClosed", err)
	}
}
