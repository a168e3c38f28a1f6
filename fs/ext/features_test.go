package ext

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

func TestEmptyVolume(t *testing.T) {
	for _, typ := range []string{"ext2", "ext3", "ext4"} {
		t.Run(typ, func(t *testing.T) {
			img := mkfs(t, typ, 4096, "", "8M")
			v := mustOpenImage(t, img, openOpts{})
			ents, err := v.ReadDir("/")
			if err != nil || len(ents) != 1 || ents[0].Name != "lost+found" || ents[0].Type != TypeDir {
				t.Fatalf("readdir /: %v, %v", ents, err)
			}
			ents, err = v.ReadDir("/lost+found/")
			if err != nil || len(ents) != 0 {
				t.Fatalf("readdir /lost+found: %v, %v", ents, err)
			}
			fi, err := v.Stat("/")
			if err != nil || !fi.IsDir() || fi.Ino != rootIno || fi.Links != 3 {
				t.Fatalf("stat /: %+v, %v", fi, err)
			}
		})
	}
}

// TestTripleIndirect reads a sparse file reaching into the triple-indirect
// range (1 KiB blocks: past 12+256+65536 blocks, ~64 MiB) on volumes that
// map with block pointers.
func TestTripleIndirect(t *testing.T) {
	const bs = 1024
	const ptrs = bs / 4
	tripleStart := int64(nDirect+ptrs+ptrs*ptrs) * bs
	chunks := map[int64][]byte{
		0:                        randBytes(1, 5000),
		int64(nDirect) * bs:      randBytes(2, 3000),  // single indirect
		int64(nDirect+ptrs) * bs: randBytes(3, 70000), // double
		tripleStart - 1500:       randBytes(4, 3000),  // straddles into triple
		tripleStart + 5<<20:      randBytes(5, 9000),  // deep in triple
	}
	size := tripleStart + 5<<20 + 20000
	src := t.TempDir()
	writeSparse(t, filepath.Join(src, "huge"), size, chunks)
	for _, c := range []struct {
		typ   string
		extra []string
	}{{"ext2", nil}, {"ext3", nil}, {"ext4", []string{"-O", "^extent,^64bit,^flex_bg"}}} {
		t.Run(c.typ, func(t *testing.T) {
			img := mkfs(t, c.typ, bs, src, "16M", c.extra...)
			if st, _ := os.Stat(img); st.Size() > 16<<20 {
				t.Fatalf("image of %d bytes", st.Size())
			}
			v := mustOpenImage(t, img, openOpts{})
			f, err := v.OpenFile("/huge")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Size() != size {
				t.Fatalf("size %d, want %d", f.Size(), size)
			}
			// Read it all, in 1 MiB pieces, comparing with what was written.
			want := make([]byte, 1<<20)
			got := make([]byte, 1<<20)
			for off := int64(0); off < size; off += int64(len(got)) {
				n := int(min(int64(len(got)), size-off))
				clear(want)
				for at, b := range chunks {
					lo, hi := max(at, off), min(at+int64(len(b)), off+int64(n))
					if lo < hi {
						copy(want[lo-off:hi-off], b[lo-at:hi-at])
					}
				}
				k, err := f.ReadAt(got[:n], off)
				if k != n || (err != nil && err != io.EOF) {
					t.Fatalf("read at %d: %d, %v", off, k, err)
				}
				if i := mismatch(got[:n], want[:n]); i >= 0 {
					t.Fatalf("read at %d: byte %d differs", off, off+int64(i))
				}
			}
			st := v.stats.Snapshot()
			t.Logf("read %d MiB: %d read Bios of %d pages, %d hole pages, %d map calls, confused %v",
				size>>20, st.Bios[mpage.Read], st.BioPages[mpage.Read], st.HolePages, st.MapCalls[mpage.Read], st.Confused[mpage.Read])
			if st.HolePages < uint64(size/mpage.PageSize)*9/10 {
				t.Errorf("only %d hole pages: holes were read from the device", st.HolePages)
			}
		})
	}
}

