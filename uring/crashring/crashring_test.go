package crashring_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/crashring"
	"github.com/mpaged/mpaged/uring/faultring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// TestConformance runs the shared ring suite through a crash ring:
// recording writes and flushes must not change what the caller sees.
func TestConformance(t *testing.T) {
	for _, in := range ringtest.Backends {
		t.Run(in.Name, func(t *testing.T) {
			ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
				return crashring.New(in.Open(t, opts), crashring.Config{})
			})
		})
	}
}

const (
	sector  = 512
	imgSize = 64 << 10
	cuts    = 200
)

// fixture is a crash ring over a fault ring over the sync ring, on a file
// of imgSize bytes that starts out all 0xee.
type fixture struct {
	t      *testing.T
	crash  *crashring.Ring
	faults *faultring.Ring
	file   uring.File
	path   string
}

func newFixture(t *testing.T, cfg crashring.Config) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xee}, imgSize), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fx := &fixture{t: t, path: path}
	fx.faults = faultring.New(uring.NewSync(uring.Options{}), 1)
	fx.crash = crashring.New(fx.faults, cfg)
	t.Cleanup(func() { _ = fx.crash.Close() })
	fx.file = ringtest.Register(t, fx.crash, int(f.Fd()))
	return fx
}

// write writes n bytes of b at off and wants success.
func (fx *fixture) write(off int64, b byte, n int) {
	fx.t.Helper()
	q := ringtest.Do(fx.t, fx.crash, &uring.Request{Op: uring.OpWritev, File: fx.file, Offset: off,
		Vecs: ringtest.SplitVecs(bytes.Repeat([]byte{b}, n), 1024), BufIndex: uring.NoBuffer})
	if q.Err != nil || q.Res != n {
		fx.t.Fatalf("write %d at %d: res %d err %v", n, off, q.Res, q.Err)
	}
}

// flush fsyncs the file and returns the completion's error.
func (fx *fixture) flush() error {
	fx.t.Helper()
	return ringtest.Do(fx.t, fx.crash, &uring.Request{Op: uring.OpFsync, File: fx.file, BufIndex: uring.NoBuffer}).Err
}

// cuts returns n cuts, seeds 1..n.
func (fx *fixture) cuts(n int) []*crashring.Image {
	fx.t.Helper()
	out := make([]*crashring.Image, n)
	for i := range out {
		im, err := fx.crash.Cut(rand.New(rand.NewPCG(uint64(i+1), 7)))
		if err != nil {
			fx.t.Fatal(err)
		}
		out[i] = im
	}
	return out
}

// sectorsOf classifies the sectors of [off, off+n) in im: how many hold
// want throughout and how many hold something else.
func sectorsOf(im *crashring.Image, off int64, n int, want byte) (match, other int) {
	for s := off; s < off+int64(n); s += sector {
		if bytes.Equal(im.Data[s:s+sector], bytes.Repeat([]byte{want}, sector)) {
			match++
		} else {
			other++
		}
	}
	return match, other
}

// TestFlushedWritesSurviveEveryCut: a write followed by a successful flush
// is in every cut; a write after the flush is in some cuts, missing from
// others, and torn (some of its sectors, not all) in others still.
func TestFlushedWritesSurviveEveryCut(t *testing.T) {
	fx := newFixture(t, crashring.Config{})
	fx.write(0, 0xaa, 8*sector)
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	fx.write(16*sector, 0xbb, 8*sector)
	var whole, absent, torn int
	for i, im := range fx.cuts(cuts) {
		if m, _ := sectorsOf(im, 0, 8*sector, 0xaa); m != 8 {
			t.Fatalf("cut %d: the flushed write has %d of 8 sectors (%v)", i, m, im)
		}
		switch m, _ := sectorsOf(im, 16*sector, 8*sector, 0xbb); m {
		case 8:
			whole++
		case 0:
			absent++
		default:
			torn++
		}
		if im.Pending != 1 {
			t.Fatalf("cut %d: %d pending writes, want 1", i, im.Pending)
		}
	}
	if whole == 0 || absent == 0 || torn == 0 {
		t.Errorf("over %d cuts the unflushed write was whole %d, absent %d, torn %d times: want each", cuts, whole, absent, torn)
	}
	if st := fx.crash.CrashStats(); st.Writes != 2 || st.Flushes != 1 || st.Durable != 1 || st.Pending != 1 {
		t.Errorf("stats %+v, want 2 writes, 1 flush, 1 durable, 1 pending", st)
	}
}

