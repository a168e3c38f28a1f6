package overlayring_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/overlayring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

const (
	blockSize = 1024
	fileSize  = 64 * blockSize
)

// overlaid are the blocks the tests lay over the file: single ones, a run,
// the first and the last.
var overlaid = []uint64{0, 5, 9, 10, 11, 40, 63}

// newFile makes a file of fileSize pattern bytes and opens it read-write.
func newFile(t *testing.T, seed byte) (*os.File, []byte) {
	t.Helper()
	content := make([]byte, fileSize)
	ringtest.Pattern(content, 0, seed)
	path := filepath.Join(t.TempDir(), fmt.Sprintf("dev%d", seed))
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, content
}

// newOverlay is an overlay of the blocks in overlaid, each filled with its
// own number, and the file's content as a read through it must show.
func newOverlay(t testing.TB, content []byte) (*overlayring.Overlay, []byte) {
	t.Helper()
	want := bytes.Clone(content)
	var blocks []overlayring.Block
	for _, n := range overlaid {
		data := bytes.Repeat([]byte{byte(0x80 + n)}, blockSize)
		blocks = append(blocks, overlayring.Block{Num: n, Data: data})
		copy(want[n*blockSize:], data)
	}
	ov, err := overlayring.NewOverlay(blockSize, blocks)
	if err != nil {
		t.Fatal(err)
	}
	return ov, want
}

// TestConformance runs the shared ring suite through an overlay ring that
// shows an overlay on a file of its own: the suite's files, and ops of
// every kind on them, must pass through unchanged.
func TestConformance(t *testing.T) {
	for _, in := range ringtest.Backends {
		t.Run(in.Name, func(t *testing.T) {
			ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
				r := overlayring.New(in.Open(t, opts))
				decoy, content := newFile(t, 7)
				h, err := r.RegisterFile(int(decoy.Fd()))
				if err != nil {
					t.Fatal(err)
				}
				ov, _ := newOverlay(t, content)
				if err := r.Show(h, ov); err != nil {
					t.Fatal(err)
				}
				return r
			})
		})
	}
}

// TestOverlaidReads: reads of every shape (one buffer or many, aligned or
// not, across block edges, vecs splitting a block, the file's end) see
// the overlay exactly where they intersect it, on every backend.
func TestOverlaidReads(t *testing.T) {
	cases := []struct {
		name    string
		off     int64
		n, vecs int // vecs 0: OpRead
	}{
		{"one-block", 5 * blockSize, blockSize, 0},
		{"not-overlaid", 20 * blockSize, 4 * blockSize, 0},
		{"run-readv", 8 * blockSize, 6 * blockSize, 512},
		{"unaligned-across", 4*blockSize + 700, 2*blockSize + 100, 0},
		{"odd-vecs", 9*blockSize - 3, 3*blockSize + 9, 333},
		{"first-block-part", 100, 200, 0},
		{"whole-file", 0, fileSize, 4096},
		{"past-eof", 62 * blockSize, 4 * blockSize, 1000},
	}
	for _, in := range ringtest.Backends {
		t.Run(in.Name, func(t *testing.T) {
			r := overlayring.New(in.Open(t, uring.Options{}))
			t.Cleanup(func() { _ = r.Close() })
			f, content := newFile(t, 3)
			h := ringtest.Register(t, r, int(f.Fd()))
			ov, want := newOverlay(t, content)
			if err := r.Show(h, ov); err != nil {
				t.Fatal(err)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					buf := make([]byte, tc.n)
					q := &uring.Request{Op: uring.OpRead, File: h, Offset: tc.off, Buf: buf, BufIndex: uring.NoBuffer}
					if tc.vecs > 0 {
						q = &uring.Request{Op: uring.OpReadv, File: h, Offset: tc.off, Vecs: ringtest.SplitVecs(buf, tc.vecs), BufIndex: uring.NoBuffer}
					}
					q = ringtest.Do(t, r, q)
					wantN := min(int64(tc.n), fileSize-tc.off)
					if q.Err != nil || int64(q.Res) != wantN {
						t.Fatalf("res %d err %v, want %d bytes", q.Res, q.Err, wantN)
					}
					if !bytes.Equal(buf[:wantN], want[tc.off:tc.off+wantN]) {
						t.Errorf("read [%d,+%d) differs from the file with the overlay laid over it", tc.off, wantN)
					}
				})
			}
			if r.Features().Backend != "overlay("+in.Name+")" {
				t.Errorf("backend %q once shown", r.Features().Backend)
			}
		})
	}
}

