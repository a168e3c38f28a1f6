package bench

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/fs/raw"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// memFile is a File in memory that counts what it is asked.
type memFile struct {
	mu     sync.Mutex
	data   []byte
	syncs  atomic.Int32
	failAt int64 // ReadAt/WriteAt at this offset fails with EIO; -1 never
}

func newMemFile(size int) *memFile {
	f := &memFile{data: make([]byte, size), failAt: -1}
	for i := range f.data {
		f.data[i] = byte(i * 7 / 4096)
	}
	return f
}

func (f *memFile) ReadAt(b []byte, off int64) (int, error) {
	if off == f.failAt {
		return 0, syscall.EIO
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return copy(b, f.data[off:]), nil
}

func (f *memFile) WriteAt(b []byte, off int64) (int, error) {
	if off == f.failAt {
		return 0, syscall.EIO
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return copy(f.data[off:], b), nil
}

func (f *memFile) Sync() error { f.syncs.Add(1); return nil }

func testWorkload(name string) Workload {
	cfg, err := Config{Quick: true, Size: 1 << 20}.normalize()
	if err != nil {
		panic(err)
	}
	for _, w := range cfg.workloads() {
		if w.Name == name {
			w.Duration = 0
			w.Depth = 8
			return w
		}
	}
	panic("no workload " + name)
}

// One pass visits every block of the region exactly once, sequential or
// random, and reads what the file holds there.
func TestRunOnePassVisitsEveryBlockOnce(t *testing.T) {
	for _, name := range []string{"seqread", "randread"} {
		t.Run(name, func(t *testing.T) {
			w := testWorkload(name)
			f := newMemFile(int(w.Region))
			var mu sync.Mutex
			seen := map[int64]int{}
			var order []int64
			hooks := Hooks{Visit: func(off int64, b []byte) {
				if !bytes.Equal(b, f.data[off:off+int64(len(b))]) {
					t.Errorf("read at %d: bytes differ from the file's", off)
				}
				mu.Lock()
				seen[off]++
				order = append(order, off)
				mu.Unlock()
			}}
			m, err := w.Run(context.Background(), f, hooks)
			if err != nil {
				t.Fatal(err)
			}
			blocks := w.Region / int64(w.BlockSize)
			if m.ReadOps != blocks || m.ReadBytes != w.Region || m.WriteOps != 0 {
				t.Fatalf("ops %d/%d, bytes %d; want %d reads of the %d-byte region", m.ReadOps, m.WriteOps, m.ReadBytes, blocks, w.Region)
			}
			if int64(len(seen)) != blocks {
				t.Fatalf("%d distinct blocks read, want %d", len(seen), blocks)
			}
			for off, n := range seen {
				if n != 1 || off%int64(w.BlockSize) != 0 {
					t.Fatalf("block at %d read %d times", off, n)
				}
			}
			inOrder := true
			for i := 1; i < len(order); i++ {
				inOrder = inOrder && order[i] > order[i-1]
			}
			if inOrder != (w.Pattern == Sequential) {
				t.Fatalf("%s: offsets in order = %v", w.Pattern, inOrder)
			}
			if m.ReadLatency.TotalCount() != blocks || m.WriteLatency.TotalCount() != 0 {
				t.Fatalf("latency samples %d/%d, want %d/0", m.ReadLatency.TotalCount(), m.WriteLatency.TotalCount(), blocks)
			}
			if f.syncs.Load() != 0 {
				t.Fatal("a read-only workload synced")
			}
		})
	}
}

// Writes cover the region with incompressible data and end with one sync.
func TestRunWritesIncompressibleDataAndSyncs(t *testing.T) {
	for _, name := range []string{"seqwrite", "randwrite"} {
		t.Run(name, func(t *testing.T) {
			w := testWorkload(name)
			f := newMemFile(int(w.Region))
			m, err := w.Run(context.Background(), f, Hooks{})
			if err != nil {
				t.Fatal(err)
			}
			if m.WriteBytes != w.Region || m.ReadOps != 0 {
				t.Fatalf("wrote %d bytes, read %d ops; want the %d-byte region written", m.WriteBytes, m.ReadOps, w.Region)
			}
			if n := f.syncs.Load(); n != 1 {
				t.Fatalf("%d syncs, want 1", n)
			}
			for off := 0; off < len(f.data); off += 4096 {
				var distinct [256]bool
				n := 0
				for _, c := range f.data[off : off+4096] {
					if !distinct[c] {
						distinct[c] = true
						n++
					}
				}
				if n < 200 {
					t.Fatalf("block at %d has %d distinct byte values: compressible", off, n)
				}
			}
		})
	}
}

func TestRunMixShare(t *testing.T) {
	w := testWorkload("mix")
	w.Region = 16 << 20 // 4096 blocks
	m, err := w.Run(context.Background(), newMemFile(int(w.Region)), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	share := float64(m.ReadOps) / float64(m.Ops())
	if m.Ops() != 4096 || share < 0.65 || share > 0.75 {
		t.Fatalf("%d reads of %d ops (%.2f); want about 70%% of 4096", m.ReadOps, m.Ops(), share)
	}
	if m.WriteLatency.TotalCount() != m.WriteOps || m.ReadLatency.TotalCount() != m.ReadOps {
		t.Fatal("latency samples do not match the ops")
	}
}

// A timed run wraps around the region until its duration passes.
func TestRunTimedWraps(t *testing.T) {
	w := testWorkload("seqread")
	w.Region = 256 << 10
	w.Duration = 30 * time.Millisecond
	m, err := w.Run(context.Background(), newMemFile(int(w.Region)), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if m.ReadBytes <= w.Region || m.Elapsed < w.Duration {
		t.Fatalf("read %d bytes in %v; want more than the %d-byte region, in at least %v", m.ReadBytes, m.Elapsed, w.Region, w.Duration)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	w := testWorkload("randread")
	w.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := w.Run(ctx, newMemFile(int(w.Region)), Hooks{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func TestRunReportsIOErrors(t *testing.T) {
	for _, name := range []string{"seqread", "randwrite"} {
		w := testWorkload(name)
		f := newMemFile(int(w.Region))
		f.failAt = 3 * int64(w.BlockSize)
		_, err := w.Run(context.Background(), f, Hooks{})
		if !errors.Is(err, ErrRunner) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s: Run = %v, want ErrRunner wrapping EIO", name, err)
		}
		if f.syncs.Load() != 0 {
			t.Fatalf("%s: synced after a failed write", name)
		}
	}
}

// The harness itself allocates nothing per operation: what the engine
// runner reports as allocations per op is the engine's.
func TestRunAllocatesNothingPerOp(t *testing.T) {
	for _, name := range []string{"seqread", "randread", "mix"} {
		w := testWorkload(name)
		w.Region = 64 << 20
		w.BlockSize = 4096
		var before, after runtime.MemStats
		m, err := w.Run(context.Background(), newMemFile(int(w.Region)), Hooks{
			Begin: func() { runtime.ReadMemStats(&before) },
			End:   func() { runtime.ReadMemStats(&after) },
		})
		if err != nil {
			t.Fatal(err)
		}
		// The workers' goroutines are the only allocations after Begin.
		if per := float64(after.Mallocs-before.Mallocs) / float64(m.Ops()); per > 0.01 {
			t.Errorf("%s: %.4f allocations per op in the harness, want ~0", name, per)
		}
	}
}

// pageFile is a raw volume's file over an in-memory engine (the recorder
// ring), whose device holds mpagetest.Pattern: a PageFile.
func pageFile(t *testing.T, size int64) (*raw.File, *mpagetest.Env) {
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, DiskBytes: size, CacheBytes: size / 4, NoRecord: true})
	vol, err := raw.Open(raw.Config{Device: e.Dev, Cache: e.Cache, Size: size, Name: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vol.Close(); err != nil {
			t.Error(err)
		}
	})
	return vol.File(), e
}

// Random workloads on a PageFile read from one goroutine through an
// mpage.Reader, Depth reads in flight: one pass visits every block once
// and sees what the device holds; a mix also writes, and syncs.
func TestRunAsyncOnPageFile(t *testing.T) {
	for _, name := range []string{"randread", "mix"} {
		t.Run(name, func(t *testing.T) {
			w := testWorkload(name)
			w.Region = 4 << 20
			f, e := pageFile(t, w.Region)
			if n := w.Workers(f); n != 1 {
				t.Fatalf("%d workers on a PageFile, want 1", n)
			}
			if n := w.Workers(fileOnly{f}); n != w.Depth {
				t.Fatalf("%d workers on a plain File, want %d", n, w.Depth)
			}
			var mu sync.Mutex
			seen := map[int64]int{}
			hooks := Hooks{Visit: func(off int64, b []byte) {
				if len(b) != 4096 || b[0] != mpagetest.Pattern(off, 4096) || b[4095] != b[0] {
					t.Errorf("read at %d: got %#x..%#x, want %#x", off, b[0], b[len(b)-1], mpagetest.Pattern(off, 4096))
				}
				mu.Lock()
				seen[off]++
				mu.Unlock()
			}}
			m, err := w.Run(context.Background(), f, hooks)
			if err != nil {
				t.Fatal(err)
			}
			blocks := w.Region / 4096
			if m.Ops() != blocks || int64(len(seen)) != m.ReadOps {
				t.Fatalf("%d ops, %d reads of %d distinct blocks; want %d ops, each block once", m.Ops(), m.ReadOps, len(seen), blocks)
			}
			if m.ReadLatency.TotalCount() != m.ReadOps || m.WriteLatency.TotalCount() != m.WriteOps {
				t.Fatal("latency samples do not match the ops")
			}
			// Every read went through the page cache once (a hit when an
			// earlier read's readahead brought its page in).
			if st := e.Stats.Snapshot(); st.CacheMisses+st.CacheHits != uint64(m.ReadOps) || st.CacheMisses == 0 {
				t.Fatalf("%d cache misses and %d hits for %d reads", st.CacheMisses, st.CacheHits, m.ReadOps)
			}
			if w.Writes() && (m.WriteOps == 0 || f.Mapping().DirtyPages() != 0) {
				t.Fatalf("%d writes, %d dirty pages after the run's sync", m.WriteOps, f.Mapping().DirtyPages())
			}
		})
	}
}

// A read that fails on the device fails the async run with ErrRunner.
func TestRunAsyncReportsIOErrors(t *testing.T) {
	w := testWorkload("randread")
	w.Region = 1 << 20
	f, e := pageFile(t, w.Region)
	e.Ring.Fail(mpagetest.Rule{Op: uring.OpReadv, Off: 5 * 4096, Errno: syscall.EIO})
	_, err := w.Run(context.Background(), f, Hooks{})
	if !errors.Is(err, ErrRunner) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Run = %v, want ErrRunner wrapping EIO", err)
	}
}