// TestNoTear: with NoTear a pending write is whole or absent, never torn.
func TestNoTear(t *testing.T) {
	fx := newFixture(t, crashring.Config{NoTear: true})
	fx.write(0, 0xbb, 8*sector)
	for i, im := range fx.cuts(cuts) {
		if m, o := sectorsOf(im, 0, 8*sector, 0xbb); m != 0 && o != 0 {
			t.Fatalf("cut %d: torn (%d new sectors, %d old) with NoTear", i, m, o)
		}
	}
}

// TestReorderingVisible: two unflushed writes to the same place land in
// either order, so the earlier one's bytes win in some cuts; once flushed,
// the later one wins in all.
func TestReorderingVisible(t *testing.T) {
	fx := newFixture(t, crashring.Config{NoTear: true})
	fx.write(4096, 0x01, sector)
	fx.write(4096, 0x02, sector)
	seen := map[byte]int{}
	for _, im := range fx.cuts(cuts) {
		seen[im.Data[4096]]++
	}
	if seen[0x01] == 0 || seen[0x02] == 0 || seen[0xee] == 0 {
		t.Errorf("over %d cuts the sector held first %d, second %d, neither %d times: want each", cuts, seen[0x01], seen[0x02], seen[0xee])
	}
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	for i, im := range fx.cuts(cuts) {
		if im.Data[4096] != 0x02 {
			t.Fatalf("cut %d after the flush holds %#x, want the later write's 0x02", i, im.Data[4096])
		}
	}
}

// TestFailedFlushKeepsWritesPending: a flush that fails makes nothing
// durable; a write that failed is dropped at the next good flush.
func TestFailedFlushKeepsWritesPending(t *testing.T) {
	fx := newFixture(t, crashring.Config{NoTear: true})
	fx.write(0, 0xaa, sector)
	rule := fx.faults.Add(faultring.Rule{Ops: faultring.Ops(uring.OpFsync), Count: 1, Fault: faultring.Fault{Errno: syscall.EIO}})
	if err := fx.flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush: %v, want the injected EIO", err)
	}
	fx.faults.Remove(rule)
	absent := 0
	for _, im := range fx.cuts(cuts) {
		if im.Data[0] == 0xee {
			absent++
		}
	}
	if absent == 0 {
		t.Errorf("after a failed flush the write was in all %d cuts: it should still be pending", cuts)
	}
	fx.faults.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Count: 1, Fault: faultring.Fault{Errno: syscall.EIO}})
	q := ringtest.Do(t, fx.crash, &uring.Request{Op: uring.OpWritev, File: fx.file, Offset: 8192,
		Vecs: [][]byte{bytes.Repeat([]byte{0xcc}, sector)}, BufIndex: uring.NoBuffer})
	if !errors.Is(q.Err, syscall.EIO) {
		t.Fatalf("write: %v, want the injected EIO", q.Err)
	}
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	for i, im := range fx.cuts(cuts) {
		if im.Data[0] != 0xaa || im.Data[8192] != 0xee || im.Pending != 0 {
			t.Fatalf("cut %d after a good flush: first write %#x (want 0xaa), failed write %#x (want 0xee), %d pending",
				i, im.Data[0], im.Data[8192], im.Pending)
		}
	}
	if st := fx.crash.CrashStats(); st.Dropped != 1 || st.Durable != 1 {
		t.Errorf("stats %+v, want 1 dropped, 1 durable", st)
	}
}

