package ext

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// recorderRing opens img's volume over a Recorder on the image file.
func recorderRing(t *testing.T, rec **mpagetest.Recorder) func(f *os.File) uring.Ring {
	return func(f *os.File) uring.Ring {
		r, err := mpagetest.NewFileRecorder(f, mpagetest.RecorderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		*rec = r
		return r
	}
}

// TestWriteBoundaryOrder: with 1 KiB blocks, writing blocks 0..15 of a new
// file puts data 0..11 at the goal, the indirect block right after them,
// then data 12..15; writeback sends data 0..11, then the indirect block
// (the engine's Boundary hook), then data 12..15, in that order.
func TestWriteBoundaryOrder(t *testing.T) {
	const bs = 1024
	img := mkfs(t, "ext2", bs, "", "8M")
	var rec *mpagetest.Recorder
	v := mustOpenImage(t, img, openOpts{rw: true, ringFor: recorderRing(t, &rec)})
	f, err := v.Create("/b", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := randBytes(1, 16*bs)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	iblock, sectors := f.n.wmap.snapshot()
	ptr := func(i int) uint64 { return uint64(binary.LittleEndian.Uint32(iblock[4*i:])) }
	d0, ind := ptr(0), ptr(nDirect)
	for i := range nDirect {
		if ptr(i) != d0+uint64(i) {
			t.Fatalf("direct block %d at %d, want %d", i, ptr(i), d0+uint64(i))
		}
	}
	if ind != d0+nDirect {
		t.Fatalf("indirect block at %d, want %d (right after data block 11)", ind, d0+nDirect)
	}
	bm := mpage.BlockMap{Block: nDirect, Len: 4}
	if err := f.n.m.Mapper().MapBlocks(&bm); err != nil || bm.PBlock != ind+1 || bm.Len != 4 {
		t.Fatalf("blocks 12..15: %+v, %v; want 4 blocks at %d", bm, err, ind+1)
	}
	if sectors != 17*bs/512 {
		t.Fatalf("i_blocks %d, want %d", sectors, 17*bs/512)
	}
	rec.Drain()
	rec.Reset()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	rec.Drain()
	var order []string
	for _, r := range rec.Records() {
		if r.Op != uring.OpWritev {
			continue
		}
		switch {
		case r.Offset == int64(d0*bs) && r.Len == 12*bs:
			order = append(order, "data 0..11")
		case r.Offset <= int64(ind*bs) && int64(ind*bs) < r.Offset+int64(r.Len):
			if r.Offset+int64(r.Len) > int64(ind+1)*bs || r.Offset < int64(ind*bs) {
				t.Fatalf("the indirect block's write %v covers data blocks too", r)
			}
			order = append(order, "indirect")
		case r.Offset == int64((ind+1)*bs) && r.Len == 4*bs:
			order = append(order, "data 12..15")
		default:
			order = append(order, "other")
		}
	}
	if len(order) < 3 || strings.Join(order[:3], "; ") != "data 0..11; indirect; data 12..15" {
		t.Fatalf("write order %q, want data 0..11, indirect, data 12..15 first", order)
	}
	f.Close()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
}

// TestWriteSyncDurable: after File.Sync and Volume.Sync return, a fresh
// engine on the same image (the first one still open, nothing closed)
// reads what was written.
func TestWriteSyncDurable(t *testing.T) {
	for _, bs := range []int{1024, 4096} {
		t.Run(fmt.Sprintf("%dk", bs/1024), func(t *testing.T) {
			img := mkfs(t, "ext2", bs, "", "16M")
			v := mustOpenImage(t, img, openOpts{rw: true})
			f, err := v.Create("/durable", 0o600)
			if err != nil {
				t.Fatal(err)
			}
			data := randBytes(7, 300*1024+11)
			if _, err := f.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			check := func(path string, want []byte) {
				t.Helper()
				fresh := mustOpenImage(t, img, openOpts{})
				g, err := fresh.OpenFile(path)
				if err != nil {
					t.Fatalf("fresh engine: %v", err)
				}
				got := make([]byte, len(want)+1)
				n, err := g.ReadAt(got, 0)
				g.Close()
				if err != io.EOF || !bytes.Equal(got[:n], want) {
					t.Fatalf("fresh engine: %s: %d bytes (%v), want %d", path, n, err, len(want))
				}
				if err := fresh.Close(); err != nil {
					t.Fatal(err)
				}
			}
			check("/durable", data)
			// The image is consistent at a sync point, only not marked clean.
			fsckClean(t, img)

			if err := v.Mkdir("/dir", 0o755); err != nil {
				t.Fatal(err)
			}
			g, err := v.Create("/dir/second", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			more := randBytes(8, 5000)
			if _, err := g.WriteAt(more, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(more, 100); err != nil {
				t.Fatal(err)
			}
			copy(data[100:], more)
			if err := v.Sync(); err != nil {
				t.Fatal(err)
			}
			check("/dir/second", more)
			check("/durable", data)
			g.Close()
			f.Close()
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, img)
		})
	}
}

// TestWriteSyncEIO: with the fault ring failing writes, Sync returns an
// error wrapping EIO, and keeps returning it; once the device works again
// a Sync succeeds, and the image is consistent with the data in place.
func TestWriteSyncEIO(t *testing.T) {
	eio := faultring.Fault{Errno: syscall.EIO}
	for _, c := range []struct {
		name string
		rule func(v *testVolume, f *File) faultring.Rule
	}{
		{"every write", func(*testVolume, *File) faultring.Rule {
			return faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Fault: eio}
		}},
		{"data writes", func(v *testVolume, f *File) faultring.Rule {
			iblock, _ := f.n.wmap.snapshot()
			d0 := int64(binary.LittleEndian.Uint32(iblock[0:]))
			bs := int64(v.BlockSize())
			return faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Off: d0 * bs, End: (d0 + 8) * bs, Fault: eio}
		}},
		{"inode table writes", func(v *testVolume, f *File) faultring.Rule {
			blk, _ := v.inodeLocation(f.Ino())
			bs := int64(v.BlockSize())
			return faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Off: int64(blk) * bs, End: int64(blk+1) * bs, Fault: eio}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, "ext2", 1024, "", "16M")
			var fr *faultring.Ring
			v := mustOpenImage(t, img, openOpts{rw: true, wrap: func(inner uring.Ring) uring.Ring {
				fr = faultring.New(inner, 1)
				return fr
			}})
			f, err := v.Create("/eio", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			data := randBytes(9, 40*1024+5)
			if _, err := f.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			r := fr.Add(c.rule(v, f))
			for i := range 2 {
				if err := f.Sync(); !errors.Is(err, syscall.EIO) {
					t.Fatalf("sync %d with failing writes: %v, want EIO", i, err)
				}
			}
			if r.Fired() == 0 {
				t.Fatal("the rule never fired")
			}
			fr.Remove(r)
			if err := f.Sync(); err != nil {
				t.Fatalf("sync after the device recovered: %v", err)
			}
			f.Close()
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, img)
			out := filepath.Join(t.TempDir(), "out")
			testenv.Run(t, "debugfs", "-R", "dump /eio "+out, img)
			if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
				t.Fatalf("debugfs: %d bytes, want %d", len(got), len(data))
			}
		})
	}
}