// TestHtreeDirectory reads a directory of thousands of entries that e2fsck
// -D has indexed: the htree blocks (with their own checksum tails on
// metadata_csum volumes) must be recognised and skipped, every name found.
func TestHtreeDirectory(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	const n = 3000
	src := t.TempDir()
	for i := range n {
		writeFile(t, filepath.Join(src, "big", fmt.Sprintf("entry-%05d-with-a-longer-name", i)), []byte(fmt.Sprint(i)))
	}
	for _, typ := range []string{"ext3", "ext4"} {
		for _, bs := range []int{1024, 4096} {
			t.Run(fmt.Sprintf("%s-%d", typ, bs), func(t *testing.T) {
				img := mkfs(t, typ, bs, src, "32M")
				// -D rebuilds (and indexes) directories; exit status 1
				// means "changed", which is what we asked for.
				if out, err := testenv.Output("e2fsck", "-fyD", img); err != nil && !strings.Contains(err.Error(), "exit status 1") {
					t.Fatalf("e2fsck -D: %v\n%s", err, out)
				}
				v := mustOpenImage(t, img, openOpts{})
				fi, err := v.Stat("/big")
				if err != nil {
					t.Fatal(err)
				}
				if fi.Flags&FlagIndex == 0 {
					t.Fatalf("/big is not indexed (flags %#x)", fi.Flags)
				}
				ents, err := v.ReadDir("/big")
				if err != nil {
					t.Fatal(err)
				}
				if len(ents) != n {
					t.Fatalf("%d entries, want %d", len(ents), n)
				}
				for i, e := range ents {
					if want := fmt.Sprintf("entry-%05d-with-a-longer-name", i); e.Name != want || e.Type != TypeRegular {
						t.Fatalf("entry %d: %+v, want %s", i, e, want)
					}
				}
				for _, i := range []int{0, 1, n / 2, n - 1} {
					f, err := v.OpenFile(fmt.Sprintf("/big/entry-%05d-with-a-longer-name", i))
					if err != nil {
						t.Fatal(err)
					}
					b := make([]byte, 16)
					k, _ := f.ReadAt(b, 0)
					if string(b[:k]) != fmt.Sprint(i) {
						t.Errorf("entry %d holds %q", i, b[:k])
					}
					f.Close()
				}
			})
		}
	}
}

// TestInlineData reads files and directories stored in their inodes.
func TestInlineData(t *testing.T) {
	src := t.TempDir()
	files := map[string][]byte{
		"empty": {}, "one": {'x'}, "fifty": randBytes(1, 50), "sixty": randBytes(2, 60),
		"hundred": randBytes(3, 100), "big": randBytes(4, 5000),
		"dir/a": []byte("in an inline directory\n"), "dir/b": randBytes(5, 30),
	}
	for name, b := range files {
		writeFile(t, filepath.Join(src, name), b)
	}
	symlink(t, strings.Repeat("../dir/", 10)+"a", filepath.Join(src, "longlink")) // 70 bytes: inline, not fast
	fixTimes(src)
	for _, bs := range []int{1024, 4096} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			img := mkfs(t, "ext4", bs, src, "8M", "-O", "inline_data", "-I", "256")
			v := mustOpenImage(t, img, openOpts{})
			verifyTree(t, v, src)
			inline := 0
			for _, p := range []string{"/one", "/fifty", "/sixty", "/hundred", "/dir", "/longlink"} {
				fi, err := v.Lstat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Flags&FlagInlineData != 0 {
					inline++
				}
			}
			if inline < 5 {
				t.Errorf("only %d of 6 small files are inline: the test does not test inline data", inline)
			}
			st := v.stats.Snapshot()
			if st.Confused[mpage.Read][mpage.ReasonMapperUptodate] == 0 {
				t.Errorf("no page was filled by the mapper: %+v", st.Confused[mpage.Read])
			}
		})
	}
}

