package raw_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/mpaged/mpaged/fs/raw"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
)

const diskBytes = 4 << 20

// newVolume opens a raw volume over an in-memory disk whose bytes name the
// block they lie in (mpagetest.Pattern), with the given block size.
func newVolume(t *testing.T, blockSize int, cacheBytes int64) (*raw.Volume, *mpagetest.Env) {
	t.Helper()
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: blockSize, DiskBytes: diskBytes, CacheBytes: cacheBytes})
	v, err := raw.Open(raw.Config{Device: e.Dev, Cache: e.Cache, Size: diskBytes, BlockSize: blockSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return v, e
}

func expected(off int64, n, blockSize int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = mpagetest.Pattern(off+int64(i), blockSize)
	}
	return b
}

func TestOpenRefusesBadConfig(t *testing.T) {
	e := mpagetest.NewEnv(t, 4096, diskBytes, 1<<20)
	for _, tc := range []struct {
		name string
		cfg  raw.Config
	}{
		{"no device", raw.Config{Cache: e.Cache, Size: diskBytes}},
		{"no cache", raw.Config{Device: e.Dev, Size: diskBytes}},
		{"block size 3000", raw.Config{Device: e.Dev, Cache: e.Cache, Size: diskBytes, BlockSize: 3000}},
		{"block size 8192", raw.Config{Device: e.Dev, Cache: e.Cache, Size: diskBytes, BlockSize: 8192}},
		{"size zero", raw.Config{Device: e.Dev, Cache: e.Cache}},
		{"partial block", raw.Config{Device: e.Dev, Cache: e.Cache, Size: diskBytes - 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := raw.Open(tc.cfg)
			if !errors.Is(err, raw.ErrConfig) {
				t.Fatalf("Open = %v, %v; want ErrConfig", v, err)
			}
		})
	}
}

func TestReadAt(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		v, _ := newVolume(t, bs, 1<<20)
		f := v.File()
		for _, tc := range []struct {
			name    string
			off     int64
			n       int
			wantN   int
			wantErr error
		}{
			{"first byte", 0, 1, 1, nil},
			{"unaligned across pages", 4000, 9000, 9000, nil},
			{"one MiB", 1 << 20, 1 << 20, 1 << 20, nil},
			{"last page", diskBytes - 4096, 4096, 4096, nil},
			{"past the end", diskBytes - 10, 100, 10, io.EOF},
			{"at the end", diskBytes, 1, 0, io.EOF},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := make([]byte, tc.n)
				n, err := f.ReadAt(b, tc.off)
				if n != tc.wantN || !errors.Is(err, tc.wantErr) && err != tc.wantErr {
					t.Fatalf("bs %d: ReadAt(%d, %d) = %d, %v; want %d, %v", bs, tc.off, tc.n, n, err, tc.wantN, tc.wantErr)
				}
				if want := expected(tc.off, n, bs); !bytes.Equal(b[:n], want) {
					t.Fatalf("bs %d: ReadAt(%d): bytes differ from the device's", bs, tc.off)
				}
			})
		}
	}
}