// debugfsRuns returns every block of path (data, indirect and extent tree
// blocks) as runs of
// contiguous device blocks, in device order.
func debugfsRuns(t *testing.T, img, path string) [][2]uint64 {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", "stat "+path, img)
	i := strings.Index(out, "BLOCKS:\n")
	if j := strings.Index(out, "EXTENTS:\n"); i < 0 {
		i = j
	}
	if i < 0 {
		t.Fatalf("no BLOCKS or EXTENTS in\n%s", out)
	}
	body := out[i:]
	body = body[strings.IndexByte(body, '\n')+1:]
	if k := strings.Index(body, "\nTOTAL"); k >= 0 {
		body = body[:k]
	}
	var blocks [][2]uint64
	for _, tok := range strings.Split(strings.TrimSpace(body), ", ") {
		_, phys, ok := strings.Cut(tok, "):")
		if !ok {
			t.Fatalf("debugfs token %q", tok)
		}
		a, b, _ := strings.Cut(phys, "-")
		lo, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			t.Fatalf("debugfs token %q", tok)
		}
		hi := lo
		if b != "" {
			if hi, err = strconv.ParseUint(b, 10, 64); err != nil {
				t.Fatalf("debugfs token %q", tok)
			}
		}
		blocks = append(blocks, [2]uint64{lo, hi - lo + 1})
	}
	slices.SortFunc(blocks, func(a, b [2]uint64) int { return int(a[0]) - int(b[0]) })
	var runs [][2]uint64
	for _, b := range blocks {
		if n := len(runs); n > 0 && runs[n-1][0]+runs[n-1][1] == b[0] {
			runs[n-1][1] += b[1]
			continue
		}
		runs = append(runs, b)
	}
	return runs
}

