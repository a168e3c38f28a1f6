package mpage_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// nativeFile is a file in the machine's temp dir with a linear 4 KiB-block
// mapping of the whole file, on the engine's assembled stack over the
// native ring (O_DIRECT when the file system allows, frames registered as
// fixed buffers).
type nativeFile struct {
	path    string
	eng     *engine.Engine
	ring    uring.Ring
	dev     *mpage.Device
	mapping *mpage.Mapping
}

func newNativeFile(t testing.TB, content []byte, cacheBytes int64) *nativeFile {
	t.Helper()
	nf := &nativeFile{path: filepath.Join(t.TempDir(), "mpage-realfile")}
	if err := os.WriteFile(nf.path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Path: nf.path, Write: true, Backend: uring.BackendNative,
		RingEntries: 64, CacheBytes: cacheBytes, Logf: t.Logf})
	if errors.Is(err, uring.ErrUnavailable) {
		testenv.Unavailable(t, "native io_uring ring: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	nf.eng, nf.ring, nf.dev = eng, eng.Ring, eng.Device
	if nf.mapping, err = mpage.NewMapping(mpage.MappingConfig{Device: eng.Device, Cache: eng.Cache,
		Mapper: mpage.LinearMapper{Blocks: uint64(len(content)) / 4096}, BlockSize: 4096,
		Size: int64(len(content)), Name: "realfile"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = nf.mapping.WriteAndWait(0, -1)
		_ = nf.mapping.Truncate(0)
		if err := eng.Close(); err != nil {
			t.Errorf("engine close: %v", err)
		}
	})
	return nf
}

// waitPages waits until pages [0, n) are unlocked and returns how many are
// not uptodate.
func (nf *nativeFile) waitPages(t testing.TB, n int) int {
	bad := 0
	for i := range n {
		p := mpage.FindPage(nf.mapping, uint64(i))
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
	t.Logf("O_DIRECT %v, ring %+v", nf.eng.Info.Direct, nf.ring.Features())

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
		p := mpage.FindPage(nf.mapping, uint64(i))
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