// TestUnwrittenExtents reads a range debugfs fallocated (unwritten
// extents) after filling its device blocks with junk: it must read as
// zeroes.
func TestUnwrittenExtents(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	const bs = 1024
	src := t.TempDir()
	head := randBytes(7, 3000)
	writeSparse(t, filepath.Join(src, "f"), 1<<20, map[int64][]byte{0: head})
	img := mkfs(t, "ext4", bs, src, "8M")
	testenv.Run(t, "debugfs", "-w", "-R", "fallocate /f 100 199", img)
	var uninit []seg
	for _, s := range debugfsSegments(t, img, "/f") {
		if s.uninit {
			uninit = append(uninit, s)
		}
	}
	if len(uninit) == 0 {
		t.Fatal("debugfs made no unwritten extent")
	}
	fd, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range uninit {
		if _, err := fd.WriteAt(bytes.Repeat([]byte{0xEE}, int(s.n)*bs), int64(s.pstart)*bs); err != nil {
			t.Fatal(err)
		}
	}
	fd.Close()
	v := mustOpenImage(t, img, openOpts{})
	f, err := v.OpenFile("/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 1<<20)
	if n, err := f.ReadAt(got, 0); n != len(got) {
		t.Fatal(n, err)
	}
	want := make([]byte, 1<<20)
	copy(want, head)
	if i := mismatch(got, want); i >= 0 {
		t.Fatalf("byte %d is %#x", i, got[i])
	}
}

// TestExtentDepth checks the fragmented file really has a two-level tree
// (so interior nodes and their checksums were exercised by the tree tests).
func TestExtentDepth(t *testing.T) {
	src := t.TempDir()
	buildTree(t, src, treeOpts{blockSize: 1024})
	img := mkfs(t, "ext4", 1024, src, "24M")
	v := mustOpenImage(t, img, openOpts{})
	ino, err := v.Lookup("/sparse/fragmented")
	if err != nil {
		t.Fatal(err)
	}
	in, err := v.readInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	if d := binary.LittleEndian.Uint16(in.Block[6:]); d < 2 {
		t.Fatalf("extent tree depth %d, want >= 2", d)
	}
	checkFile(t, v, "/sparse/fragmented", filepath.Join(src, "sparse", "fragmented"))
}

// TestSharedMapping: opens of one inode share the data mapping and its
// pages, also after the last close (the idle cache), until evicted.
func TestSharedMapping(t *testing.T) {
	src := t.TempDir()
	data := randBytes(9, 100000)
	writeFile(t, filepath.Join(src, "f"), data)
	writeFile(t, filepath.Join(src, "g"), data)
	img := mkfs(t, "ext4", 4096, src, "8M")
	v := mustOpenImage(t, img, openOpts{})
	a, err := v.OpenFile("/f")
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.OpenFile("/f")
	if err != nil {
		t.Fatal(err)
	}
	if a.Mapping() != b.Mapping() {
		t.Fatal("two opens of one inode have different mappings")
	}
	buf := make([]byte, len(data))
	if _, err := a.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	misses := v.stats.CacheMisses.Load()
	if _, err := b.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatal(err)
	}
	if v.stats.CacheMisses.Load() != misses {
		t.Error("the second open read the pages again")
	}
	m := a.Mapping()
	a.Close()
	if err := a.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second close: %v", err)
	}
	if _, err := a.ReadAt(buf, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	b.Close()
	c, err := v.OpenFile("/f")
	if err != nil {
		t.Fatal(err)
	}
	if c.Mapping() != m || c.Mapping().Pages() == 0 {
		t.Error("reopen did not find the idle mapping with its pages")
	}
	g, err := v.OpenFile("/g")
	if err != nil {
		t.Fatal(err)
	}
	if g.Mapping() == c.Mapping() {
		t.Error("two inodes share a mapping")
	}
	c.Close()
	g.Close()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Stat("/f"); !errors.Is(err, ErrClosed) {
		t.Errorf("stat after close: %v", err)
	}
}

// TestNativeRing runs one tree case on the native io_uring backend.
func TestNativeRing(t *testing.T) {
	r, err := uring.Open(uring.BackendNative, uring.Options{Entries: 8})
	if err != nil {
		testenv.Unavailable(t, "native io_uring: %v", err)
	}
	r.Close()
	for _, c := range []struct {
		typ string
		bs  int
	}{{"ext2", 1024}, {"ext4", 4096}} {
		t.Run(c.typ, func(t *testing.T) {
			src := t.TempDir()
			buildTree(t, src, treeOpts{blockSize: c.bs, manyFiles: 100})
			img := mkfs(t, c.typ, c.bs, src, "24M")
			v := mustOpenImage(t, img, openOpts{backend: uring.BackendNative})
			if b := v.ring.Features().Backend; b != "native" {
				t.Fatalf("backend %q", b)
			}
			verifyTree(t, v, src)
			rs := v.ring.Stats()
			t.Logf("native ring: %d SQEs, %d enters, %d fixed-buffer I/Os", rs.SQEs, rs.Enters, rs.FixedBufIO)
		})
	}
}

