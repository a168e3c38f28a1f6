package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
)

// fioPattern fills b with what fio's verify_pattern "0xMAGIC%o" puts at
// device offset off: in every block of bs bytes, starting at the block,
// the four bytes of magic (as written) and the block's offset as eight
// little-endian bytes, repeated and cut off at the block's end.
func fioPattern(b []byte, off int64, magic uint32, bs int) {
	for i := range b {
		p := off + int64(i)
		start := p / int64(bs) * int64(bs)
		k := (p - start) % 12
		if k < 4 {
			b[i] = byte(magic >> (8 * (3 - k)))
		} else {
			b[i] = byte(uint64(start) >> (8 * (k - 4)))
		}
	}
}

func fioPatternSpec(magic uint32) string { return fmt.Sprintf("0x%08x%%o", magic) }

// The Go pattern is byte for byte what fio writes, so the like-for-like
// test below compares against what fio really put on the device.
func TestFioPatternMatchesFio(t *testing.T) {
	fio := testenv.RequireTool(t, "fio")
	for _, bs := range []int{4096, 128 << 10} {
		path := filepath.Join(t.TempDir(), "pattern")
		const magic = 0xa1b2c3d4
		args := fioJob{Workload: Workload{Name: "p", Pattern: Sequential, ReadPercent: 0, BlockSize: bs, Depth: 1, Region: 4 * int64(bs)},
			Path: path, IOEngine: "psync", Verify: fioPatternSpec(magic)}.args()
		testenv.Run(t, fio, args...)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 4*bs)
		fioPattern(want, 0, magic, bs)
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			t.Fatalf("bs %d: fio wrote % x... at %d, the Go pattern has % x...", bs, got[i:min(i+16, len(got))], i, want[i:min(i+16, len(want))])
		}
	}
}

// likeForLike is a target with the engine and fio runners set up on it.
type likeForLike struct {
	target *Target
	engine *engineRunner
	fio    []*fioRunner
}

func newLikeForLike(t *testing.T) *likeForLike {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "fio")
	spec := TargetLoop
	if zramAvailable() {
		spec = TargetZram
	}
	tg := openTestTarget(t, TargetConfig{Spec: spec, Size: 16 << 20, TempDir: t.TempDir()})
	env := &Env{Target: tg, CacheBytes: 4 << 20, Depth: 128, Write: true, Logf: t.Logf}
	lf := &likeForLike{target: tg, engine: newEngineRunner("engine-native", backendNative, true)}
	lf.fio = []*fioRunner{newFioRunner("fio-io_uring", "io_uring", 0), newFioRunner("fio-libaio", "libaio", 0)}
	runners := []Runner{lf.engine}
	for _, f := range lf.fio {
		runners = append(runners, f)
	}
	setUpForTest(t, env, runners...)
	return lf
}

// setUpForTest sets runners up on env (skipping, or failing under CI, when
// one is unavailable here) and tears them down when the test ends.
func setUpForTest(t *testing.T, env *Env, runners ...Runner) {
	t.Helper()
	for _, r := range runners {
		if err := r.Setup(context.Background(), env); err != nil {
			if errors.Is(err, ErrUnavailable) {
				testenv.Unavailable(t, "%v", err)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Teardown(); err != nil {
				t.Errorf("%s teardown: %v", r.Name(), err)
			}
		})
	}
}

// onePass is workload name over the whole target, once.
func (lf *likeForLike) onePass(name string) Workload {
	w := testWorkload(name)
	w.Region = lf.target.Size
	return w
}

// devicePattern checks what the engine read at off against the pattern
// fio wrote (bs-byte blocks), and counts the bytes.
type devicePattern struct {
	t     *testing.T
	magic uint32
	bs    int
	mu    sync.Mutex
	bad   int
	bytes int64
}

