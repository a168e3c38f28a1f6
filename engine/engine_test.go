package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

func TestFrameSizing(t *testing.T) {
	for _, tc := range []struct {
		cache        int64
		arena, total int64
	}{
		{1 << 20, 4 << 20, 12 << 20},
		{64 << 20, 4 << 20, 80 << 20},
		{128 << 20, 4 << 20, 160 << 20},
		{256 << 20, 8 << 20, 320 << 20},
		{4 << 30, 128 << 20, 5 << 30},
	} {
		a, n := int64(ArenaBytes(tc.cache)), FrameBytes(tc.cache)
		if a != tc.arena || n != tc.total {
			t.Errorf("cache %d: arena %d total %d, want %d and %d", tc.cache, a, n, tc.arena, tc.total)
		}
		if n%a != 0 || n/a > 40 || n < tc.cache {
			t.Errorf("cache %d: %d bytes in %d-byte arenas", tc.cache, n, a)
		}
	}
}

// logs collects Logf lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func openT(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Path, err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

// TestImageHeldExclusively: one writer at a time on an image; readers
// share it and are warned about the writer; Close lets the next writer in.
func TestImageHeldExclusively(t *testing.T) {
	img := testenv.SparseFile(t, 8<<20)
	w := openT(t, Config{Path: img, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20})
	if !w.Info.Writable || w.Info.BlockDevice || w.Info.Size != 8<<20 {
		t.Errorf("info %+v", w.Info)
	}
	if _, err := Open(Config{Path: img, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20, LockWait: time.Millisecond}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second writer: %v, want ErrBusy", err)
	}
	var l logs
	r := openT(t, Config{Path: img, Backend: uring.BackendSync, CacheBytes: 1 << 20, Logf: l.Printf})
	if !l.has("open for writing by another process") {
		t.Errorf("reader beside a writer was not warned: %q", l.lines)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openT(t, Config{Path: img, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20})
	if !w2.Info.Writable {
		t.Error("writer after Close not writable")
	}
}

// TestWriterWaitsForHolder: a writer waits (up to LockWait) for a holder
// that lets go, as a process that just died does once the kernel has torn
// down its ring.
func TestWriterWaitsForHolder(t *testing.T) {
	img := testenv.SparseFile(t, 8<<20)
	first, err := Open(Config{Path: img, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		first.Close()
	}()
	second := openT(t, Config{Path: img, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20, LockWait: time.Minute})
	if !second.Info.Writable {
		t.Error("not writable")
	}
}

func TestOpenRefusesNonVolumes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		path string
		want error
	}{
		{dir, ErrNotVolume},
		{"/dev/null", ErrNotVolume},
		{filepath.Join(dir, "missing"), os.ErrNotExist},
	} {
		_, err := Open(Config{Path: tc.path, Backend: uring.BackendSync})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.path, err, tc.want)
		}
	}
	if _, err := Open(Config{Path: testenv.SparseFile(t, 1<<20), Backend: "nonsense"}); !errors.Is(err, ErrBackend) {
		t.Errorf("bad backend: %v", err)
	}
	if _, err := Open(Config{Path: testenv.SparseFile(t, 1<<20), CacheBytes: 4096}); !errors.Is(err, ErrConfig) {
		t.Errorf("tiny cache: %v", err)
	}
}

// TestMountedVolumes: the kernel's mount of an image (through a loop
// device) or of a device refuses writers, and warns readers.
func TestMountedVolumes(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "mount")
	dev, img := testenv.LoopDevice(t, 16<<20)
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext2", dev)
	dir := t.TempDir()
	testenv.Run(t, "mount", "-t", "ext2", dev, dir)
	t.Cleanup(func() {
		if err := testenv.Unmount(dir); err != nil {
			t.Error(err)
		}
	})
	for _, path := range []string{img, dev} {
		_, err := Open(Config{Path: path, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20, LockWait: time.Millisecond})
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), dir) {
			t.Errorf("writer of mounted %s: %v, want ErrBusy naming %s", path, err, dir)
		}
		var l logs
		r := openT(t, Config{Path: path, Backend: uring.BackendSync, CacheBytes: 1 << 20, Logf: l.Printf})
		if !l.has("mounted read-write at " + dir) {
			t.Errorf("reader of %s: no warning about the mount: %q", path, l.lines)
		}
		if path == dev && (!r.Info.BlockDevice || r.Info.SectorSize < 512) {
			t.Errorf("loop device info %+v", r.Info)
		}
	}
}

