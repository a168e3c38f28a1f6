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
		{"OffsetCurrentFile", testOffsetCurrent},
		{"ShortTransferResubmit", testShortTransfer},
		{"ErrorsAreErrno", testErrno},
		{"FsyncAndNop", testFsyncNop},
		{"TimingLatency", testTiming},
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

// Register registers fd with r and unregisters it when t ends.
func Register(t testing.TB, r uring.Ring, fd int) uring.File {
	t.Helper()
	h, err := r.RegisterFile(fd)
	if err != nil {
		t.Fatalf("register fd %d: %v", fd, err)
	}
	t.Cleanup(func() { _ = r.UnregisterFile(h) })
	return h
}

// Do submits req with a handler of its own and waits for its completion.
func Do(t testing.TB, r uring.Ring, req *uring.Request) *uring.Request {
	t.Helper()
	c := NewCollector(1)
	req.Handler = c
	if err := r.Submit(req); err != nil {
		t.Fatalf("submit %s: %v", req.Op, err)
	}
	return c.Wait(t, 1, 30*time.Second)[0]
}

// SplitVecs cuts buf into vecs of at most vecSize bytes.
func SplitVecs(buf []byte, vecSize int) [][]byte {
	var vecs [][]byte
	for len(buf) > 0 {
		n := min(vecSize, len(buf))
		vecs = append(vecs, buf[:n])
		buf = buf[n:]
	}
	return vecs
}

// WaitFor polls cond until it holds, failing t after 10 seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// PendingReads returns n reads with handler h that never complete on their
// own: they wait on an empty pipe whose write end stays open until t ends.
// Tests of Close's cancellation submit them.
func PendingReads(t testing.TB, r uring.Ring, n int, h uring.Handler) []*uring.Request {
	t.Helper()
	const size = 64
	mem := Aligned(t, n*size)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatalf("pipe: %v", err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	f := Register(t, r, p[0])
	reqs := make([]*uring.Request, n)
	for i := range reqs {
		reqs[i] = &uring.Request{Op: uring.OpRead, File: f, Offset: uring.OffsetCurrent,
			Buf: mem[i*size:][:size], BufIndex: uring.NoBuffer, Handler: h}
	}
	return reqs
}

// fileWith writes data to a new file and opens it read-only until t ends.
func fileWith(t *testing.T, data []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func openRing(t *testing.T, newRing NewRing, opts uring.Options) uring.Ring {
	t.Helper()
	r := newRing(t, opts)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

var roundTripSizes = []int{512, 4096, 64 << 10, 1 << 20}

// roundTrip writes a pattern with writev at several offsets and reads it
// back with readv into differently shaped vecs; the byte counters must
// account for exactly what moved.
func roundTrip(t *testing.T, r uring.Ring, f uring.File, base int64) {
	var total uint64
	for _, size := range roundTripSizes {
		total += uint64(size)
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			off := base + int64(size)*3
			wbuf := Aligned(t, size)
			Pattern(wbuf, off, byte(size))
			wvec := min(size, 4096)
			w := Do(t, r, &uring.Request{Op: uring.OpWritev, File: f, Offset: off, Vecs: SplitVecs(wbuf, wvec), BufIndex: uring.NoBuffer})
			if w.Err != nil || w.Res != size {
				t.Fatalf("writev %d at %d: res %d err %v", size, off, w.Res, w.Err)
			}
			rbuf := Aligned(t, size)
			rvec := min(size, 512*((size/512+3)/4)) // four-ish vecs of whole sectors
			rd := Do(t, r, &uring.Request{Op: uring.OpReadv, File: f, Offset: off, Vecs: SplitVecs(rbuf, rvec), BufIndex: uring.NoBuffer})
			if rd.Err != nil || rd.Res != size {
				t.Fatalf("readv %d at %d: res %d err %v", size, off, rd.Res, rd.Err)
			}
			if !bytes.Equal(rbuf, wbuf) {
				t.Fatalf("readv %d at %d: data differs from what writev wrote", size, off)
			}
		})
	}
	if st := r.Stats(); st.BytesWrite != total || st.BytesRead != total || st.InFlight != 0 {
		t.Errorf("stats after the round trips: wrote %d read %d in flight %d, want %d, %d, 0",
			st.BytesWrite, st.BytesRead, st.InFlight, total, total)
	}
}

func testRoundTripFile(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	f, _ := OpenDirect(t, filepath.Join(t.TempDir(), "data"), os.O_RDWR|os.O_CREATE)
	defer f.Close()
	roundTrip(t, r, Register(t, r, int(f.Fd())), 1<<20)
}

func testRoundTripLoop(t *testing.T, newRing NewRing) {
	dev, _ := testenv.LoopDevice(t, 64<<20)
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open %s O_DIRECT: %v", dev, err)
	}
	defer f.Close()
	r := openRing(t, newRing, uring.Options{})
	roundTrip(t, r, Register(t, r, int(f.Fd())), 8<<20)
}

