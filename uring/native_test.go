package uring_test

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// newNative opens a native ring for t and, when t ends, closes it and
// checks the ring's own invariants: nothing left in flight and no CQE that
// named a stale slot generation.
func newNative(t testing.TB, opts uring.Options) *uring.NativeRing {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	r, err := uring.NewNative(opts)
	if err != nil {
		if errors.Is(err, uring.ErrUnavailable) {
			testenv.Unavailable(t, "io_uring: %v", err)
		}
		t.Fatalf("NewNative: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if n := r.InFlight(); n != 0 {
			t.Errorf("in flight after close: %d", n)
		}
		if n := r.StaleCompletions(); n != 0 {
			t.Errorf("stale completions: %d", n)
		}
	})
	return r
}

// variants are the setup-flag paths every native test family covers.
var variants = []struct {
	name  string
	opts  uring.Options
	check func(t *testing.T, f uring.Features)
}{
	{"default", uring.Options{}, func(t *testing.T, f uring.Features) {
		if !f.SingleIssuer || !f.DeferTaskrun {
			t.Logf("kernel refused SINGLE_ISSUER|DEFER_TASKRUN: %v", f.SetupFlags)
		}
	}},
	{"NoDeferTaskrun", uring.Options{NoDeferTaskrun: true}, func(t *testing.T, f uring.Features) {
		if f.DeferTaskrun {
			t.Errorf("DEFER_TASKRUN set despite NoDeferTaskrun: %v", f.SetupFlags)
		}
	}},
	{"NoSingleIssuer", uring.Options{NoSingleIssuer: true}, func(t *testing.T, f uring.Features) {
		if f.SingleIssuer || f.DeferTaskrun {
			t.Errorf("SINGLE_ISSUER/DEFER_TASKRUN set despite NoSingleIssuer: %v", f.SetupFlags)
		}
	}},
	{"SQPoll", uring.Options{SQPoll: true, SQPollIdle: 5 * time.Millisecond}, func(t *testing.T, f uring.Features) {
		if !f.SQPoll || f.DeferTaskrun {
			t.Errorf("want SQPOLL without DEFER_TASKRUN, got %v", f.SetupFlags)
		}
	}},
}

// TestNativeConformance runs the shared backend suite for each variant.
func TestNativeConformance(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
				o := v.opts
				o.Entries, o.DrainTimeout, o.Timing = opts.Entries, opts.DrainTimeout, opts.Timing
				return newNative(t, o)
			})
		})
	}
}

// TestNativeSetupVariants checks each flag set is taken as asked and moves
// data through a registered file and a fixed buffer.
func TestNativeSetupVariants(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r := newNative(t, v.opts)
			f := r.Features()
			t.Logf("setup flags %v", f.SetupFlags)
			if f.Backend != "native" || f.Entries != 256 {
				t.Errorf("features: backend %q entries %d", f.Backend, f.Entries)
			}
			v.check(t, f)
			roundTrip(t, r, 64<<10, modeFixedBuffer)
		})
	}
}

// ioMode says how a round trip names its file and memory.
type ioMode int

const (
	modeFd          ioMode = iota // raw descriptor, plain memory
	modeRegistered                // registered file
	modeFixedBuffer               // registered file and registered buffers
)

func (m ioMode) String() string {
	return [...]string{"fd", "registered-file", "fixed-buffer"}[m]
}