func TestFindMount(t *testing.T) {
	const info = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 7:3 / /mnt/a\040b ro,relatime shared:2 - ext2 /dev/loop3 ro
37 22 7:3 / /mnt/c rw,relatime - ext2 /dev/loop3 rw
38 22 7:4 / /mnt/d rw - ext2 /dev/loop4 ro
`
	for _, tc := range []struct {
		majmin string
		want   mount
		ok     bool
	}{
		{"8:1", mount{"/", true}, true},
		{"7:3", mount{"/mnt/c", true}, true}, // the read-write mount wins
		{"7:4", mount{"/mnt/d", false}, true},
		{"7:9", mount{}, false},
	} {
		got, ok := findMount(strings.NewReader(info), tc.majmin)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %+v %v, want %+v %v", tc.majmin, got, ok, tc.want, tc.ok)
		}
	}
	if got := unescapeMount(`/mnt/a\040b\\c\0`); got != `/mnt/a b\\c\0` {
		t.Errorf("unescape: %q", got)
	}
}

// TestEngineRoundTrip runs a mapping over the assembled stack on each
// backend and checks the bytes and the counters Snapshot reports.
func TestEngineRoundTrip(t *testing.T) {
	for _, backend := range Backends() {
		t.Run(backend, func(t *testing.T) {
			img := testenv.SparseFile(t, 8<<20)
			e := openT(t, Config{Path: img, Write: true, Backend: backend, CacheBytes: 2 << 20, Timing: true})
			m, err := mpage.NewMapping(mpage.MappingConfig{Device: e.Device, Cache: e.Cache,
				Mapper: mpage.LinearMapper{Blocks: 8 << 20 >> 12}, BlockSize: 4096, Size: 8 << 20, Name: "raw"})
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("mpaged!\n"), 512<<10/8)
			if _, err := m.WriteAt(data, 1<<20); err != nil {
				t.Fatal(err)
			}
			if err := m.WriteAndWait(0, 8<<20-1); err != nil {
				t.Fatal(err)
			}
			if err := m.Truncate(0); err != nil { // drop the cache
				t.Fatal(err)
			}
			m.SetSize(8 << 20)
			got := make([]byte, len(data))
			if _, err := m.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			s := e.Snapshot()
			if s.Engine.Bios[mpage.Write] == 0 || s.Engine.Bios[mpage.Read] == 0 || s.Ring.BytesWrite < uint64(len(data)) ||
				s.Ring.Latency[uring.LatencyRead].Count() == 0 || s.Backend != backend || !s.Info.Direct {
				t.Errorf("snapshot: bios %v ring %+v backend %q info %+v", s.Engine.Bios, s.Ring, s.Backend, s.Info)
			}
			var buf bytes.Buffer
			s.WriteText(&buf)
			if !strings.Contains(buf.String(), "stats: ring "+backend+" (O_DIRECT true)") {
				t.Errorf("stats text:\n%s", buf.String())
			}
		})
	}
}

// TestOpenPicksRingByDevice: with no backend named, a zram volume (no
// nonblocking I/O) gets the sync ring and an image file the native one.
func TestOpenPicksRingByDevice(t *testing.T) {
	dev := testenv.NewZram(t, 16<<20)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"zram", dev, uring.BackendSync},
		{"image", testenv.SparseFile(t, 8<<20), uring.BackendNative},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openT(t, Config{Path: tc.path, Write: true, CacheBytes: 1 << 20})
			if got := e.Ring.Features().Backend; got != tc.want {
				t.Fatalf("ring %q, want %q", got, tc.want)
			}
		})
	}
}

// TestShowRecovered: a read-only engine shows a journal's replay over
// every mapping's reads (the page cache above it sees the overlaid blocks,
// evicted or not), refuses writes of the volume, says so in its backend's
// name, and takes one overlay only; a read-write engine refuses one.
func TestShowRecovered(t *testing.T) {
	img := testenv.SparseFile(t, 1<<20)
	rw := openT(t, Config{Path: img, Write: true, Backend: uring.BackendSync, CacheBytes: 1 << 20})
	replay := &jbd2.Replay{BlockSize: 4096, Homes: []jbd2.HomeBlock{{Home: 3, Data: bytes.Repeat([]byte{0x33}, 4096)}}}
	if err := rw.ShowRecovered(replay); !errors.Is(err, ErrConfig) {
		t.Fatalf("read-write engine: %v, want ErrConfig", err)
	}
	rw.Close()
	e := openT(t, Config{Path: img, Backend: uring.BackendSync, CacheBytes: 1 << 20})
	if b := e.Ring.Features().Backend; b != uring.BackendSync {
		t.Errorf("backend %q before an overlay, want %q", b, uring.BackendSync)
	}
	if err := e.ShowRecovered(replay); err != nil {
		t.Fatal(err)
	}
	if err := e.ShowRecovered(replay); err == nil {
		t.Error("a second overlay was taken")
	}
	if b := e.Ring.Features().Backend; b != "overlay(sync)" {
		t.Errorf("backend %q with an overlay", b)
	}
	m, err := mpage.NewMapping(mpage.MappingConfig{Device: e.Device, Cache: e.Cache,
		Mapper: mpage.LinearMapper{Blocks: 256}, BlockSize: 1024, Size: 1 << 20, Name: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := make([]byte, 3*4096)
	if _, err := m.ReadAt(got, 2*4096); err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 4096), replay.Homes[0].Data...), make([]byte, 4096)...)
	if !bytes.Equal(got, want) {
		t.Error("blocks 2..4 through the cache: the overlay of block 3 is not where it belongs")
	}
	c := &collect{done: make(chan *uring.Request, 1)}
	if err := e.Ring.Submit(&uring.Request{Op: uring.OpWrite, File: e.handle, Offset: 0, Buf: make([]byte, 4096), BufIndex: uring.NoBuffer, Handler: c}); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write under the overlay: %v, want EROFS", err)
	}
}

type collect struct{ done chan *uring.Request }

func (c *collect) Complete(q *uring.Request) { c.done <- q }