// TestWriteLargeSequential writes a 256 MiB file front to back with 4 KiB
// blocks, on ext2 (block pointers) and on ext4 without a journal
// (extents): it lands in a handful of device runs (only the groups'
// metadata splits it; ext2's indirect blocks sit between their data), and
// reading it back in a fresh engine takes about one data request per MiB
// (ext2 too: readahead windows end where its indirect blocks cut the data)
// and a few metadata reads.
func TestWriteLargeSequential(t *testing.T) {
	for _, c := range []struct {
		typ   string
		extra []string
		// extraData: data requests allowed past one per MiB.
		extraData int
	}{
		// Each indirect block ends a data run (Boundary: data, then the
		// indirect block, then data). Readahead lines its windows up with
		// where the last run ended, so after the first one (the direct
		// blocks' at 48 KiB, plus the window shortened to line up) runs
		// end on window edges rather than splitting one window per 4 MiB
		// into two requests.
		{"ext2", nil, 4},
		// Extents: one request per MiB (plus one where the data crosses
		// a group's metadata: a device run ends).
		{"ext4", noJournal, 0},
	} {
		t.Run(c.typ, func(t *testing.T) {
			t.Parallel()
			testLargeSequential(t, c.typ, c.extra, c.extraData)
		})
	}
}

const largeSize = 256 << 20

