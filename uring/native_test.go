package uring_test

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
				r := newNative(t, o)
				// The suite asks for powers of two, which the ring keeps.
				if want := cmp.Or(opts.Entries, 256); r.Features().Entries != want {
					t.Errorf("Features().Entries = %d, want %d", r.Features().Entries, want)
				}
				return r
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
				t.Run(fmt.Sprint(size), func(t *testing.T) { roundTrip(t, r, size, mode) })
			}
		})
	}
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
		file = ringtest.Register(t, r, int(fd.Fd()))
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

	vecSize := min(size, 4096)
	w := &uring.Request{Op: uring.OpWritev, File: file, Offset: off, Vecs: ringtest.SplitVecs(wbuf, vecSize), BufIndex: bufIdx[0]}
	expectOK(t, ringtest.Do(t, r, w), size)
	rd := &uring.Request{Op: uring.OpReadv, File: file, Offset: off, Vecs: ringtest.SplitVecs(rbuf, vecSize), BufIndex: bufIdx[1]}
	expectOK(t, ringtest.Do(t, r, rd), size)
	if !bytes.Equal(wbuf, rbuf) {
		t.Fatalf("read back differs from what was written (%d bytes)", size)
	}

	// One vec goes as READ_FIXED/WRITE_FIXED (5.1), more as the vectored
	// fixed opcodes (6.15).
	fixed := r.Stats().FixedBufIO - before.FixedBufIO
	switch {
	case mode == modeFixedBuffer && (r.Features().FixedVectored || size <= vecSize) && fixed != 2:
		t.Errorf("FixedBufIO grew by %d, want 2 (fixed-buffer opcodes)", fixed)
	case mode != modeFixedBuffer && fixed != 0:
		t.Errorf("FixedBufIO grew by %d without registered buffers", fixed)
	}
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
	file := ringtest.Register(t, r, int(fd.Fd()))
	mem := ringtest.Aligned(t, 3*4096)
	if err := r.RegisterBuffer(5, mem[:2*4096]); err != nil {
		t.Fatal(err)
	}
	ringtest.Pattern(mem[:4096], 0, 7)
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
		expectOK(t, ringtest.Do(t, r, &uring.Request{Op: tc.op, File: file, Buf: tc.buf, BufIndex: 5}), 4096)
		if got := r.Stats().FixedBufIO - before; got != tc.wantFixed {
			t.Errorf("%s: FixedBufIO +%d, want +%d", tc.name, got, tc.wantFixed)
		}
	}
	if !bytes.Equal(mem[:4096], mem[4096:2*4096]) || !bytes.Equal(mem[:4096], mem[2*4096:]) {
		t.Fatal("fixed-buffer round trip corrupted data")
	}
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
			reqs := ringtest.PendingReads(t, r, n, c)
			if err := r.Submit(&uring.Request{Op: uring.OpNop, Handler: c}); err != nil {
				t.Fatal(err)
			}
			ringtest.WaitFor(t, "the nop", func() bool { return r.Stats().Completed == 1 })
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