// A sequential read of the device goes out in multipage Bios: the mapping
// is linear, so every readahead window is one run on the device.
func TestReadIsMultipage(t *testing.T) {
	v, e := newVolume(t, 4096, 2<<20)
	b := make([]byte, 128<<10)
	for off := int64(0); off < diskBytes; off += int64(len(b)) {
		if _, err := v.File().ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	s := e.Stats.Snapshot()
	if s.BioPages[mpage.Read] != diskBytes/mpage.PageSize {
		t.Fatalf("read %d pages in Bios, want %d", s.BioPages[mpage.Read], diskBytes/mpage.PageSize)
	}
	if per := s.BioPages[mpage.Read] / s.Bios[mpage.Read]; per < 16 {
		t.Fatalf("%d pages per Bio, want whole readahead windows (>= 16)", per)
	}
	if s.BlockIOs[mpage.Read] != 0 || s.ConfusedTotal(mpage.Read) != 0 {
		t.Fatalf("per-block reads %d, confused %d; want none on a linear mapping", s.BlockIOs[mpage.Read], s.ConfusedTotal(mpage.Read))
	}
}

func TestWriteAtAndSync(t *testing.T) {
	v, e := newVolume(t, 4096, 1<<20)
	f := v.File()
	data := bytes.Repeat([]byte("mpaged!"), 3000) // 21000 bytes, unaligned both ends
	const off = 12345
	if n, err := f.WriteAt(data, off); n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	disk := e.Disk()
	if !bytes.Equal(disk[off:off+len(data)], data) {
		t.Fatal("the device does not hold the bytes written")
	}
	// The partial pages around the write were read first: their other
	// bytes are still the device's.
	if want := expected(0, off, 4096); !bytes.Equal(disk[:off], want) {
		t.Fatal("bytes before the write changed")
	}
	end := off + len(data)
	if want := expected(int64(end), 8192-end%4096, 4096); !bytes.Equal(disk[end:end+len(want)], want) {
		t.Fatal("bytes after the write changed")
	}
}

func TestWritePastTheEndIsRefusedWhole(t *testing.T) {
	v, _ := newVolume(t, 4096, 1<<20)
	f := v.File()
	for _, tc := range []struct {
		name string
		off  int64
		n    int
	}{
		{"straddles the end", diskBytes - 100, 200},
		{"past the end", diskBytes + 4096, 1},
		{"negative", -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := f.WriteAt(make([]byte, tc.n), tc.off)
			if n != 0 || !errors.Is(err, raw.ErrRange) || !errors.Is(err, mpage.ErrRange) {
				t.Fatalf("WriteAt = %d, %v; want 0, ErrRange", n, err)
			}
			if d := f.Mapping().DirtyPages(); d != 0 {
				t.Fatalf("%d dirty pages after a refused write", d)
			}
			if f.Size() != diskBytes || f.Mapping().Size() != diskBytes {
				t.Fatalf("size %d/%d after a refused write", f.Size(), f.Mapping().Size())
			}
		})
	}
}

// DropCache makes the next read go to the device: a change made under the
// cache shows, and dirty data is written first, not lost.
func TestDropCache(t *testing.T) {
	v, e := newVolume(t, 4096, 1<<20)
	f := v.File()
	b := make([]byte, 8192)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("dirty"), 1<<20); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	e.Disk()[0] = 0xEE // behind the cache's back
	if _, err := f.ReadAt(b[:1], 0); err != nil || b[0] == 0xEE {
		t.Fatalf("before DropCache: read %#x, %v; want the cached byte", b[0], err)
	}
	if err := f.DropCache(); err != nil {
		t.Fatal(err)
	}
	if n := f.Mapping().Pages(); n != 0 {
		t.Fatalf("%d pages cached after DropCache", n)
	}
	if f.Mapping().Size() != diskBytes {
		t.Fatalf("size %d after DropCache, want %d", f.Mapping().Size(), diskBytes)
	}
	e.Drain()
	if got := string(e.Disk()[1<<20 : 1<<20+5]); got != "dirty" {
		t.Fatalf("dirty data lost by DropCache: device has %q", got)
	}
	misses := e.Stats.Snapshot().CacheMisses
	if _, err := f.ReadAt(b[:1], 0); err != nil || b[0] != 0xEE {
		t.Fatalf("after DropCache: read %#x, %v; want the device's 0xEE", b[0], err)
	}
	if e.Stats.Snapshot().CacheMisses == misses {
		t.Fatal("the read after DropCache was a cache hit")
	}
}

func TestClose(t *testing.T) {
	e := mpagetest.NewEnv(t, 4096, diskBytes, 1<<20)
	v, err := raw.Open(raw.Config{Device: e.Dev, Cache: e.Cache, Size: diskBytes})
	if err != nil {
		t.Fatal(err)
	}
	f := v.File()
	if _, err := f.WriteAt([]byte("kept"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	if got := string(e.Disk()[4096:4100]); got != "kept" {
		t.Fatalf("Close did not write back: device has %q", got)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, op := range map[string]func() error{
		"ReadAt":    func() error { _, err := f.ReadAt(make([]byte, 1), 0); return err },
		"WriteAt":   func() error { _, err := f.WriteAt(make([]byte, 1), 0); return err },
		"Sync":      f.Sync,
		"DropCache": f.DropCache,
	} {
		if err := op(); !errors.Is(err, raw.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}
