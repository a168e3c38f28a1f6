// Package voltest makes ext volumes for tests: a fresh journal-less ext4
// image from a tree of files (or an image the test brings), opened through
// the engine (sync ring) and fs/ext, closed when the test ends. The API's,
// the WebDAV package's tests and the drills share it.
package voltest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// Options says what image to make and how to open it.
type Options struct {
	Size string            // mke2fs size (default 32M)
	Tree map[string]string // file path -> content, put in by mke2fs -d
	// Links are symbolic links put in by mke2fs -d: link path -> target
	// (neither the API nor WebDAV can make one).
	Links    map[string]string
	Image    string // open this image instead of making one
	ReadOnly bool   // open the volume read-only
	Faults   bool   // put a faultring under the engine (Volume.Faults)
	// FaultSeed seeds the faultring's probabilities (default 1).
	FaultSeed uint64
	// CacheBytes is the page cache's size (default 8 MiB).
	CacheBytes int64
}

// Volume is an open volume over a temporary image.
type Volume struct {
	Img    string
	Eng    *engine.Engine
	Vol    *ext.Volume
	Faults *faultring.Ring // nil unless Options.Faults
	closed bool
}

// New makes and opens a volume; it is closed (volume, then engine) when
// the test ends, and errors of either close fail the test.
func New(t testing.TB, o Options) *Volume {
	t.Helper()
	v, err := Open(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Open is New returning the engine's or fs/ext's refusal to open (a
// corrupt image's, say) instead of failing the test; making the image
// still fails it.
func Open(t testing.TB, o Options) (*Volume, error) {
	t.Helper()
	v := &Volume{Img: o.Image}
	if v.Img == "" {
		v.Img = makeImage(t, o.Size, o.Tree, o.Links)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 8 << 20
	}
	if o.FaultSeed == 0 {
		o.FaultSeed = 1
	}
	cfg := engine.Config{Path: v.Img, Write: !o.ReadOnly, Backend: uring.BackendSync, CacheBytes: o.CacheBytes, Logf: t.Logf}
	if o.Faults {
		cfg.WrapRing = func(r uring.Ring) uring.Ring {
			v.Faults = faultring.New(r, o.FaultSeed)
			return v.Faults
		}
	}
	var err error
	if v.Eng, err = engine.Open(cfg); err != nil {
		return nil, err
	}
	ecfg := ext.Config{Device: v.Eng.Device, Cache: v.Eng.Cache, DeviceSize: v.Eng.Info.Size,
		SectorSize: v.Eng.Info.SectorSize, ReadOnly: o.ReadOnly, Logf: t.Logf}
	if o.ReadOnly {
		ecfg.ShowRecovered = v.Eng.ShowRecovered
	}
	if v.Vol, err = ext.Open(ecfg); err != nil {
		v.Eng.Close()
		return nil, err
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Error(err)
		}
	})
	return v, nil
}

// Close closes the volume, then the engine; the test's end does it
// unless the test did (a test of a corrupt image may take its refusal to
// close cleanly as an answer).
func (v *Volume) Close() error {
	if v.closed {
		return nil
	}
	v.closed = true
	verr := v.Vol.Close()
	eerr := v.Eng.Close()
	if verr != nil {
		return fmt.Errorf("close volume: %w", verr)
	}
	if eerr != nil {
		return fmt.Errorf("close engine: %w", eerr)
	}
	return nil
}

// MakeImage makes a journal-less ext4 image (4 KiB blocks) of size
// (default 32M) holding tree, in a temporary directory.
func MakeImage(t testing.TB, size string, tree map[string]string) string {
	t.Helper()
	return makeImage(t, size, tree, nil)
}

// makeImage is MakeImage with symbolic links (path -> target) as well.
func makeImage(t testing.TB, size string, tree, links map[string]string) string {
	t.Helper()
	testenv.RequireTool(t, "mke2fs")
	src := t.TempDir()
	put := func(name string, write func(p string) error) {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := write(p); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range tree {
		put(name, func(p string) error { return os.WriteFile(p, []byte(content), 0o644) })
	}
	for name, target := range links {
		put(name, func(p string) error { return os.Symlink(target, p) })
	}
	if size == "" {
		size = "32M"
	}
	img := filepath.Join(t.TempDir(), "vol.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-b", "4096", "-d", src, img, size)
	return img
}