func testLargeSequential(t *testing.T, typ string, extra []string, extraData int) {
	const size = largeSize
	const chunk = 1 << 20
	img := mkfs(t, typ, 4096, "", "300M", extra...)
	w := mustOpenImage(t, img, openOpts{rw: true, cache: 64 << 20})
	f, err := w.Create("/big", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	piece := func(i int) []byte {
		b := randBytes(uint64(1000+i%7), chunk)
		binary.LittleEndian.PutUint64(b, uint64(i))
		return b
	}
	for i := range size / chunk {
		if _, err := f.WriteAt(piece(i), int64(i)*chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	st := w.stats.Snapshot()
	t.Logf("write: %d Bios, %d pages (%.1f per Bio), %d per-block I/Os, confused %d", st.Bios[mpage.Write], st.BioPages[mpage.Write],
		float64(st.BioPages[mpage.Write])/float64(max(st.Bios[mpage.Write], 1)), st.BlockIOs[mpage.Write], st.ConfusedTotal(mpage.Write))
	f.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)

	runs := debugfsRuns(t, img, "/big")
	t.Logf("%s: 256 MiB in %d device runs: %v", typ, len(runs), runs)
	if len(runs) > 5 {
		t.Errorf("%d runs, want at most a handful", len(runs))
	}

	var rec *mpagetest.Recorder
	v := mustOpenImage(t, img, openOpts{ringFor: recorderRing(t, &rec), cache: 64 << 20})
	g, err := v.OpenFile("/big")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	rec.Drain()
	rec.Reset()
	buf := make([]byte, chunk)
	for i := range size / chunk {
		if _, err := g.ReadAt(buf, int64(i)*chunk); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, piece(i)) {
			t.Fatalf("MiB %d differs", i)
		}
	}
	rec.Drain()
	// Data requests are the ones that touch the file's data blocks (as
	// its mapper places them); the rest are metadata.
	var dataRuns [][2]uint64
	for fb := uint64(0); fb < size/4096; {
		bm := mpage.BlockMap{Block: fb, Len: 1 << 16}
		if err := g.n.m.Mapper().MapBlocks(&bm); err != nil || bm.Flags&mpage.Mapped == 0 {
			t.Fatalf("file block %d: %+v, %v", fb, bm, err)
		}
		dataRuns = append(dataRuns, [2]uint64{bm.PBlock, uint64(bm.Len)})
		fb += uint64(bm.Len)
	}
	var data, meta int
	for _, r := range rec.Records() {
		// By where it starts: the metadata mapping's readahead after an
		// indirect block runs on into the data that follows it.
		isData := false
		for _, d := range dataRuns {
			if r.Offset >= int64(d[0])*4096 && r.Offset < int64(d[0]+d[1])*4096 {
				isData = true
				break
			}
		}
		if isData {
			data++
		} else {
			meta++
		}
	}
	// Slack for the read side's readahead: a few more requests while its
	// window grows, and when the reader catches up with it (slow runs:
	// -race, a loaded host), as its own sequential-read test allows.
	limit := size/chunk + extraData + len(runs) - 1 + 24
	t.Logf("%s: read back: %d data requests (limit %d), %d metadata requests", typ, data, limit, meta)
	if data > limit {
		t.Errorf("%d data requests, want at most %d", data, limit)
	}
	if limit := 2*size/(4<<20) + 16; meta > limit {
		t.Errorf("%d metadata requests, want at most %d (about one per indirect block)", meta, limit)
	}
}

// TestWriteConcurrent: writers of separate files (creating, appending,
// overwriting, truncating, syncing, making and removing directories next
// to each other), readers listing and reading, and volume syncs at once
// (run with -race), with a cache small enough to evict and throttle and
// an idle-file limit that makes dirty files be written back on release;
// then the image is checked.
func TestWriteConcurrent(t *testing.T) {
	for _, c := range []struct {
		typ   string
		bs    int
		extra []string
	}{{"ext2", 1024, nil}, {"ext4", 4096, noJournal}} {
		t.Run(c.typ, func(t *testing.T) { testConcurrent(t, c.typ, c.bs, c.extra) })
	}
}

func testConcurrent(t *testing.T, typ string, bs int, extra []string) {
	w := newWenv(t, typ, bs, "32M", "", extra...)
	w.close()
	w.opts.cache = 4 << 20
	w.open()
	w.v.cfg.IdleFiles = 2
	w.mkdir("/c")
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := fmt.Sprintf("/c/w%d", g)
			f, err := w.v.Create(p, 0o644)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			var model []byte
			for i := range 40 {
				b := randBytes(uint64(g*1000+i), 1000+i*97)
				off := int64(len(model))
				if i%5 == 3 {
					off /= 2
				}
				if _, err := f.WriteAt(b, off); err != nil {
					errs <- err
					return
				}
				if end := off + int64(len(b)); end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
				copy(model[off:], b)
				if i%11 == 10 {
					n := int64(len(model)) * 2 / 3
					if err := f.Truncate(n); err != nil {
						errs <- err
						return
					}
					model = model[:n]
				}
				if i%13 == 12 {
					if err := f.Sync(); err != nil {
						errs <- err
						return
					}
				}
				if i%4 == 0 {
					q := fmt.Sprintf("/c/s%d-%d", g, i)
					if err := w.v.Mkdir(q, 0o755); err != nil {
						errs <- err
						return
					}
					if i%8 == 0 {
						if err := w.v.Rmdir(q); err != nil {
							errs <- err
							return
						}
					} else {
						mu.Lock()
						w.dirs[q] = true
						mu.Unlock()
					}
				}
			}
			mu.Lock()
			w.files[p] = model
			mu.Unlock()
		}()
	}
	stop := make(chan struct{})
	var rg sync.WaitGroup
	for range 2 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ents, err := w.v.ReadDir("/c")
				if err != nil {
					errs <- err
					return
				}
				for _, e := range ents {
					if e.Type != TypeRegular {
						continue
					}
					f, err := w.v.OpenFile("/c/" + e.Name)
					if err != nil {
						continue // truncated or being created: a race, not an error
					}
					buf := make([]byte, 4096)
					if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
						errs <- err
					}
					f.Close()
				}
			}
		}()
	}
	rg.Add(1)
	go func() {
		defer rg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := w.v.Sync(); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	w.verify()
}

// TestWriteAllocateAtWriteback: data written straight into a file's
// mapping (no allocation on the way in) is allocated by the engine's
// writeback through the mapper's Create; Sync commits the inode the
// allocation changed.
func TestWriteAllocateAtWriteback(t *testing.T) {
	for _, c := range []struct {
		typ   string
		bs    int
		extra []string
	}{{"ext2", 1024, nil}, {"ext2", 4096, nil}, {"ext4", 1024, noJournal}} {
		t.Run(fmt.Sprintf("%s-%dk", c.typ, c.bs/1024), func(t *testing.T) {
			w := newWenv(t, c.typ, c.bs, "16M", "", c.extra...)
			f, err := w.v.Create("/wb", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			data := randBytes(12, (nDirect+c.bs/4+9)*c.bs+100)
			if _, err := f.Mapping().WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			st := w.v.stats.Snapshot()
			if st.MapCalls[mpage.Write] == 0 {
				t.Fatal("writeback made no mapping calls")
			}
			f.Close()
			w.files["/wb"] = data
			w.verify()
		})
	}
}
