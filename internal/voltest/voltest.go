// Package voltest makes ext volumes for tests: a fresh journal-less ext4
// image from a tree of files, opened through the engine (sync ring) and
// fs/ext, closed when the test ends. The API's and the WebDAV package's
// tests share it.
package voltest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// Options says what image to make.
type Options struct {
	Size     string            // mke2fs size (default 32M)
	Tree     map[string]string // file path -> content, put in by mke2fs -d
	ReadOnly bool              // open the volume read-only
	Faults   bool              // put a faultring under the engine (Volume.Faults)
}

// Volume is an open volume over a temporary image.
type Volume struct {
	Img    string
	Eng    *engine.Engine
	Vol    *ext.Volume
	Faults *faultring.Ring // nil unless Options.Faults
}

// New makes and opens a volume; it is closed (volume, then engine) when
// the test ends, and errors of either close fail the test.
func New(t *testing.T, o Options) *Volume {
	t.Helper()
	testenv.RequireTool(t, "mke2fs")
	src := t.TempDir()
	for name, content := range o.Tree {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if o.Size == "" {
		o.Size = "32M"
	}
	v := &Volume{Img: filepath.Join(t.TempDir(), "vol.img")}
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-b", "4096", "-d", src, v.Img, o.Size)
	cfg := engine.Config{Path: v.Img, Write: !o.ReadOnly, Backend: uring.BackendSync, CacheBytes: 8 << 20, Logf: t.Logf}
	if o.Faults {
		cfg.WrapRing = func(r uring.Ring) uring.Ring {
			v.Faults = faultring.New(r, 1)
			return v.Faults
		}
	}
	var err error
	if v.Eng, err = engine.Open(cfg); err != nil {
		t.Fatal(err)
	}
	if v.Vol, err = ext.Open(ext.Config{Device: v.Eng.Device, Cache: v.Eng.Cache, DeviceSize: v.Eng.Info.Size,
		SectorSize: v.Eng.Info.SectorSize, ReadOnly: o.ReadOnly, Logf: t.Logf}); err != nil {
		v.Eng.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Vol.Close(); err != nil {
			t.Errorf("close volume: %v", err)
		}
		if err := v.Eng.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	return v
}