// TestCutGrowsWithTheFile: a flushed write past the end of the file
// extends the image, and the real file holds the same bytes.
func TestCutGrowsWithTheFile(t *testing.T) {
	fx := newFixture(t, crashring.Config{})
	fx.write(imgSize, 0x77, 4096)
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	im := fx.cuts(1)[0]
	onDisk, err := os.ReadFile(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Data) != imgSize+4096 || !bytes.Equal(im.Data, onDisk) {
		t.Fatalf("cut of %d bytes, file of %d: want both %d and equal", len(im.Data), len(onDisk), imgSize+4096)
	}
	out := filepath.Join(t.TempDir(), "cut")
	if err := im.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, onDisk) {
		t.Fatalf("WriteFile: %v, equal %v", err, bytes.Equal(got, onDisk))
	}
}

// TestCutNeedsOneFile: Cut refuses with no tracked file and with several.
func TestCutNeedsOneFile(t *testing.T) {
	r := crashring.New(uring.NewSync(uring.Options{}), crashring.Config{})
	t.Cleanup(func() { _ = r.Close() })
	rng := rand.New(rand.NewPCG(1, 1))
	if _, err := r.Cut(rng); !errors.Is(err, crashring.ErrNoFile) {
		t.Errorf("cut of nothing: %v, want ErrNoFile", err)
	}
	for i := range 2 {
		f, err := os.Create(filepath.Join(t.TempDir(), "f"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		ringtest.Register(t, r, int(f.Fd()))
		if _, err := r.Cut(rng); (i == 0) != (err == nil) || i == 1 && !errors.Is(err, crashring.ErrAmbiguous) {
			t.Errorf("cut with %d files: %v", i+1, err)
		}
	}
	if _, err := r.CutFile(-1, rng); !errors.Is(err, crashring.ErrNoFile) {
		t.Errorf("cut of an untracked fd: %v, want ErrNoFile", err)
	}
}

// TestBeforeFlush: the hook runs once per flush of a tracked file, before
// the flush takes effect, so a cut inside it still has the writes the
// flush will make durable pending.
func TestBeforeFlush(t *testing.T) {
	var fx *fixture
	var pendingAtFlush []int
	fx = newFixture(t, crashring.Config{BeforeFlush: func(fd int) {
		im, err := fx.crash.CutFile(fd, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Error(err)
			return
		}
		pendingAtFlush = append(pendingAtFlush, im.Pending)
	}})
	fx.write(0, 0xaa, sector)
	fx.write(sector, 0xbb, sector)
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	if len(pendingAtFlush) != 2 || pendingAtFlush[0] != 2 || pendingAtFlush[1] != 0 {
		t.Errorf("pending writes seen by the hook at each flush: %v, want [2 0]", pendingAtFlush)
	}
}

// TestCutToFileMatchesCut: the same rng state cuts the same image in
// memory and to a file, a pending write past the end included.
func TestCutToFileMatchesCut(t *testing.T) {
	fx := newFixture(t, crashring.Config{})
	fx.write(0, 0xaa, 8*sector)
	if err := fx.flush(); err != nil {
		t.Fatal(err)
	}
	fx.write(4*sector, 0xbb, 8*sector)
	fx.write(imgSize, 0xcc, 4*sector)
	for seed := range uint64(20) {
		mem, err := fx.crash.Cut(rand.New(rand.NewPCG(seed, 3)))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "cut")
		onFile, err := fx.crash.CutTo(path, rand.New(rand.NewPCG(seed, 3)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, mem.Data) || onFile.Size != int64(len(got)) || onFile.String() != mem.String() {
			t.Fatalf("seed %d: the file cut (%v, %d bytes) differs from the memory cut (%v)", seed, onFile, len(got), mem)
		}
	}
}
