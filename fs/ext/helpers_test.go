package ext

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// testVolume is a volume opened on an image file through a real ring.
type testVolume struct {
	*Volume
	ring  uring.Ring
	stats *mpage.Stats
	cache *mpage.Cache
}

type openOpts struct {
	backend  string                      // uring backend; "" means sync
	ringFor  func(f *os.File) uring.Ring // a ring of the test's own over the image (a Recorder)
	readOnly bool
	rw       bool // ask for read-write (ReadOnly=false)
	cache    int64
	logf     func(string, ...any)
	// allowUnclean and sectorSize go to Config as they are.
	allowUnclean bool
	sectorSize   int
	// unknownSize opens with DeviceSize -1, as a caller that does not
	// know the size.
	unknownSize bool
}

// openImage opens img through the engine: O_DIRECT when the file system
// under the image allows it, a ring, a frame pool registered with it, a
// device, a cache.
func openImage(t testing.TB, img string, o openOpts) (*testVolume, error) {
	t.Helper()
	mode := os.O_RDONLY
	if o.rw {
		mode = os.O_RDWR
	}
	f, err := os.OpenFile(img, mode|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		f, err = os.OpenFile(img, mode, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	// Seek, not Stat: a block device's Stat size is 0.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	if o.unknownSize {
		size = -1
	}
	var r uring.Ring
	if o.ringFor != nil {
		r = o.ringFor(f)
	} else {
		backend := o.backend
		if backend == "" {
			backend = uring.BackendSync
		}
		r, err = uring.Open(backend, uring.Options{Entries: 64, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { r.Close() })
	pool, err := alloc.NewFramePool(alloc.PoolConfig{ArenaBytes: 4 << 20, MaxBytes: 96 << 20,
		OnArena: func(i int, mem []byte) error {
			// Rings without fixed buffers say so; that is not a failure.
			if err := r.RegisterBuffer(i, mem); err != nil && !errors.Is(err, uring.ErrNotSupported) {
				return err
			}
			return nil
		}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	cacheBytes := o.cache
	if cacheBytes == 0 {
		cacheBytes = 32 << 20
	}
	stats := new(mpage.Stats)
	cache, err := mpage.NewCache(mpage.CacheConfig{Frames: pool, LimitBytes: cacheBytes, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := mpage.NewDevice(mpage.DeviceConfig{Ring: r, File: h, Stats: stats, Frames: pool})
	if err != nil {
		t.Fatal(err)
	}
	logf := o.logf
	if logf == nil {
		logf = t.Logf
	}
	v, err := Open(Config{Device: dev, Cache: cache, DeviceSize: size, ReadOnly: !o.rw, Logf: logf,
		AllowUnclean: o.allowUnclean, SectorSize: o.sectorSize})
	if err != nil {
		return nil, err
	}
	// Cleanups run last-in first-out: the volume closes before the ring.
	t.Cleanup(func() {
		if err := v.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close volume: %v", err)
		}
	})
	return &testVolume{Volume: v, ring: r, stats: stats, cache: cache}, nil
}

func mustOpenImage(t testing.TB, img string, o openOpts) *testVolume {
	t.Helper()
	v, err := openImage(t, img, o)
	if err != nil {
		t.Fatalf("open %s: %v", img, err)
	}
	return v
}

// mkfs builds an image of size from src with mke2fs; extra are further
// mke2fs arguments (-O features, -I inode size).
func mkfs(t testing.TB, fsType string, blockSize int, src, size string, extra ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), fsType+".img")
	mkfsOn(t, img, size, fsType, blockSize, src, extra...)
	return img
}

// mkfsOn runs mke2fs on target (an image file, made size bytes, or with
// size "" a block device the test created, filled whole).
func mkfsOn(t testing.TB, target, size, fsType string, blockSize int, src string, extra ...string) {
	t.Helper()
	testenv.RequireTool(t, "mke2fs")
	args := []string{"-q", "-F", "-t", fsType, "-b", strconv.Itoa(blockSize)}
	args = append(args, extra...)
	if src != "" {
		args = append(args, "-d", src)
	}
	args = append(args, target)
	if size != "" {
		args = append(args, size)
	}
	testenv.Run(t, "mke2fs", args...)
}