// TestNativeRegisterAfterClose: the table calls, which run on the ring's
// goroutine, fail with ErrClosed once it is gone (Submit is in the suite).
func TestNativeRegisterAfterClose(t *testing.T) {
	r := newNative(t, uring.Options{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RegisterFile(0); !errors.Is(err, uring.ErrClosed) {
		t.Errorf("register file after close: %v, want ErrClosed", err)
	}
	if err := r.RegisterBuffer(0, make([]byte, 4096)); !errors.Is(err, uring.ErrClosed) {
		t.Errorf("register buffer after close: %v, want ErrClosed", err)
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
	q := &uring.Request{Op: uring.OpRead, File: f, Buf: ringtest.Aligned(t, 4096), BufIndex: uring.NoBuffer}
	expectOK(t, ringtest.Do(t, r, q), 4096)
}

// TestNativeStats checks the counters add up after a known workload.
func TestNativeStats(t *testing.T) {
	r := newNative(t, uring.Options{Timing: true})
	file := ringtest.Register(t, r, openData(t))
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
			file := ringtest.Register(t, r, int(f.Fd()))
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

// TestNativeAsyncPunt: a file that cannot do nonblocking I/O (RWF_NOWAIT
// reads fail with EOPNOTSUPP; zram on this kernel) is registered Punted, a
// regular file and any file with NoAsyncPunt are not, and reads of a
// punted file (IOSQE_ASYNC) move the right bytes.
func TestNativeAsyncPunt(t *testing.T) {
	dev := testenv.NewZram(t, 16<<20)
	zf, err := os.OpenFile(dev, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	probe := ringtest.Aligned(t, 4096)
	_, perr := unix.Preadv2(int(zf.Fd()), [][]byte{probe}, 0, unix.RWF_NOWAIT)
	lacks := errors.Is(perr, unix.EOPNOTSUPP)
	t.Logf("%s: RWF_NOWAIT read: %v", dev, perr)

	r := newNative(t, uring.Options{})
	zfile := ringtest.Register(t, r, int(zf.Fd()))
	if zfile.Punted() != (lacks && r.Features().AsyncPunt) {
		t.Fatalf("zram file punted %v; RWF_NOWAIT refused %v, ring punts %v", zfile.Punted(), lacks, r.Features().AsyncPunt)
	}
	if plain := ringtest.Register(t, r, openData(t)); plain.Punted() {
		t.Error("a regular file is punted")
	}
	r2 := newNative(t, uring.Options{NoAsyncPunt: true})
	if f := ringtest.Register(t, r2, int(zf.Fd())); f.Punted() || r2.Features().AsyncPunt {
		t.Error("NoAsyncPunt: file punted")
	}

	// 64 pages written with pwrite, read back through the ring in one-page
	// and multi-page reads at once.
	want := ringtest.Aligned(t, 64*4096)
	ringtest.Pattern(want, 0, 11)
	if _, err := zf.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	got := ringtest.Aligned(t, len(want))
	c := ringtest.NewCollector(16)
	for i := range 16 {
		piece := got[i*4*4096 : (i+1)*4*4096]
		q := &uring.Request{Op: uring.OpReadv, File: zfile, Offset: int64(i * 4 * 4096), Vecs: ringtest.SplitVecs(piece, 4096<<(i%2*2)), Handler: c, BufIndex: uring.NoBuffer}
		if err := r.Submit(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range c.Wait(t, 16, 10*time.Second) {
		expectOK(t, q, 4*4096)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reads of the punted file differ from what was written")
	}
}

// TestNativeLazyWaitLiveness: with many requests in the kernel that do not
// complete (pipe reads with no writer), the ring waits lazily for a batch
// and producers do not wake it; new work must still go through, within
// the lazy wait's bound. Nops submitted one by one behind 64 pending reads
// each complete (long before the test's deadline), with and without lazy
// waits.
func TestNativeLazyWaitLiveness(t *testing.T) {
	for _, noLazy := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoLazyWait=%v", noLazy), func(t *testing.T) {
			r := newNative(t, uring.Options{NoLazyWait: noLazy, DrainTimeout: 50 * time.Millisecond})
			pending := ringtest.NewCollector(64)
			if err := r.Submit(ringtest.PendingReads(t, r, 64, pending)...); err != nil {
				t.Fatal(err)
			}
			ringtest.WaitFor(t, "64 reads in flight", func() bool { return r.InFlight() == 64 })
			nops := ringtest.NewCollector(1)
			start := time.Now()
			for range 50 {
				q := &uring.Request{Op: uring.OpNop, BufIndex: uring.NoBuffer, Handler: nops}
				if err := r.Submit(q); err != nil {
					t.Fatal(err)
				}
				if got := nops.Wait(t, 1, 5*time.Second)[0]; got.Err != nil {
					t.Fatalf("nop: %v", got.Err)
				}
			}
			t.Logf("50 nops behind 64 pending reads in %v", time.Since(start))
		})
	}
}

// TestNativeLazyWaitIdle: requests that stay out (reads of a silent pipe)
// do not make the lazy wait poll: after one lazy wait runs out with nothing
// completed, the ring blocks until something happens. (It entered the
// kernel some 12,000 times a second before.)
func TestNativeLazyWaitIdle(t *testing.T) {
	r := newNative(t, uring.Options{DrainTimeout: 50 * time.Millisecond})
	pending := ringtest.NewCollector(64)
	if err := r.Submit(ringtest.PendingReads(t, r, 64, pending)...); err != nil {
		t.Fatal(err)
	}
	ringtest.WaitFor(t, "64 reads in flight", func() bool { return r.InFlight() == 64 })
	before := r.Stats().Enters
	time.Sleep(200 * time.Millisecond)
	if n := r.Stats().Enters - before; n > 20 {
		t.Errorf("%d io_uring_enter calls in 200 ms with nothing completing", n)
	}
}

// TestNativeHugeRange: one contiguous range of 4 GiB (which does not fit
// an SQE's 32-bit length) is sent in capped pieces, not as length 0: a
// read of an 8 KiB file into it returns the file's 8 KiB.
func TestNativeHugeRange(t *testing.T) {
	r := newNative(t, uring.Options{})
	mem, err := unix.Mmap(-1, 0, 4<<30, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Skipf("no 4 GiB of address space: %v", err)
	}
	defer unix.Munmap(mem)
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("8 KiB of data.\n"), 8192/15+1)[:8192]
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := ringtest.Register(t, r, int(f.Fd()))
	for _, vecs := range [][][]byte{{mem}, {mem[:2<<30], mem[2<<30:]}} {
		q := ringtest.Do(t, r, &uring.Request{Op: uring.OpReadv, File: h, Vecs: vecs, BufIndex: uring.NoBuffer})
		if q.Err != nil || q.Res != len(want) || !bytes.Equal(mem[:len(want)], want) {
			t.Errorf("%d vecs over 4 GiB: res %d err %v", len(vecs), q.Res, q.Err)
		}
	}
}

// TestOpenFor: with BackendAuto, a ring for a file without nonblocking I/O
// (zram) is the sync ring, with a log line; for a regular file it is what
// Open gives (native here); a backend asked for by name is that backend.
func TestOpenFor(t *testing.T) {
	dev := testenv.NewZram(t, 16<<20)
	zf, err := os.OpenFile(dev, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	if !uring.LacksNowait(int(zf.Fd())) {
		t.Skipf("%s takes nonblocking I/O on this kernel", dev)
	}
	plain := openData(t)
	if uring.LacksNowait(plain) {
		t.Fatal("a regular file lacks nonblocking I/O")
	}
	// What BackendAuto gives without a file: native, or sync on a host
	// without io_uring.
	auto, err := uring.Open(uring.BackendAuto, uring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	autoBackend := auto.Features().Backend
	auto.Close()
	// A file that lacks nonblocking I/O but is not a block device (tmpfs)
	// keeps the native ring: only block drivers are known to work in the
	// submitter.
	shm := plain
	if f, err := os.CreateTemp("/dev/shm", "mpaged-openfor-"); err == nil {
		defer os.Remove(f.Name())
		defer f.Close()
		f.Write(make([]byte, 8192))
		shm = int(f.Fd())
	}
	for _, tc := range []struct {
		name, backend string
		fd            int
		want          string
	}{
		{"auto zram", uring.BackendAuto, int(zf.Fd()), uring.BackendSync},
		{"auto file", uring.BackendAuto, plain, autoBackend},
		{"auto tmpfs file", uring.BackendAuto, shm, autoBackend},
		{"native zram", uring.BackendNative, int(zf.Fd()), uring.BackendNative},
		{"sync file", uring.BackendSync, plain, uring.BackendSync},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged []string
			r, err := uring.OpenFor(tc.backend, tc.fd, uring.Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Features().Backend; got != tc.want {
				t.Fatalf("backend %q, want %q", got, tc.want)
			}
			if picked := tc.name == "auto zram"; picked != (len(logged) == 1) {
				t.Fatalf("log lines %q", logged)
			}
		})
	}
}

// TestNativeVectoredGaps: vecs that do not follow each other in memory go
// as READV/WRITEV (their fixed forms in a registered buffer, kernel 6.15);
// vecs that do are merged, down to a plain READ/WRITE when they are one
// range. Either way the bytes land where the vecs say.
func TestNativeVectoredGaps(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprintf("fixed=%v", fixed), func(t *testing.T) {
			r := newNative(t, uring.Options{})
			fd, _ := ringtest.OpenDirect(t, tempPath(t, "data"), os.O_RDWR|os.O_CREATE)
			defer fd.Close()
			file := ringtest.Register(t, r, int(fd.Fd()))
			const chunk, n = 4096, 8
			wmem, rmem := ringtest.Aligned(t, 2*n*chunk), ringtest.Aligned(t, 2*n*chunk)
			ringtest.Pattern(wmem, 0, 21)
			bi := uring.NoBuffer
			if fixed {
				if err := r.RegisterBuffer(0, wmem); err != nil {
					t.Skipf("no fixed buffers: %v", err)
				}
				if err := r.RegisterBuffer(1, rmem); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = r.RegisterBuffer(0, nil); _ = r.RegisterBuffer(1, nil) }()
				bi = 0
			}
			every := func(mem []byte, step int) [][]byte { // chunks 0, step, 2*step...
				var v [][]byte
				for i := range n {
					v = append(v, mem[i*step*chunk:][:chunk])
				}
				return v
			}
			for _, step := range []int{2, 1} { // gaps, then one range
				before := r.Stats().FixedBufIO
				w := &uring.Request{Op: uring.OpWritev, File: file, Vecs: every(wmem, step), BufIndex: bi}
				expectOK(t, ringtest.Do(t, r, w), n*chunk)
				clear(rmem)
				rbi := bi
				if fixed {
					rbi = 1
				}
				rd := &uring.Request{Op: uring.OpReadv, File: file, Vecs: every(rmem, step), BufIndex: rbi}
				expectOK(t, ringtest.Do(t, r, rd), n*chunk)
				for i, v := range every(rmem, step) {
					if !bytes.Equal(v, every(wmem, step)[i]) {
						t.Fatalf("step %d: chunk %d differs", step, i)
					}
				}
				wantFixed := uint64(0)
				if fixed && (step == 1 || r.Features().FixedVectored) {
					wantFixed = 2
				}
				if got := r.Stats().FixedBufIO - before; got != wantFixed {
					t.Errorf("step %d: FixedBufIO +%d, want +%d", step, got, wantFixed)
				}
			}
		})
	}
}
