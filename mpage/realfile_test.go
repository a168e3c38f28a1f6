package mpage_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// nativeFile is a file in the machine's temp dir, opened with O_DIRECT
// when the file system allows, on a native ring, with a frame pool whose
// arenas are registered as fixed buffers, a cache, a device and a linear
// 4 KiB-block mapping of the whole file.
type nativeFile struct {
	path    string
	f       *os.File
	direct  bool
	ring    *uring.NativeRing
	pool    *alloc.FramePool
	cache   *mpage.Cache
	dev     *mpage.Device
	mapping *mpage.Mapping
}

func newNativeFile(t testing.TB, content []byte, cacheBytes int64) *nativeFile {
	t.Helper()
	ring, err := uring.NewNative(uring.Options{Entries: 64})
	if err != nil {
		testenv.Unavailable(t, "native io_uring ring: %v", err)
	}
	nf := &nativeFile{ring: ring, path: filepath.Join(t.TempDir(), "mpage-realfile")}
	if err := os.WriteFile(nf.path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	nf.f, err = os.OpenFile(nf.path, os.O_RDWR|unix.O_DIRECT, 0)
	nf.direct = err == nil
	if errors.Is(err, syscall.EINVAL) {
		nf.f, err = os.OpenFile(nf.path, os.O_RDWR, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	file, err := ring.RegisterFile(int(nf.f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	arena := 64 << 20
	nf.pool, err = alloc.NewFramePool(alloc.PoolConfig{ArenaBytes: arena, MaxBytes: int64(2*cacheBytes) + int64(arena),
		OnArena: ring.RegisterBuffer, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	stats := new(mpage.Stats)
	if nf.cache, err = mpage.NewCache(mpage.CacheConfig{Frames: nf.pool, LimitBytes: cacheBytes, Stats: stats}); err != nil {
		t.Fatal(err)
	}
	if nf.dev, err = mpage.NewDevice(mpage.DeviceConfig{Ring: ring, File: file, Stats: stats, Frames: nf.pool}); err != nil {
		t.Fatal(err)
	}
	if nf.mapping, err = mpage.NewMapping(mpage.MappingConfig{Device: nf.dev, Cache: nf.cache,
		Mapper: mpage.LinearMapper{Blocks: uint64(len(content)) / 4096}, BlockSize: 4096,
		Size: int64(len(content)), Name: "realfile"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = nf.mapping.WriteAndWait(0, -1)
		_ = nf.mapping.Truncate(0)
		if err := ring.Close(); err != nil {
			t.Errorf("ring close: %v", err)
		}
		nf.f.Close()
		if err := nf.pool.Close(); err != nil {
			t.Logf("frame pool: %v", err)
		}
	})
	return nf
}

// waitPages waits until pages [0, n) are unlocked and returns how many are
// not uptodate.
func (nf *nativeFile) waitPages(t testing.TB, n int) int {
	bad := 0
	for i := range n {
		p := nf.mapping.FindPage(uint64(i))
		if p == nil {
			t.Fatalf("page %d not cached", i)
		}
		p.WaitUnlocked()
		if !p.Has(mpage.Uptodate) {
			bad++
		}
		p.Release()
	}
	return bad
}

// TestRealFileReadPages reads a 64 MiB file with ReadPages through the
// native ring: contiguous blocks make exactly ceil(pages/256) SQEs, and
// the bytes match the file.
func TestRealFileReadPages(t *testing.T) {
	const size = 64 << 20
	const pages = size / mpage.PageSize
	content := fill(size, 0, 42)
	nf := newNativeFile(t, content, 2*size)
	t.Logf("O_DIRECT %v, ring %+v", nf.direct, nf.ring.Features())

	before := nf.ring.Stats()
	started, err := nf.mapping.ReadPages(0, pages, 0)
	if err != nil || started != pages {
		t.Fatalf("ReadPages = %d, %v", started, err)
	}
	if bad := nf.waitPages(t, pages); bad != 0 {
		t.Fatalf("%d pages not uptodate", bad)
	}
	after := nf.ring.Stats()
	wantSQEs := uint64((pages + alloc.MaxVecs - 1) / alloc.MaxVecs)
	if got := after.SQEs - before.SQEs; got != wantSQEs {
		t.Errorf("%d SQEs, want %d (resubmits %d)", got, wantSQEs, after.Resubmits-before.Resubmits)
	}
	if got := after.Submitted - before.Submitted; got != wantSQEs {
		t.Errorf("%d requests, want %d", got, wantSQEs)
	}
	if got := after.BytesRead - before.BytesRead; got != size {
		t.Errorf("read %d bytes, want %d", got, size)
	}
	t.Logf("SQEs %d, enters %d, fixed-buffer I/O %d", after.SQEs-before.SQEs, after.Enters-before.Enters, after.FixedBufIO-before.FixedBufIO)
	for i := range pages {
		p := nf.mapping.FindPage(uint64(i))
		if !bytes.Equal(p.Data, content[i*mpage.PageSize:(i+1)*mpage.PageSize]) {
			p.Release()
			t.Fatalf("page %d differs from the file", i)
		}
		p.Release()
	}
	st := nf.dev.Stats().Snapshot()
	if st.Bios[mpage.Read] != wantSQEs || st.BioPages[mpage.Read] != pages {
		t.Errorf("engine counted %d read bios of %d pages", st.Bios[mpage.Read], st.BioPages[mpage.Read])
	}
}

// TestRealFileWriteBack writes through the cache and the native ring and
// checks the file afterwards with plain reads.
func TestRealFileWriteBack(t *testing.T) {
	const size = 8 << 20
	nf := newNativeFile(t, make([]byte, size), 4*size)
	data := fill(size, 0, 77)
	// Unaligned pieces, so pages are read-modify-written.
	for off := 0; off < size; {
		n := min(size-off, 100_003)
		mustWrite(t, nf.mapping, data[off:off+n], int64(off))
		off += n
	}
	before := nf.ring.Stats()
	if err := nf.mapping.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if err := nf.dev.Flush(); err != nil {
		t.Fatal(err)
	}
	after := nf.ring.Stats()
	t.Logf("write-back: %d requests, %d SQEs, %d bytes", after.Submitted-before.Submitted, after.SQEs-before.SQEs, after.BytesWrite-before.BytesWrite)
	if got := after.BytesWrite - before.BytesWrite; got != size {
		t.Errorf("wrote %d bytes, want %d", got, size)
	}
	got, err := os.ReadFile(nf.path)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "file", got, data)
}