// TestBoundaryOrder is the seeds' ext2 ordering on a real image with 1 KiB
// blocks: reading the first 16 blocks of a file sends data blocks 0..11,
// then reads the indirect block, then data blocks 12..15 — not the
// indirect block first.
func TestBoundaryOrder(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	const bs = 1024
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "a-filler"), randBytes(1, 1<<20))
	data := randBytes(2, 64<<10)
	writeFile(t, filepath.Join(src, "b-target"), data)
	img := mkfs(t, "ext2", bs, src, "8M")

	// Preconditions, from debugfs: data 0..11 contiguous, the indirect
	// block, data 12..15 contiguous.
	out := testenv.Run(t, "debugfs", "-R", "stat /b-target", img)
	segs := debugfsSegments(t, img, "/b-target")
	if len(segs) < 2 || segs[0].lstart != 0 || segs[0].n != 12 || segs[1].lstart != 12 || segs[1].n < 4 {
		t.Fatalf("unexpected layout: %v\n%s", segs, out)
	}
	var ind uint64
	if _, err := fmt.Sscanf(out[strings.Index(out, "(IND):"):], "(IND):%d", &ind); err != nil {
		t.Fatalf("no indirect block: %v\n%s", err, out)
	}

	var rec *mpagetest.Recorder
	v := mustOpenImage(t, img, openOpts{ringFor: recorderRing(t, &rec)})
	f, err := v.OpenFile("/b-target")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v.meta.BlockCached(ind) {
		t.Fatalf("indirect block %d already cached before the read", ind)
	}
	rec.Drain()
	rec.Reset()
	if _, err := f.Mapping().ReadPages(0, 16*bs/mpage.PageSize, 0); err != nil {
		t.Fatal(err)
	}
	rec.Drain()
	covers := func(r mpagetest.Record, blk uint64) bool {
		return r.Offset <= int64(blk*bs) && int64(blk*bs) < r.Offset+int64(r.Len)
	}
	var order []string
	for _, r := range rec.Records() {
		switch {
		case r.Op != uring.OpReadv:
			order = append(order, r.String())
		case r.Offset == int64(segs[0].pstart*bs) && r.Len == 12*bs:
			order = append(order, "data 0..11")
		case covers(r, ind):
			order = append(order, "indirect")
		case r.Offset == int64(segs[1].pstart*bs) && r.Len == 4*bs:
			order = append(order, "data 12..15")
		default:
			order = append(order, "other "+r.String())
		}
	}
	if want := []string{"data 0..11", "indirect", "data 12..15"}; strings.Join(order, "; ") != strings.Join(want, "; ") {
		t.Fatalf("I/O order %q, want %q", order, want)
	}
	got := make([]byte, 16*bs)
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data[:16*bs]) {
		t.Fatalf("data differs: %v", err)
	}
}

// TestSequentialReadSQEs reads a large contiguous file front to back and
// counts the ring's requests: multi-block mappings and readahead must turn
// it into about one request per MiB (Bios cap at 256 pages), plus the
// indirect blocks' own Bios on ext2 and a few metadata reads.
func TestSequentialReadSQEs(t *testing.T) {
	const size = 32 << 20
	src := t.TempDir()
	data := randBytes(11, size)
	writeFile(t, filepath.Join(src, "big"), data)
	for _, c := range []struct {
		typ   string
		extra int // requests allowed past one per MiB
	}{
		{"ext4", 8},
		// One indirect block per 4 MiB with 4 KiB blocks: the Bio ends at
		// each Boundary and the indirect block is read on its own.
		{"ext2", 8 + 2*size/(4<<20)},
	} {
		t.Run(c.typ, func(t *testing.T) {
			img := mkfs(t, c.typ, 4096, src, "48M")
			v := mustOpenImage(t, img, openOpts{cache: 64 << 20})
			f, err := v.OpenFile("/big")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			before := v.ring.Stats().Submitted
			buf := make([]byte, 1<<20)
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					t.Fatalf("data differs in the MiB at %d", off)
				}
			}
			reqs := v.ring.Stats().Submitted - before
			st := v.stats.Snapshot()
			t.Logf("%s: %d requests for %d MiB; %d read Bios, %d pages, confused %v", c.typ, reqs, size>>20,
				st.Bios[mpage.Read], st.BioPages[mpage.Read], st.Confused[mpage.Read])
			if limit := uint64(size>>20 + c.extra); reqs > limit {
				t.Errorf("%d requests, want at most %d", reqs, limit)
			}
			if n := st.ConfusedTotal(mpage.Read); n != 0 {
				t.Errorf("%d confused pages on a contiguous file", n)
			}
		})
	}
}

// TestConcurrentReaders: many goroutines open, read, list and close files
// of one volume at once, with a small idle cache so nodes are evicted and
// rebuilt under them (run with -race).
func TestConcurrentReaders(t *testing.T) {
	src := t.TempDir()
	const nfiles = 40
	want := map[string][]byte{}
	for i := range nfiles {
		p := fmt.Sprintf("/d%d/f%02d", i%4, i)
		want[p] = randBytes(uint64(i), 1000+i*7919)
		writeFile(t, filepath.Join(src, p), want[p])
	}
	img := mkfs(t, "ext4", 1024, src, "16M")
	v := mustOpenImage(t, img, openOpts{cache: 4 << 20})
	v.cfg.IdleFiles = 3
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				p := fmt.Sprintf("/d%d/f%02d", (g+i)%4, ((g+i)%4)+4*((g*7+i)%(nfiles/4)))
				f, err := v.OpenFile(p)
				if err != nil {
					errs <- err
					return
				}
				buf := make([]byte, f.Size())
				if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
					errs <- err
				} else if !bytes.Equal(buf, want[p]) {
					errs <- fmt.Errorf("%s: data differs", p)
				}
				f.Close()
				if _, err := v.ReadDir(fmt.Sprintf("/d%d", i%4)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