func (d *devicePattern) visit(off int64, b []byte) {
	want := make([]byte, len(b))
	fioPattern(want, off, d.magic, d.bs)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bytes += int64(len(b))
	if !bytes.Equal(b, want) {
		if d.bad == 0 {
			d.t.Errorf("engine read at %d differs from what fio wrote there", off)
		}
		d.bad++
	}
}

// TestLikeForLike: fio and the engine runner read the same bytes from the
// same target. fio writes a pattern naming each block's offset and the
// engine reads it back, in order (checksum) and at random; the engine
// writes another pattern and fio (io_uring and libaio) reads and verifies
// every byte of it, and fails on the stale one, which shows fio's verify
// really compares.
func TestLikeForLike(t *testing.T) {
	lf := newLikeForLike(t)
	ctx := context.Background()
	size := lf.target.Size
	const fioMagic, engineMagic = 0x5eed0f10, 0xe1e2e3e4

	// fio writes; the engine reads.
	write := lf.onePass("seqwrite")
	if _, err := lf.fio[0].runJob(ctx, fioJob{Workload: write, Path: lf.target.Path, IOEngine: "io_uring", Verify: fioPatternSpec(fioMagic)}); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	fioPattern(want, 0, fioMagic, write.BlockSize)
	wantSum := sha256.Sum256(want)
	if got := sha256.Sum256(preadDirect(t, lf.target.Path, size)); got != wantSum {
		t.Fatal("the device does not hold what fio wrote (O_DIRECT pread checksum differs)")
	}
	h := sha256.New()
	check := &devicePattern{t: t, magic: fioMagic, bs: write.BlockSize}
	res, err := lf.engine.run(ctx, lf.onePass("seqread"), func(off int64, b []byte) {
		check.visit(off, b)
		h.Write(b) // one reader: in order
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := [32]byte(h.Sum(nil)); got != wantSum || check.bytes != size {
		t.Fatalf("engine seqread: %d bytes, checksum %x; fio wrote %d bytes, checksum %x", check.bytes, got, size, wantSum)
	}
	// Cold: every page came from the device, in multipage Bios.
	if e := res.Engine; e.BioPages < uint64(size/mpage.PageSize) || e.Bios >= e.BioPages {
		t.Fatalf("engine seqread read %d pages in %d Bios; want the region, multipage", e.BioPages, e.Bios)
	}
	check = &devicePattern{t: t, magic: fioMagic, bs: write.BlockSize}
	if _, err := lf.engine.run(ctx, lf.onePass("randread"), check.visit); err != nil {
		t.Fatal(err)
	}
	if check.bytes != size || check.bad != 0 {
		t.Fatalf("engine randread: %d of %d bytes, %d reads differ", check.bytes, size, check.bad)
	}

	// The engine writes; fio reads and verifies.
	st, err := lf.engine.open()
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	f := st.vol.File()
	buf := make([]byte, write.BlockSize)
	for off := int64(0); off < size; off += int64(len(buf)) {
		fioPattern(buf, off, engineMagic, len(buf))
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	read := lf.onePass("seqread")
	for _, r := range lf.fio {
		res, err := r.runJob(ctx, fioJob{Workload: read, Path: lf.target.Path, IOEngine: r.ioengine, Verify: fioPatternSpec(engineMagic), VerifyOnly: true})
		if err != nil {
			t.Fatalf("%s: what the engine wrote does not verify: %v", r.name, err)
		}
		if res.ReadBytes != size {
			t.Fatalf("%s verified %d bytes, want %d", r.name, res.ReadBytes, size)
		}
	}
	if _, err := lf.fio[0].runJob(ctx, fioJob{Workload: read, Path: lf.target.Path, IOEngine: "io_uring", Verify: fioPatternSpec(fioMagic), VerifyOnly: true}); !errors.Is(err, ErrRunner) {
		t.Fatalf("fio verified the engine's data against the stale pattern: %v", err)
	}
}

// preadDirect reads [0, n) of path with O_DIRECT, past every cache.
func preadDirect(t *testing.T, path string, n int64) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf)
}