func testSingleBuffer(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	f, _ := OpenDirect(t, filepath.Join(t.TempDir(), "data"), os.O_RDWR|os.O_CREATE)
	defer f.Close()
	h := Register(t, r, int(f.Fd()))
	wbuf := Aligned(t, 8192)
	Pattern(wbuf, 4096, 7)
	if w := Do(t, r, &uring.Request{Op: uring.OpWrite, File: h, Offset: 4096, Buf: wbuf, BufIndex: uring.NoBuffer}); w.Err != nil || w.Res != len(wbuf) {
		t.Fatalf("write: res %d err %v", w.Res, w.Err)
	}
	rbuf := Aligned(t, 8192)
	if rd := Do(t, r, &uring.Request{Op: uring.OpRead, File: h, Offset: 4096, Buf: rbuf, BufIndex: uring.NoBuffer}); rd.Err != nil || rd.Res != len(rbuf) {
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
	h := Register(t, r, int(f.Fd()))
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
	if st := r.Stats(); st.Submitted != goroutines*perG*2 || st.Completed != st.Submitted || st.Errors != 0 || st.InFlight != 0 {
		t.Errorf("stats after run: submitted %d completed %d errors %d in flight %d, want %d, %d, 0, 0",
			st.Submitted, st.Completed, st.Errors, st.InFlight, goroutines*perG*2, goroutines*perG*2)
	}
}

// testEOF reads across, at and past the end of a regular file: each read
// completes short without an error, with exactly the bytes that are there,
// and leaves the rest of its buffer alone.
func testEOF(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	const size = 6000
	data := make([]byte, size)
	Pattern(data, 0, 9)
	h := Register(t, r, int(fileWith(t, data).Fd()))
	tests := []struct {
		name string
		op   uring.Op
		off  int64
		want int
	}{
		{"readv-across-eof", uring.OpReadv, 0, size},
		{"readv-across-eof-unaligned", uring.OpReadv, 1000, size - 1000},
		{"read-across-eof", uring.OpRead, 4096, size - 4096},
		{"read-at-eof", uring.OpRead, size, 0},
		{"read-past-eof", uring.OpRead, 8192, 0},
		{"readv-past-eof", uring.OpReadv, 1 << 20, 0},
	}
	for _, tc := range tests {
		buf := Aligned(t, 8192)
		req := &uring.Request{Op: tc.op, File: h, Offset: tc.off, BufIndex: uring.NoBuffer}
		if tc.op == uring.OpReadv {
			req.Vecs = SplitVecs(buf, 4096)
		} else {
			req.Buf = buf
		}
		got := Do(t, r, req)
		if got.Err != nil || got.Res != tc.want {
			t.Errorf("%s at %d: res %d err %v, want %d bytes and no error", tc.name, tc.off, got.Res, got.Err, tc.want)
			continue
		}
		if !bytes.Equal(buf[:got.Res], data[min(tc.off, size):][:got.Res]) {
			t.Errorf("%s: data differs from the file's", tc.name)
		}
		if !bytes.Equal(buf[got.Res:], make([]byte, len(buf)-got.Res)) {
			t.Errorf("%s: bytes past the %d read were written", tc.name, got.Res)
		}
	}
}

// testOffsetCurrent reads a regular file in pieces at its file position:
// each read, single-buffer or vectored, starts where the last one stopped,
// and one at the end of the file returns zero bytes.
func testOffsetCurrent(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	want := make([]byte, 3*4096)
	Pattern(want, 0, 4)
	h := Register(t, r, int(fileWith(t, want).Fd()))
	got := Aligned(t, len(want))
	for i, op := range []uring.Op{uring.OpRead, uring.OpReadv, uring.OpRead} {
		part := got[i*4096:][:4096]
		req := &uring.Request{Op: op, File: h, Offset: uring.OffsetCurrent, Buf: part, BufIndex: uring.NoBuffer}
		if op == uring.OpReadv {
			req.Buf, req.Vecs = nil, SplitVecs(part, 1024)
		}
		if q := Do(t, r, req); q.Err != nil || q.Res != len(part) {
			t.Fatalf("%s %d at the file position: res %d err %v", op, i, q.Res, q.Err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reads at the file position returned other bytes")
	}
	if q := Do(t, r, &uring.Request{Op: uring.OpRead, File: h, Offset: uring.OffsetCurrent, Buf: Aligned(t, 4096), BufIndex: uring.NoBuffer}); q.Err != nil || q.Res != 0 {
		t.Fatalf("read at the file position at the end: res %d err %v, want 0 bytes", q.Res, q.Err)
	}
}

// testShortTransfer makes the kernel return a real short read: a readv on a
// socket whose peer has sent only part of the data, ending inside a vec. The
// ring must count the resubmission, resume where the transfer stopped and
// complete once with everything.
func testShortTransfer(t *testing.T, newRing NewRing) {
	// Many vecs, the first read ending inside the fourth; one vec (a
	// backend may issue a one-vec request as a plain read); and vecs with
	// gaps between them in memory (a backend that merges vecs that
	// follow each other must not merge these).
	for _, tc := range []struct {
		vec int
		gap bool
	}{{3000, false}, {24 << 10, false}, {3000, true}} {
		t.Run(fmt.Sprintf("vec=%d,gaps=%v", tc.vec, tc.gap), func(t *testing.T) { shortTransfer(t, newRing, tc.vec, tc.gap) })
	}
}

// gappedVecs cuts size bytes of vecs of vec bytes from buf (2*size long),
// each followed by a gap as long as itself.
func gappedVecs(buf []byte, size, vec int) [][]byte {
	var vecs [][]byte
	for off, n := 0, 0; n < size; off += 2 * vec {
		l := min(vec, size-n)
		vecs = append(vecs, buf[off:off+l])
		n += l
	}
	return vecs
}

func shortTransfer(t *testing.T, newRing NewRing, vec int, gaps bool) {
	r := openRing(t, newRing, uring.Options{})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	h := Register(t, r, fds[0])
	const size, first = 24 << 10, 10000
	want := make([]byte, size)
	Pattern(want, 0, 3)
	buf := Aligned(t, 2*size)
	vecs := SplitVecs(buf[:size], vec)
	if gaps {
		vecs = gappedVecs(buf, size, vec)
	}
	c := NewCollector(2)
	req := &uring.Request{Op: uring.OpReadv, File: h, Offset: uring.OffsetCurrent, Vecs: vecs, Handler: c, BufIndex: uring.NoBuffer}
	if err := r.Submit(req); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fds[1], want[:first]); err != nil {
		t.Fatal(err)
	}
	// The rest is sent only once the ring has seen the short read.
	WaitFor(t, "the short read's resubmission", func() bool { return r.Stats().Resubmits > 0 })
	if _, err := unix.Write(fds[1], want[first:]); err != nil {
		t.Fatal(err)
	}
	got := c.Wait(t, 1, 10*time.Second)[0]
	if got.Err != nil || got.Res != size {
		t.Fatalf("socket readv: res %d err %v, want %d", got.Res, got.Err, size)
	}
	if !bytes.Equal(bytes.Join(vecs, nil), want) {
		t.Fatal("socket readv: resumed transfer put bytes in the wrong place")
	}
	for off := vec; gaps && off < len(buf); off += 2 * vec {
		if gap := buf[off:min(off+vec, len(buf))]; bytes.Count(gap, []byte{0}) != len(gap) {
			t.Fatalf("socket readv: bytes landed in the gap at %d", off)
		}
	}
	select {
	case q := <-c.C:
		t.Fatalf("second completion for one request: %+v", q)
	case <-time.After(20 * time.Millisecond):
	}
	if st := r.Stats(); st.Submitted != 1 || st.Completed != 1 {
		t.Errorf("stats: submitted %d completed %d, want one of each", st.Submitted, st.Completed)
	}
}

// testErrno: kernel errors arrive as bare syscall.Errno values with Res 0,
// through registered files and plain descriptors alike, and each is counted
// once.
func testErrno(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	ro := fileWith(t, make([]byte, 4096))
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	roFile, dirFile := Register(t, r, int(ro.Fd())), Register(t, r, int(dir.Fd()))
	// MakeFile(fd, -1) is the plain descriptor a ring without a file
	// table hands out.
	roFd, dirFd := uring.MakeFile(int(ro.Fd()), -1), uring.MakeFile(int(dir.Fd()), -1)
	buf := Aligned(t, 4096)
	tests := []struct {
		name string
		req  uring.Request
		want syscall.Errno
	}{
		{"write-readonly", uring.Request{Op: uring.OpWrite, File: roFile, Buf: buf}, syscall.EBADF},
		{"writev-readonly", uring.Request{Op: uring.OpWritev, File: roFile, Vecs: [][]byte{buf}}, syscall.EBADF},
		{"writev-readonly-fd", uring.Request{Op: uring.OpWritev, File: roFd, Vecs: [][]byte{buf}}, syscall.EBADF},
		{"read-directory", uring.Request{Op: uring.OpRead, File: dirFile, Buf: buf}, syscall.EISDIR},
		{"read-directory-fd", uring.Request{Op: uring.OpRead, File: dirFd, Buf: buf}, syscall.EISDIR},
	}
	for _, tc := range tests {
		req := tc.req
		req.BufIndex = uring.NoBuffer
		got := Do(t, r, &req)
		if errno, ok := got.Err.(syscall.Errno); !ok || errno != tc.want || got.Res != 0 {
			t.Errorf("%s: res %d err %v (%T), want res 0 and syscall.Errno %v", tc.name, got.Res, got.Err, got.Err, tc.want)
		}
	}
	if st := r.Stats(); st.Errors != uint64(len(tests)) {
		t.Errorf("errors counted %d, want %d", st.Errors, len(tests))
	}
}

func testFsyncNop(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{})
	f, err := os.Create(filepath.Join(t.TempDir(), "sync"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := Register(t, r, int(f.Fd()))
	for _, req := range []*uring.Request{
		{Op: uring.OpFsync, File: h, BufIndex: uring.NoBuffer},
		{Op: uring.OpFsync, Flags: uring.FlagDatasync, File: h, BufIndex: uring.NoBuffer},
		{Op: uring.OpNop, BufIndex: uring.NoBuffer},
	} {
		if got := Do(t, r, req); got.Err != nil || got.Res != 0 {
			t.Errorf("%s: res %d err %v", req.Op, got.Res, got.Err)
		}
	}
}

// testTiming: with Options.Timing every completion is stamped and counted
// in its op class's latency histogram; without it nothing is.
func testTiming(t *testing.T, newRing NewRing) {
	for _, timing := range []bool{false, true} {
		t.Run(fmt.Sprint(timing), func(t *testing.T) {
			r := openRing(t, newRing, uring.Options{Timing: timing})
			f, _ := OpenDirect(t, filepath.Join(t.TempDir(), "data"), os.O_RDWR|os.O_CREATE)
			defer f.Close()
			h := Register(t, r, int(f.Fd()))
			buf := Aligned(t, 4096)
			reqs := []*uring.Request{
				{Op: uring.OpWritev, File: h, Vecs: [][]byte{buf}, BufIndex: uring.NoBuffer},
				{Op: uring.OpReadv, File: h, Vecs: [][]byte{buf}, BufIndex: uring.NoBuffer},
				{Op: uring.OpReadv, File: h, Vecs: [][]byte{buf}, BufIndex: uring.NoBuffer},
				{Op: uring.OpFsync, File: h, BufIndex: uring.NoBuffer},
			}
			for _, q := range reqs {
				if got := Do(t, r, q); got.Err != nil {
					t.Fatalf("%s: %v", q.Op, got.Err)
				}
				if stamped := !q.Submitted.IsZero() && !q.Completed.Before(q.Submitted); stamped != timing {
					t.Errorf("%s: submitted %v completed %v with timing %v", q.Op, q.Submitted, q.Completed, timing)
				}
			}
			want := [uring.NumLatencyOps]uint64{2, 1, 1} // read, write, other
			if !timing {
				want = [uring.NumLatencyOps]uint64{}
			}
			lat := r.Stats().Latency
			for op := range uring.NumLatencyOps {
				if got := lat[op].Count(); got != want[op] {
					t.Errorf("%s latencies counted: %d, want %d", uring.LatencyOpNames[op], got, want[op])
				}
			}
		})
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
	if _, err := r.RegisterFile(-1); !errors.Is(err, uring.ErrInvalid) {
		t.Errorf("RegisterFile(-1): %v, want ErrInvalid", err)
	}
	select {
	case q := <-c.C:
		t.Fatalf("a refused request completed: %+v", q)
	case <-time.After(20 * time.Millisecond):
	}

	// In a batch, the valid requests before an invalid one are accepted
	// and complete; the invalid one and those after it are refused.
	ok := &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}
	bad := &uring.Request{Op: uring.OpReadv, File: f, Handler: c}
	after := &uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}
	if err := r.Submit(ok, bad, after); !errors.Is(err, uring.ErrInvalid) {
		t.Fatalf("batch with an invalid middle request: %v, want ErrInvalid", err)
	}
	if q := c.Wait(t, 1, 30*time.Second)[0]; q != ok {
		t.Fatalf("completion of %+v, want the valid request before the invalid one", q)
	}
	select {
	case q := <-c.C:
		t.Fatalf("a refused request completed: %+v", q)
	case <-time.After(20 * time.Millisecond):
	}
}

// testBackpressure hands a small ring far more requests than it has entries
// in one call, writes and then reads: none may fail, each moves its own
// block, and the completion queue never overflows.
func testBackpressure(t *testing.T, newRing NewRing) {
	r := openRing(t, newRing, uring.Options{Entries: 4, Workers: 2})
	f, err := os.Create(filepath.Join(t.TempDir(), "bp"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := Register(t, r, int(f.Fd()))
	const n, bs = 1000, 512
	wbuf, rbuf := Aligned(t, n*bs), Aligned(t, n*bs)
	Pattern(wbuf, 0, 1)
	for _, op := range []uring.Op{uring.OpWrite, uring.OpRead} {
		buf := wbuf
		if op == uring.OpRead {
			buf = rbuf
		}
		c := NewCollector(n)
		reqs := make([]uring.Request, n)
		ptrs := make([]*uring.Request, n)
		for i := range reqs {
			reqs[i] = uring.Request{Op: op, File: h, Offset: int64(i) * bs, Buf: buf[i*bs:][:bs], Handler: c, BufIndex: uring.NoBuffer}
			ptrs[i] = &reqs[i]
		}
		if err := r.Submit(ptrs...); err != nil {
			t.Fatalf("submit %d %ss into a 4-entry ring: %v", n, op, err)
		}
		for _, q := range c.Wait(t, n, 60*time.Second) {
			if q.Err != nil || q.Res != bs {
				t.Fatalf("%s at %d: res %d err %v", op, q.Offset, q.Res, q.Err)
			}
		}
	}
	if st, err := f.Stat(); err != nil || st.Size() != n*bs {
		t.Fatalf("file size %v (%v), want %d", st.Size(), err, n*bs)
	}
	if !bytes.Equal(rbuf, wbuf) {
		t.Fatal("reads returned other bytes than the writes wrote")
	}
	if st := r.Stats(); st.Overflows != 0 || st.InFlight != 0 {
		t.Errorf("stats: overflows %d in flight %d, want 0", st.Overflows, st.InFlight)
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
	if st := r.Stats(); st.Completed != n || st.Cancelled != 0 || st.InFlight != 0 {
		t.Fatalf("stats after a drain: completed %d cancelled %d in flight %d, want %d, 0, 0", st.Completed, st.Cancelled, st.InFlight, n)
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

// testSubmitAfterClose: a closed ring refuses requests without counting
// them, and Close is idempotent.
func testSubmitAfterClose(t *testing.T, newRing NewRing) {
	r := newRing(t, uring.Options{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	c := NewCollector(1)
	if err := r.Submit(&uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}); !errors.Is(err, uring.ErrClosed) {
		t.Fatalf("submit after close: %v, want ErrClosed", err)
	}
	if st := r.Stats(); st.Submitted != 0 || st.InFlight != 0 {
		t.Errorf("a refused request was counted: submitted %d in flight %d", st.Submitted, st.InFlight)
	}
}

// Backend is a ring backend a wrapping ring (faultring, crashring) is
// tested over.
type Backend struct {
	Name string
	Open NewRing
}

// Backends are the backends every build has: the sync ring, and the
// native ring where the kernel has io_uring (else the test is reported
// unavailable: skipped on a laptop, failed under CI=true).
var Backends = []Backend{
	{"sync", func(t *testing.T, opts uring.Options) uring.Ring { return uring.NewSync(opts) }},
	{"native", func(t *testing.T, opts uring.Options) uring.Ring {
		r, err := uring.NewNative(opts)
		if err != nil {
			testenv.Unavailable(t, "native ring: %v", err)
		}
		return r
	}},
}
