package ext

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// testVolume is a volume opened on an image file through a real ring.
type testVolume struct {
	*Volume
	eng   *engine.Engine
	ring  uring.Ring
	stats *mpage.Stats
	cache *mpage.Cache
}

// Close closes the volume, then the engine under it, which releases the
// image's lock so the test can open it again.
func (tv *testVolume) Close() error {
	err := tv.Volume.Close()
	return errors.Join(err, tv.eng.Close())
}

type openOpts struct {
	backend string // uring backend; "" means sync
	// ringFor makes a ring of the test's own over the image file (a
	// Recorder); wrap wraps the backend's ring (a fault ring).
	ringFor  func(f *os.File) uring.Ring
	wrap     func(uring.Ring) uring.Ring
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
	// preRecovery: a read-only open of a volume that needs recovery
	// reads it as it is on the device (no Config.ShowRecovered), not
	// as replay would leave it.
	preRecovery bool
}

// openImage opens img through the engine's assembled stack (engine.Open:
// O_DIRECT where the file system under the image allows, a ring, frames
// registered with it, a device, a cache) and the volume on it.
func openImage(t testing.TB, img string, o openOpts) (*testVolume, error) {
	t.Helper()
	ecfg := engine.Config{Write: o.rw, Backend: o.backend, RingEntries: 64, CacheBytes: o.cache, WrapRing: o.wrap, Logf: t.Logf}
	if ecfg.Backend == "" {
		ecfg.Backend = uring.BackendSync
	}
	if ecfg.CacheBytes == 0 {
		ecfg.CacheBytes = 32 << 20
	}
	if o.ringFor != nil {
		f, size := openImageFile(t, img, o.rw)
		r := o.ringFor(f)
		ecfg.Ring, ecfg.File, ecfg.Size = r, mustRegister(t, r, f), size
	} else {
		ecfg.Path = img
	}
	eng, err := engine.Open(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	logf := o.logf
	if logf == nil {
		logf = t.Logf
	}
	size := eng.Info.Size
	if o.unknownSize {
		size = -1
	}
	cfg := Config{Device: eng.Device, Cache: eng.Cache, DeviceSize: size, ReadOnly: !o.rw, Logf: logf,
		AllowUnclean: o.allowUnclean, SectorSize: o.sectorSize}
	if !o.rw && !o.preRecovery {
		cfg.ShowRecovered = eng.ShowRecovered
	}
	v, err := Open(cfg)
	if err != nil {
		eng.Close() // a refused volume is not held: the test may open it again
		return nil, err
	}
	// Cleanups run last-in first-out: the volume closes before the engine.
	t.Cleanup(func() {
		if err := v.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close volume: %v", err)
		}
	})
	return &testVolume{Volume: v, eng: eng, ring: eng.Ring, stats: eng.Stats, cache: eng.Cache}, nil
}

// openImageFile opens img for a ring of the test's own, O_DIRECT when the
// file system under it allows.
func openImageFile(t testing.TB, img string, rw bool) (*os.File, int64) {
	t.Helper()
	mode := os.O_RDONLY
	if rw {
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
	return f, size
}

func mustRegister(t testing.TB, r uring.Ring, f *os.File) uring.File {
	t.Helper()
	h, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return h
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