// TestWritesRefused: a write of the overlaid file is refused with EROFS
// and changes nothing; the requests before it in the batch are accepted;
// another file on the same ring is written as usual.
func TestWritesRefused(t *testing.T) {
	r := overlayring.New(uring.NewSync(uring.Options{}))
	t.Cleanup(func() { _ = r.Close() })
	f, content := newFile(t, 1)
	other, _ := newFile(t, 2)
	h := ringtest.Register(t, r, int(f.Fd()))
	oh := ringtest.Register(t, r, int(other.Fd()))
	ov, _ := newOverlay(t, content)
	if err := r.Show(h, ov); err != nil {
		t.Fatal(err)
	}
	c := ringtest.NewCollector(2)
	data := bytes.Repeat([]byte{0xAB}, blockSize)
	read := &uring.Request{Op: uring.OpRead, File: h, Offset: 5 * blockSize, Buf: make([]byte, blockSize), BufIndex: uring.NoBuffer, Handler: c}
	for _, op := range []uring.Op{uring.OpWrite, uring.OpWritev} {
		w := &uring.Request{Op: op, File: h, Offset: 20 * blockSize, Buf: data, Vecs: [][]byte{data}, BufIndex: uring.NoBuffer, Handler: c}
		if err := r.Submit(read, w); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("%s of the overlaid file: %v, want EROFS", op, err)
		}
		if got := c.Wait(t, 1, 30*time.Second)[0]; got != read || got.Err != nil || got.Buf[0] != 0x85 {
			t.Fatalf("the read before the refused %s: %+v", op, got)
		}
	}
	if q := ringtest.Do(t, r, &uring.Request{Op: uring.OpWrite, File: oh, Offset: 0, Buf: data, BufIndex: uring.NoBuffer}); q.Err != nil {
		t.Fatalf("write of another file: %v", q.Err)
	}
	now, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(now, content) {
		t.Error("the overlaid file changed")
	}
	if err := r.Show(oh, ov); !errors.Is(err, overlayring.ErrOverlay) {
		t.Errorf("second Show: %v, want ErrOverlay", err)
	}
}

// TestNewOverlayRefuses: malformed overlays are refused by name.
func TestNewOverlayRefuses(t *testing.T) {
	b := make([]byte, blockSize)
	for _, tc := range []struct {
		name   string
		blocks []overlayring.Block
	}{
		{"unsorted", []overlayring.Block{{Num: 5, Data: b}, {Num: 4, Data: b}}},
		{"repeated", []overlayring.Block{{Num: 5, Data: b}, {Num: 5, Data: b}}},
		{"short", []overlayring.Block{{Num: 5, Data: b[:10]}}},
		{"far", []overlayring.Block{{Num: 1 << 60, Data: b}}},
	} {
		if _, err := overlayring.NewOverlay(blockSize, tc.blocks); !errors.Is(err, overlayring.ErrOverlay) {
			t.Errorf("%s: %v, want ErrOverlay", tc.name, err)
		}
	}
}

// missReader submits reads of a block the overlay does not hold and
// waits for them without allocating.
type missReader struct {
	done chan struct{}
}

func (m *missReader) Complete(*uring.Request) { m.done <- struct{}{} }

// TestMissAllocs: a read the overlay does not touch allocates nothing in
// the overlay ring: the same as through the inner ring alone.
func TestMissAllocs(t *testing.T) {
	f, content := newFile(t, 4)
	inner := uring.NewSync(uring.Options{})
	r := overlayring.New(inner)
	t.Cleanup(func() { _ = r.Close() })
	h := ringtest.Register(t, r, int(f.Fd()))
	ov, _ := newOverlay(t, content)
	if err := r.Show(h, ov); err != nil {
		t.Fatal(err)
	}
	m := &missReader{done: make(chan struct{}, 1)}
	q := &uring.Request{Op: uring.OpReadv, File: h, Offset: 20 * blockSize, Vecs: [][]byte{make([]byte, blockSize), make([]byte, blockSize)},
		BufIndex: uring.NoBuffer, Handler: m}
	measure := func(ring uring.Ring) float64 {
		return testing.AllocsPerRun(200, func() {
			if err := ring.Submit(q); err != nil {
				t.Fatal(err)
			}
			<-m.done
		})
	}
	base, got := measure(inner), measure(r)
	if got > base {
		t.Errorf("a read past the overlay allocates %.1f times through the overlay ring, %.1f through the inner ring", got, base)
	}
}

// BenchmarkSubmitMiss: the overlay ring's cost on a read it does not
// touch, with an overlay of 64 Ki blocks around it (every other block:
// the range check passes, the binary search misses), the sync ring under
// it.
func BenchmarkSubmitMiss(b *testing.B) {
	for _, shown := range []bool{false, true} {
		b.Run(fmt.Sprintf("shown=%v", shown), func(b *testing.B) {
			f, err := os.CreateTemp(b.TempDir(), "dev")
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1 << 30); err != nil { // sparse
				b.Fatal(err)
			}
			r := overlayring.New(uring.NewSync(uring.Options{}))
			defer r.Close()
			h, err := r.RegisterFile(int(f.Fd()))
			if err != nil {
				b.Fatal(err)
			}
			if shown {
				var blocks []overlayring.Block
				data := make([]byte, 4096)
				for i := range uint64(64 << 10) {
					blocks = append(blocks, overlayring.Block{Num: 1000 + 2*i, Data: data})
				}
				ov, err := overlayring.NewOverlay(4096, blocks)
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Show(h, ov); err != nil {
					b.Fatal(err)
				}
			}
			m := &missReader{done: make(chan struct{}, 1)}
			q := &uring.Request{Op: uring.OpRead, File: h, Offset: 1001 * 4096, Buf: make([]byte, 4096), BufIndex: uring.NoBuffer, Handler: m}
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Submit(q); err != nil {
					b.Fatal(err)
				}
				<-m.done
			}
		})
	}
}