// TestNativeVectoredRoundTrip writes with WRITEV and reads back with READV
// (or their fixed forms) on an O_DIRECT file.
func TestNativeVectoredRoundTrip(t *testing.T) {
	for _, mode := range []ioMode{modeFd, modeRegistered, modeFixedBuffer} {
		t.Run(mode.String(), func(t *testing.T) {
			r := newNative(t, uring.Options{})
			for _, size := range []int{512, 4 << 10, 64 << 10, 1 << 20} {
				t.Run(sizeName(size), func(t *testing.T) { roundTrip(t, r, size, mode) })
			}
		})
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// roundTrip writes size bytes at a block-aligned offset with one WRITEV
// split into 4 KiB vecs (at most MaxVecs), reads them back with READV and
// compares. In modeFixedBuffer it checks the fixed opcodes were used.
func roundTrip(t *testing.T, r *uring.NativeRing, size int, mode ioMode) {
	t.Helper()
	fd, direct := ringtest.OpenDirect(t, tempPath(t, "data"), os.O_RDWR|os.O_CREATE)
	defer fd.Close()
	if !direct {
		t.Logf("O_DIRECT refused by the filesystem: buffered I/O")
	}
	file := uring.MakeFile(int(fd.Fd()), -1)
	if mode >= modeRegistered {
		var err error
		if file, err = r.RegisterFile(int(fd.Fd())); err != nil {
			t.Fatalf("register file: %v", err)
		}
		defer r.UnregisterFile(file)
		if _, fixed := file.Fixed(); !fixed && r.Features().RegisteredFDs {
			t.Errorf("file not in the registered table")
		}
	}
	wbuf, rbuf := ringtest.Aligned(t, size), ringtest.Aligned(t, size)
	const off = 3 * 4096
	ringtest.Pattern(wbuf, off, byte(size))
	bufIdx := [2]int16{uring.NoBuffer, uring.NoBuffer}
	if mode == modeFixedBuffer {
		for i, m := range [][]byte{wbuf, rbuf} {
			if err := r.RegisterBuffer(i, m); err != nil {
				t.Fatalf("register buffer %d: %v", i, err)
			}
			bufIdx[i] = int16(i)
		}
		defer func() { _ = r.RegisterBuffer(0, nil); _ = r.RegisterBuffer(1, nil) }()
	}
	before := r.Stats()

	c := ringtest.NewCollector(1)
	vecSize := min(size, 4096)
	w := &uring.Request{Op: uring.OpWritev, File: file, Offset: off, Vecs: split(wbuf, vecSize), BufIndex: bufIdx[0], Handler: c}
	expectOK(t, submitWait(t, r, c, w), size)
	rd := &uring.Request{Op: uring.OpReadv, File: file, Offset: off, Vecs: split(rbuf, vecSize), BufIndex: bufIdx[1], Handler: c}
	expectOK(t, submitWait(t, r, c, rd), size)
	if !bytes.Equal(wbuf, rbuf) {
		t.Fatalf("read back differs from what was written (%d bytes)", size)
	}

	fixed := r.Stats().FixedBufIO - before.FixedBufIO
	switch {
	case mode == modeFixedBuffer && r.Features().FixedVectored && fixed != 2:
		t.Errorf("FixedBufIO grew by %d, want 2 (READV_FIXED/WRITEV_FIXED)", fixed)
	case mode != modeFixedBuffer && fixed != 0:
		t.Errorf("FixedBufIO grew by %d without registered buffers", fixed)
	}
}

func split(buf []byte, n int) [][]byte {
	var out [][]byte
	for len(buf) > 0 {
		k := min(n, len(buf))
		out = append(out, buf[:k])
		buf = buf[k:]
	}
	return out
}

func submitWait(t *testing.T, r uring.Ring, c *ringtest.Collector, q *uring.Request) *uring.Request {
	t.Helper()
	if err := r.Submit(q); err != nil {
		t.Fatalf("submit %s: %v", q.Op, err)
	}
	return c.Wait(t, 1, 30*time.Second)[0]
}

func expectOK(t *testing.T, q *uring.Request, n int) {
	t.Helper()
	if q.Err != nil || q.Res != n {
		t.Fatalf("%s: res %d err %v, want %d bytes", q.Op, q.Res, q.Err, n)
	}
}

// TestNativeFixedSingleBuffer covers READ_FIXED/WRITE_FIXED (5.1) and the
// fallback to plain READ when the buffer is not inside the registered one.
func TestNativeFixedSingleBuffer(t *testing.T) {
	r := newNative(t, uring.Options{})
	if !r.Features().FixedBuffers {
		t.Skip("kernel has no sparse buffer table")
	}
	fd, _ := ringtest.OpenDirect(t, tempPath(t, "data"), os.O_RDWR|os.O_CREATE)
	defer fd.Close()
	file, err := r.RegisterFile(int(fd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	mem := ringtest.Aligned(t, 3*4096)
	if err := r.RegisterBuffer(5, mem[:2*4096]); err != nil {
		t.Fatal(err)
	}
	ringtest.Pattern(mem[:4096], 0, 7)
	c := ringtest.NewCollector(1)
	tests := []struct {
		name      string
		op        uring.Op
		buf       []byte
		wantFixed uint64
	}{
		{"write-fixed", uring.OpWrite, mem[:4096], 1},
		{"read-fixed", uring.OpRead, mem[4096 : 2*4096], 1},
		{"read-outside-buffer", uring.OpRead, mem[2*4096:], 0},
	}
	for _, tc := range tests {
		before := r.Stats().FixedBufIO
		q := &uring.Request{Op: tc.op, File: file, Buf: tc.buf, BufIndex: 5, Handler: c}
		expectOK(t, submitWait(t, r, c, q), 4096)
		if got := r.Stats().FixedBufIO - before; got != tc.wantFixed {
			t.Errorf("%s: FixedBufIO +%d, want +%d", tc.name, got, tc.wantFixed)
		}
	}
	if !bytes.Equal(mem[:4096], mem[4096:2*4096]) || !bytes.Equal(mem[:4096], mem[2*4096:]) {
		t.Fatal("fixed-buffer round trip corrupted data")
	}
}

// TestNativeShortReadResubmit makes the kernel return a real short read: a
// READV with OffsetCurrent on a socket whose peer has written only part of
// the data. The ring must resubmit the rest and complete with the full
// length.
func TestNativeShortReadResubmit(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r := newNative(t, v.opts)
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fds[0])
			defer unix.Close(fds[1])
			file, err := r.RegisterFile(fds[0])
			if err != nil {
				t.Fatal(err)
			}
			defer r.UnregisterFile(file)

			const size, first = 8192, 3000 // first ends inside the first vec
			want := make([]byte, size)
			ringtest.Pattern(want, 0, 3)
			buf := ringtest.Aligned(t, size)
			c := ringtest.NewCollector(1)
			q := &uring.Request{Op: uring.OpReadv, File: file, Offset: uring.OffsetCurrent,
				Vecs: split(buf, 4096), BufIndex: uring.NoBuffer, Handler: c}
			if err := r.Submit(q); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Write(fds[1], want[:first]); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the short read's resubmission", func() bool { return r.Stats().Resubmits > 0 })
			if _, err := unix.Write(fds[1], want[first:]); err != nil {
				t.Fatal(err)
			}
			expectOK(t, c.Wait(t, 1, 10*time.Second)[0], size)
			if !bytes.Equal(buf, want) {
				t.Fatal("reassembled read differs from what the peer wrote")
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNativeEOF: a read past end of file completes short without error.
func TestNativeEOF(t *testing.T) {
	r := newNative(t, uring.Options{})
	path := tempPath(t, "short")
	data := make([]byte, 6000)
	ringtest.Pattern(data, 0, 9)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	file, err := r.RegisterFile(int(fd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   uring.Op
		off  int64
		want int
	}{
		{"readv-across-eof", uring.OpReadv, 0, 6000},
		{"read-across-eof", uring.OpRead, 4096, 6000 - 4096},
		{"read-at-eof", uring.OpRead, 6000, 0},
		{"readv-past-eof", uring.OpReadv, 1 << 20, 0},
	}
	c := ringtest.NewCollector(1)
	for _, tc := range tests {
		buf := make([]byte, 8192)
		q := &uring.Request{Op: tc.op, File: file, Offset: tc.off, Handler: c, BufIndex: uring.NoBuffer}
		if tc.op == uring.OpReadv {
			q.Vecs = split(buf, 4096)
		} else {
			q.Buf = buf
		}
		got := submitWait(t, r, c, q)
		if got.Err != nil || got.Res != tc.want {
			t.Errorf("%s: res %d err %v, want %d and no error", tc.name, got.Res, got.Err, tc.want)
			continue
		}
		if got.Res > 0 && !bytes.Equal(buf[:got.Res], data[tc.off:][:got.Res]) {
			t.Errorf("%s: wrong data", tc.name)
		}
	}
}

// TestNativeConcurrentSubmitters has 16 goroutines write and read back
// their own regions through one small ring (which also exercises
// backpressure), under -race in CI.
func TestNativeConcurrentSubmitters(t *testing.T) {
	r := newNative(t, uring.Options{Entries: 16})
	fd, _ := ringtest.OpenDirect(t, tempPath(t, "data"), os.O_RDWR|os.O_CREATE)
	defer fd.Close()
	file, err := r.RegisterFile(int(fd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	const workers, blocks, bs = 16, 32, 4096
	mem := ringtest.Aligned(t, 2*workers*blocks*bs)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			region := mem[2*w*blocks*bs:][:2*blocks*bs]
			errs <- worker(r, file, int64(w*blocks*bs), region[:blocks*bs], region[blocks*bs:], bs)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if s := r.Stats(); s.Submitted != s.Completed || s.Errors != 0 {
		t.Errorf("stats: %+v", s)
	}
}

// worker writes wbuf at off as blocks of bs bytes, one request each, then
// reads them into rbuf and compares.
func worker(r uring.Ring, file uring.File, off int64, wbuf, rbuf []byte, bs int) error {
	ringtest.Pattern(wbuf, off, 1)
	n := len(wbuf) / bs
	for _, op := range []uring.Op{uring.OpWritev, uring.OpReadv} {
		c := ringtest.NewCollector(n)
		buf := wbuf
		if op == uring.OpReadv {
			buf = rbuf
		}
		for i := range n {
			q := &uring.Request{Op: op, File: file, Offset: off + int64(i*bs),
				Vecs: [][]byte{buf[i*bs:][:bs]}, BufIndex: uring.NoBuffer, Handler: c}
			if err := r.Submit(q); err != nil {
				return err
			}
		}
		for range n {
			select {
			case q := <-c.C:
				if q.Err != nil || q.Res != bs {
					return errors.New(q.Op.String() + ": short or failed: " + errString(q.Err))
				}
			case <-time.After(30 * time.Second):
				return errors.New("timed out")
			}
		}
	}
	if !bytes.Equal(wbuf, rbuf) {
		return errors.New("data mismatch")
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// TestNativeBackpressure submits 1000 reads at once to a 4-entry ring,
// under each setup variant (SQPOLL has its own way to run out of SQ room).
func TestNativeBackpressure(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			opts := v.opts
			opts.Entries = 4
			backpressure(t, newNative(t, opts))
		})
	}
}

func backpressure(t *testing.T, r *uring.NativeRing) {
	if got := r.Features().Entries; got != 4 {
		t.Errorf("Entries = %d, want 4", got)
	}
	const n, bs = 1000, 4096
	data := ringtest.Aligned(t, n*bs)
	ringtest.Pattern(data, 0, 5)
	path := tempPath(t, "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	file, err := r.RegisterFile(int(fd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	buf := ringtest.Aligned(t, n*bs)
	c := ringtest.NewCollector(n)
	reqs := make([]*uring.Request, n)
	for i := range reqs {
		reqs[i] = &uring.Request{Op: uring.OpRead, File: file, Offset: int64(i * bs),
			Buf: buf[i*bs:][:bs], BufIndex: uring.NoBuffer, Handler: c}
	}
	if err := r.Submit(reqs...); err != nil {
		t.Fatalf("submit %d requests to a 4-entry ring: %v", n, err)
	}
	for _, q := range c.Wait(t, n, 60*time.Second) {
		if q.Err != nil || q.Res != bs {
			t.Fatalf("read at %d: res %d err %v", q.Offset, q.Res, q.Err)
		}
	}
	if !bytes.Equal(buf, data) {
		t.Fatal("data mismatch")
	}
	if s := r.Stats(); s.Overflows != 0 {
		t.Errorf("CQ overflowed %d times", s.Overflows)
	}
}

// TestNativeErrno: kernel errors arrive as syscall.Errno.
func TestNativeErrno(t *testing.T) {
	r := newNative(t, uring.Options{})
	path := tempPath(t, "ro")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	registered, err := r.RegisterFile(int(ro.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	buf := make([]byte, 4096)
	tests := []struct {
		name string
		req  uring.Request
		want syscall.Errno
	}{
		{"write-readonly-registered", uring.Request{Op: uring.OpWrite, File: registered, Buf: buf}, syscall.EBADF},
		{"writev-readonly-fd", uring.Request{Op: uring.OpWritev, File: uring.MakeFile(int(ro.Fd()), -1), Vecs: [][]byte{buf}}, syscall.EBADF},
		{"read-directory", uring.Request{Op: uring.OpRead, File: uring.MakeFile(int(dir.Fd()), -1), Buf: buf}, syscall.EISDIR},
	}
	c := ringtest.NewCollector(1)
	for _, tc := range tests {
		q := tc.req
		q.BufIndex, q.Handler = uring.NoBuffer, c
		got := submitWait(t, r, c, &q)
		var errno syscall.Errno
		if !errors.As(got.Err, &errno) || errno != tc.want {
			t.Errorf("%s: err %v (%T), want %v", tc.name, got.Err, got.Err, tc.want)
		}
	}
	if s := r.Stats(); s.Errors != uint64(len(tests)) {
		t.Errorf("Errors = %d, want %d", s.Errors, len(tests))
	}
}

// pipeRead is a read that never completes until cancelled: the pipe has
// no data and its write end stays open.
func pipeReads(t *testing.T, r uring.Ring, n int, c uring.Handler) []*uring.Request {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	file, err := r.RegisterFile(p[0])
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]*uring.Request, n)
	for i := range reqs {
		reqs[i] = &uring.Request{Op: uring.OpRead, File: file, Offset: uring.OffsetCurrent,
			Buf: make([]byte, 64), BufIndex: uring.NoBuffer, Handler: c}
	}
	return reqs
}

// TestNativeCloseCancels: Close with reads that never complete cancels
// them after DrainTimeout, both those in the kernel and those still queued
// behind a full ring, and every one completes with ECANCELED.
func TestNativeCloseCancels(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			opts := v.opts
			opts.Entries, opts.DrainTimeout = 4, 50*time.Millisecond
			r := newNative(t, opts)
			const n = 40 // more than the 6 a 4-entry ring keeps in flight
			c := ringtest.NewCollector(n + 1)
			reqs := pipeReads(t, r, n, c)
			if err := r.Submit(&uring.Request{Op: uring.OpNop, Handler: c}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the nop", func() bool { return r.Stats().Completed == 1 })
			if err := r.Submit(reqs...); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := r.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			t.Logf("close took %v", time.Since(start))
			got := c.Wait(t, n+1, time.Second)
			cancelled := 0
			for _, q := range got {
				switch {
				case q.Op == uring.OpNop && q.Err == nil:
				case errors.Is(q.Err, syscall.ECANCELED):
					cancelled++
				default:
					t.Errorf("%s completed with res %d err %v", q.Op, q.Res, q.Err)
				}
			}
			if s := r.Stats(); cancelled != n || s.Cancelled != n {
				t.Errorf("cancelled %d, Stats.Cancelled %d, want %d", cancelled, s.Cancelled, n)
			}
		})
	}
}

// TestNativeCloseDrains: Close without a timeout completes everything
// accepted, including requests still in the inbox.
func TestNativeCloseDrains(t *testing.T) {
	r := newNative(t, uring.Options{Entries: 8})
	const n = 500
	c := ringtest.NewCollector(n)
	reqs := make([]*uring.Request, n)
	for i := range reqs {
		reqs[i] = &uring.Request{Op: uring.OpNop, Handler: c}
	}
	if err := r.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(c.C); got != n {
		t.Fatalf("%d of %d completions delivered by the time Close returned", got, n)
	}
	for range n {
		if q := <-c.C; q.Err != nil {
			t.Fatalf("drained request failed: %v", q.Err)
		}
	}
}

// TestNativeSubmitAfterClose: Submit and control calls fail with ErrClosed,
// Close is idempotent.
func TestNativeSubmitAfterClose(t *testing.T) {
	r := newNative(t, uring.Options{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	c := ringtest.NewCollector(1)
	if err := r.Submit(&uring.Request{Op: uring.OpNop, Handler: c}); !errors.Is(err, uring.ErrClosed) {
		t.Errorf("submit after close: %v, want ErrClosed", err)
	}
	if _, err := r.RegisterFile(0); !errors.Is(err, uring.ErrClosed) {
		t.Errorf("register file after close: %v, want ErrClosed", err)
	}
	if err := r.RegisterBuffer(0, make([]byte, 4096)); !errors.Is(err, uring.ErrClosed) {
		t.Errorf("register buffer after close: %v, want ErrClosed", err)
	}
	if r.Stats().Submitted != 0 {
		t.Error("a refused request was counted")
	}
}

// countingHandler records every completion and flags duplicates.
type countingHandler struct {
	completed atomic.Int64
	dups      atomic.Int64
}

func (h *countingHandler) Complete(q *uring.Request) {
	if q.UserData != 0 {
		h.dups.Add(1)
	}
	q.UserData = 1
	h.completed.Add(1)
}

// TestNativeCloseRacesSubmit: submitters keep going while Close runs;
// every accepted request completes exactly once and nothing panics.
func TestNativeCloseRacesSubmit(t *testing.T) {
	for i := range 5 {
		r := newNative(t, uring.Options{Entries: 8})
		h := &countingHandler{}
		var accepted atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					q := &uring.Request{Op: uring.OpNop, Handler: h}
					if err := r.Submit(q); err != nil {
						if !errors.Is(err, uring.ErrClosed) {
							t.Errorf("submit: %v", err)
						}
						return
					}
					accepted.Add(1)
				}
			}()
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if a, c := accepted.Load(), h.completed.Load(); a != c || h.dups.Load() != 0 {
			t.Fatalf("accepted %d, completed %d, duplicates %d", a, c, h.dups.Load())
		}
	}
}

// TestNativeTables covers the registered-file and -buffer tables: a full
// or disabled file table still yields working files, and bad buffer calls
// fail with the right sentinel.
func TestNativeTables(t *testing.T) {
	t.Run("file-table-full", func(t *testing.T) {
		r := newNative(t, uring.Options{Files: 2})
		var files []uring.File
		for i := range 3 {
			fd := openData(t)
			f, err := r.RegisterFile(fd)
			if err != nil {
				t.Fatal(err)
			}
			if _, fixed := f.Fixed(); fixed != (i < 2) {
				t.Errorf("file %d: fixed=%v", i, fixed)
			}
			files = append(files, f)
			readOne(t, r, f)
		}
		if err := r.UnregisterFile(files[0]); err != nil {
			t.Fatal(err)
		}
		f, err := r.RegisterFile(openData(t))
		if err != nil {
			t.Fatal(err)
		}
		if idx, fixed := f.Fixed(); !fixed || idx != 0 {
			t.Errorf("freed slot not reused: %d %v", idx, fixed)
		}
		readOne(t, r, f)
	})
	t.Run("no-tables", func(t *testing.T) {
		r := newNative(t, uring.Options{Files: -1, Buffers: -1})
		if f := r.Features(); f.RegisteredFDs || f.FixedBuffers || f.FixedVectored {
			t.Errorf("tables reported despite being disabled: %+v", f)
		}
		f, err := r.RegisterFile(openData(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, fixed := f.Fixed(); fixed {
			t.Error("file registered without a table")
		}
		readOne(t, r, f)
		if err := r.RegisterBuffer(0, make([]byte, 4096)); !errors.Is(err, uring.ErrNotSupported) {
			t.Errorf("register buffer without a table: %v, want ErrNotSupported", err)
		}
	})
	t.Run("buffer-index", func(t *testing.T) {
		r := newNative(t, uring.Options{Buffers: 4})
		mem := ringtest.Aligned(t, 4096)
		for _, tc := range []struct {
			index int
			mem   []byte
			want  error
		}{
			{0, mem, nil},
			{3, mem, nil},
			{4, mem, uring.ErrInvalid},
			{-1, mem, uring.ErrInvalid},
			{0, nil, nil}, // clears
		} {
			if err := r.RegisterBuffer(tc.index, tc.mem); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("RegisterBuffer(%d): %v, want %v", tc.index, err, tc.want)
			}
		}
	})
}

// openData opens a fresh 4 KiB file and returns its descriptor.
func openData(t *testing.T) int {
	t.Helper()
	path := tempPath(t, "f")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func readOne(t *testing.T, r uring.Ring, f uring.File) {
	t.Helper()
	c := ringtest.NewCollector(1)
	q := &uring.Request{Op: uring.OpRead, File: f, Buf: make([]byte, 4096), BufIndex: uring.NoBuffer, Handler: c}
	expectOK(t, submitWait(t, r, c, q), 4096)
}

// TestNativeStats checks the counters add up after a known workload.
func TestNativeStats(t *testing.T) {
	r := newNative(t, uring.Options{Timing: true})
	fd := openData(t)
	file, err := r.RegisterFile(fd)
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	c := ringtest.NewCollector(n)
	for range n {
		q := &uring.Request{Op: uring.OpRead, File: file, Buf: make([]byte, 4096), BufIndex: uring.NoBuffer, Handler: c}
		if err := r.Submit(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range c.Wait(t, n, 10*time.Second) {
		if q.Submitted.IsZero() || q.Completed.Before(q.Submitted) {
			t.Errorf("timing stamps: %v %v", q.Submitted, q.Completed)
		}
	}
	s := r.Stats()
	if s.Submitted != n || s.Completed != n || s.BytesRead != n*4096 || s.InFlight != 0 {
		t.Errorf("stats: %+v", s)
	}
	if s.SQEs < n || s.Enters == 0 {
		t.Errorf("SQEs %d Enters %d", s.SQEs, s.Enters)
	}
}

// allocHandler signals a reusable channel when the expected number of
// completions has arrived; it allocates nothing.
type allocHandler struct {
	want, got atomic.Int64
	done      chan struct{}
}

func (h *allocHandler) Complete(*uring.Request) {
	if h.got.Add(1) == h.want.Load() {
		h.done <- struct{}{}
	}
}

// TestNativeZeroAllocs: in steady state a batch of 32 4 KiB reads costs no
// allocation, on the submit side or the ring's.
func TestNativeZeroAllocs(t *testing.T) {
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			r := newNative(t, v.opts)
			f, _ := ringtest.OpenReadMaybeDirect(t, ringtest.BenchFilePath(t))
			defer f.Close()
			file, err := r.RegisterFile(int(f.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			const depth, bs = 32, 4096
			mem := ringtest.Aligned(t, depth*bs)
			h := &allocHandler{done: make(chan struct{}, 1)}
			h.want.Store(depth)
			reqs := make([]uring.Request, depth)
			ptrs := make([]*uring.Request, depth)
			for i := range reqs {
				ptrs[i] = &reqs[i]
			}
			batch := func() {
				h.got.Store(0)
				for i, q := range ptrs {
					*q = uring.Request{Op: uring.OpRead, File: file, Offset: int64(i * 7 * bs),
						Buf: mem[i*bs:][:bs], BufIndex: uring.NoBuffer, Handler: h}
				}
				if err := r.Submit(ptrs...); err != nil {
					panic(err)
				}
				<-h.done
			}
			batch() // warm up
			if allocs := testing.AllocsPerRun(200, batch); allocs != 0 {
				t.Errorf("%.2f allocations per batch of %d reads, want 0", allocs, depth)
			}
			for _, q := range reqs {
				if q.Err != nil || q.Res != bs {
					t.Fatalf("read: res %d err %v", q.Res, q.Err)
				}
			}
		})
	}
}
