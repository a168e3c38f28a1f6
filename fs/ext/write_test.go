package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// The write side on real images: each case builds an image with mke2fs
// (some pre-populated with -d), changes it through the engine, and
// verify judges the result with the engine itself, e2fsck -fn, debugfs
// and the kernel's ext2/ext4 driver.

// scenario is one sequence of changes on a volume of block size bs.
type scenario struct {
	name string
	src  func(t *testing.T, dir string, bs int) // files for mke2fs -d
	size string                                 // image size; default 16M
	run  func(w *wenv, bs int)
}

// manyFiles is how many files the "many files" scenario puts in one
// directory.
const manyFiles = 2000

var scenarios = []scenario{
	{name: "small files", run: func(w *wenv, bs int) {
		w.put("/empty", nil)
		w.put("/tiny", []byte("hello, world\n"))
		w.put("/one-block", randBytes(1, bs))
		w.put("/block-plus-one", randBytes(2, bs+1))
		w.put("/page-plus", randBytes(3, 4096+100))
		w.put("/name with spaces and ünïcødé", randBytes(4, 777))
		w.put("/"+strings.Repeat("n", 255), randBytes(5, 10))
		w.verify()
		// Replacing truncates.
		w.put("/page-plus", []byte("short now"))
		w.verify()
	}},
	{name: "overwrite middle", src: func(t *testing.T, dir string, bs int) {
		writeFile(t, filepath.Join(dir, "f"), randBytes(10, 50*1024+17))
		writeFile(t, filepath.Join(dir, "g"), randBytes(11, (nDirect+bs/4+30)*bs))
	}, run: func(w *wenv, bs int) {
		w.writeAt("/f", 20000, randBytes(12, 5000))
		w.writeAt("/f", 4095, []byte("xy")) // across a page boundary
		w.writeAt("/f", 0, []byte("start"))
		w.writeAt("/g", int64(nDirect*bs-3), randBytes(13, 10)) // across the direct/indirect edge
		w.writeAt("/g", int64((nDirect+bs/4)*bs-100), randBytes(14, 300))
		w.verify()
	}},
	{name: "extend into double indirect", src: func(t *testing.T, dir string, bs int) {
		writeFile(t, filepath.Join(dir, "grow"), randBytes(20, 11*bs+5))
	}, run: func(w *wenv, bs int) {
		ptrs := bs / 4
		target := (nDirect+ptrs+40)*bs + 123
		chunk := randBytes(21, target)
		for off := 0; off < target; off += 7777 {
			w.writeAt("/new", int64(off), chunk[off:min(off+7777, target)])
		}
		// Appending to a file mke2fs wrote.
		w.writeAt("/grow", 11*int64(bs)+5, randBytes(22, (nDirect+ptrs+3)*bs))
		w.verify()
	}},
	{name: "truncate", src: func(t *testing.T, dir string, bs int) {
		writeFile(t, filepath.Join(dir, "t"), randBytes(30, (nDirect+bs/4+30)*bs+7))
	}, run: func(w *wenv, bs int) {
		ptrs := bs / 4
		w.truncate("/t", int64((nDirect+10)*bs+100)) // inside the single-indirect range
		w.verify()
		w.truncate("/t", int64(5*bs+1)) // inside the direct blocks: the indirect block goes
		w.truncate("/t", 2<<20)         // grow: a hole
		w.writeAt("/t", 1<<20, []byte("in the middle of the hole"))
		w.verify()
		w.truncate("/t", 0)
		w.writeAt("/t", 0, randBytes(31, (nDirect+ptrs+5)*bs))
		w.truncate("/t", int64((nDirect+ptrs+2)*bs)-1) // inside the double-indirect range
		w.verify()
	}},
	{name: "unlink", src: func(t *testing.T, dir string, bs int) {
		writeFile(t, filepath.Join(dir, "u1"), randBytes(40, (nDirect+bs/4+20)*bs))
		writeFile(t, filepath.Join(dir, "u2"), randBytes(41, 100))
		writeFile(t, filepath.Join(dir, "keep"), randBytes(42, 3000))
		writeFile(t, filepath.Join(dir, "hard1"), randBytes(45, 2*bs))
		if err := os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "hard2")); err != nil {
			t.Fatal(err)
		}
		symlink(t, "keep", filepath.Join(dir, "fast-link"))
		symlink(t, strings.Repeat("long/", 30)+"target", filepath.Join(dir, "slow-link"))
		if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
			t.Fatal(err)
		}
	}, run: func(w *wenv, bs int) {
		b0, i0 := freeCounts(w.t, w.v)
		w.put("/u3", randBytes(43, 40*bs))
		w.unlink("/u3")
		if b, i := freeCounts(w.t, w.v); b != b0 || i != i0 {
			w.t.Fatalf("after create and unlink: %d free blocks, %d free inodes; before %d, %d", b, i, b0, i0)
		}
		w.unlink("/u1")
		w.unlink("/u2")
		// One of two hard links: the other keeps the data.
		w.unlink("/hard1")
		if fi, err := w.v.Stat("/hard2"); err != nil || fi.Links != 1 {
			w.t.Fatalf("/hard2 after unlinking /hard1: %+v, %v", fi, err)
		}
		for _, p := range []string{"/fast-link", "/slow-link", "/fifo"} {
			if err := w.v.Unlink(p); err != nil {
				w.t.Fatalf("unlink %s: %v", p, err)
			}
			w.gone[p] = true
		}
		w.verify()
		w.unlink("/hard2")
		// An open file keeps its data until closed.
		w.put("/u4", randBytes(44, 5*bs))
		f, err := w.v.OpenFile("/u4")
		if err != nil {
			w.t.Fatal(err)
		}
		w.unlink("/u4")
		buf := make([]byte, 5*bs)
		if _, err := f.ReadAt(buf, 0); err != nil || !equalBytes(buf, randBytes(44, 5*bs)) {
			w.t.Fatalf("reading an unlinked open file: %v", err)
		}
		f.Close()
		w.verify()
	}},
	{name: "mkdir rmdir", run: func(w *wenv, bs int) {
		w.mkdir("/a")
		w.mkdir("/a/b")
		w.mkdir("/a/b/c")
		w.put("/a/b/c/f", randBytes(50, 3*bs))
		w.mkdir("/z")
		if err := w.v.Rmdir("/a/b"); !errors.Is(err, ErrNotEmpty) {
			w.t.Fatalf("rmdir of a non-empty directory: %v", err)
		}
		if err := w.v.Mkdir("/a", 0o755); !errors.Is(err, ErrExist) {
			w.t.Fatalf("mkdir of an existing name: %v", err)
		}
		w.verify()
		for _, c := range []struct {
			path  string
			links uint32
		}{{"/", 5}, {"/a", 3}, {"/a/b", 3}, {"/a/b/c", 2}} {
			fi, err := w.v.Stat(c.path)
			if err != nil || fi.Links != c.links {
				w.t.Fatalf("%s: %d links, %v; want %d", c.path, fi.Links, err, c.links)
			}
		}
		w.unlink("/a/b/c/f")
		w.rmdir("/a/b/c")
		w.rmdir("/a/b")
		w.rmdir("/z")
		w.verify()
	}},
	{name: "block reuse", run: func(w *wenv, bs int) {
		// Indirect blocks allocated and freed before any sync are dirty
		// in the metadata cache when new file data lands on them: their
		// stale pointers must never be written over that data.
		ptrs := bs / 4
		for round := range 3 {
			w.put("/ind", randBytes(uint64(90+round), (nDirect+ptrs+8)*bs))
			w.truncate("/ind", 0)
			w.unlink("/ind")
			// Shift the next file by a block, so its data lands where
			// the freed indirect blocks were.
			w.put(fmt.Sprintf("/shift%d", round), randBytes(uint64(93+round), bs))
			w.put(fmt.Sprintf("/data%d", round), randBytes(uint64(95+round), (nDirect+ptrs+8)*bs))
		}
		w.verify()
	}},
	{name: "rename", src: renameSource, run: renameScenario},
	{name: "many files", size: "32M", run: func(w *wenv, bs int) {
		w.mkdir("/many")
		for i := range manyFiles {
			w.put(fmt.Sprintf("/many/file-%05d-%s", i, strings.Repeat("x", i%40)), randBytes(uint64(60+i), i%300))
		}
		for i := 0; i < manyFiles; i += 3 {
			w.unlink(fmt.Sprintf("/many/file-%05d-%s", i, strings.Repeat("x", i%40)))
		}
		// Names reuse the freed records.
		for i := range 200 {
			w.put(fmt.Sprintf("/many/again-%d", i), randBytes(uint64(5000+i), 50))
		}
		w.verify()
	}},
}

// noJournal are the mke2fs arguments of an ext4 the writer handles: the
// default ext4 (extents, flex_bg, 64bit, metadata_csum, huge_file,
// dir_nlink, extra_isize) without its journal.
var noJournal = []string{"-O", "^has_journal"}

// TestWriteScenarios runs every scenario on ext2 with 1, 2 and 4 KiB
// blocks (files mapped by block pointers) and on ext4 without a journal
// with 1 and 4 KiB blocks (files mapped by extents).
func TestWriteScenarios(t *testing.T) {
	for _, fsys := range []struct {
		typ   string
		bs    int
		extra []string
	}{
		{"ext2", 1024, nil}, {"ext2", 2048, nil}, {"ext2", 4096, nil},
		{"ext4", 1024, noJournal}, {"ext4", 4096, noJournal},
	} {
		bs := fsys.bs
		for _, sc := range scenarios {
			t.Run(fmt.Sprintf("%s/%s/%dk", sc.name, fsys.typ, bs/1024), func(t *testing.T) {
				t.Parallel()
				src := ""
				if sc.src != nil {
					src = t.TempDir()
					sc.src(t, src, bs)
				}
				size := sc.size
				if size == "" {
					size = "16M"
				}
				w := newWenv(t, fsys.typ, bs, size, src, fsys.extra...)
				sc.run(w, bs)
			})
		}
	}
}

func equalBytes(a, b []byte) bool { return string(a) == string(b) }

// TestWriteFeatures runs a mixed scenario on volumes with the other
// features the writer handles: uninit_bg (lazy bitmaps and inode tables),
// 128-byte inodes, revision 0, meta_bg, no filetype, and an ext4 without
// journal and extents (metadata_csum, flex_bg, huge_file, dir_nlink).
func TestWriteFeatures(t *testing.T) {
	for _, c := range []struct {
		name, typ string
		bs        int
		extra     []string
	}{
		{"uninit_bg", "ext2", 1024, []string{"-O", "uninit_bg"}},
		{"inode128", "ext2", 2048, []string{"-I", "128"}},
		{"rev0", "ext2", 1024, []string{"-r", "0"}},
		{"meta_bg", "ext2", 1024, []string{"-O", "meta_bg,^resize_inode"}},
		{"no filetype", "ext2", 4096, []string{"-O", "^filetype"}},
		{"ext4 metadata_csum", "ext4", 1024, []string{"-O", "^has_journal,^extent,^64bit"}},
		{"ext4 metadata_csum 4k", "ext4", 4096, []string{"-O", "^has_journal,^extent,^64bit"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			writeFile(t, filepath.Join(src, "old", "file"), randBytes(70, 20*c.bs+3))
			writeFile(t, filepath.Join(src, "old", "gone"), randBytes(71, 3*c.bs))
			w := newWenv(t, c.typ, c.bs, "24M", src, c.extra...)
			ptrs := c.bs / 4
			w.mkdir("/d")
			w.mkdir("/d/e")
			w.put("/d/e/big", randBytes(72, (nDirect+ptrs+10)*c.bs+5))
			for i := range 300 {
				w.put(fmt.Sprintf("/d/f%03d", i), randBytes(uint64(100+i), i*7))
			}
			w.writeAt("/old/file", 5*int64(c.bs)+7, randBytes(73, 40*c.bs))
			w.unlink("/old/gone")
			w.verify()
			w.truncate("/d/e/big", int64(3*c.bs))
			for i := 0; i < 300; i += 2 {
				w.unlink(fmt.Sprintf("/d/f%03d", i))
			}
			w.verify()
			w.unlink("/d/e/big")
			w.rmdir("/d/e")
			w.verify()
		})
	}
}

// TestWriteReadOnly: volumes with features the writer does not handle
// open read-only, saying which; writes then fail with ErrReadOnly naming
// them. A volume opened read-only refuses writes too.
func TestWriteReadOnly(t *testing.T) {
	for _, c := range []struct {
		name, typ string
		extra     []string
		want      string
	}{
		{"fast_commit", "ext4", []string{"-O", "fast_commit"}, "fast_commit"},
		{"bigalloc", "ext4", []string{"-O", "^has_journal,bigalloc", "-C", "16384"}, "bigalloc"},
		{"quota", "ext4", []string{"-O", "^has_journal,quota"}, "quota"},
		{"inline_data", "ext4", []string{"-O", "^has_journal,^extent,^64bit,inline_data"}, "inline_data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.typ, 4096, "", "32M", c.extra...)
			v := mustOpenImage(t, img, openOpts{rw: true})
			ro, why := v.ReadOnly()
			if !ro || !strings.Contains(why, c.want) {
				t.Fatalf("ReadOnly() = %v, %q; want read-only naming %s", ro, why, c.want)
			}
			for _, err := range []error{
				func() error { _, err := v.Create("/x", 0o644); return err }(),
				v.Mkdir("/d", 0o755),
				v.Unlink("/lost+found"),
				v.Rmdir("/lost+found"),
			} {
				if !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("write on a read-only volume: %v", err)
				}
			}
			if err := v.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("opened read-only", func(t *testing.T) {
		img := mkfs(t, "ext2", 1024, "", "8M")
		v := mustOpenImage(t, img, openOpts{})
		if _, err := v.Create("/x", 0o644); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("create: %v", err)
		}
		f, err := v.OpenFile("/lost+found")
		if err == nil {
			f.Close()
			t.Fatal("opened a directory as a file")
		}
	})
}

// TestWriteBadNames: names the writer must refuse, and errors for names
// in the wrong state.
func TestWriteBadNames(t *testing.T) {
	img := mkfs(t, "ext2", 1024, "", "8M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	if err := v.Mkdir("/dir", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := v.Create("/file", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, c := range []struct {
		op   string
		path string
		want error
	}{
		{"create", "", ErrInvalidPath},
		{"create", "relative", ErrInvalidPath},
		{"create", "/", ErrIsDir},
		{"create", "/a\x00b", ErrInvalidPath},
		{"create", "/.", ErrInvalidPath},
		{"create", "/..", ErrInvalidPath},
		{"create", "/dir/../file", ErrInvalidPath},
		{"create", "/a//b", ErrInvalidPath},
		{"create", "/" + strings.Repeat("x", 256), ErrInvalidPath},
		{"create", "/dir/", ErrIsDir},
		{"create", "/dir", ErrIsDir},
		{"create", "/missing/file", ErrNotFound},
		{"create", "/file/sub", ErrNotDir},
		{"mkdir", "/file", ErrExist},
		{"mkdir", "/", ErrInvalidPath},
		{"mkdir", "/missing/d", ErrNotFound},
		{"mkdir", "/" + strings.Repeat("y", 256), ErrInvalidPath},
		{"unlink", "/dir", ErrIsDir},
		{"unlink", "/nothing", ErrNotFound},
		{"unlink", "/", ErrInvalidPath},
		{"rmdir", "/file", ErrNotDir},
		{"rmdir", "/", ErrInvalidPath},
		{"rmdir", "/lost+found/..", ErrInvalidPath},
	} {
		var err error
		switch c.op {
		case "create":
			var f *File
			if f, err = v.Create(c.path, 0o644); err == nil {
				f.Close()
			}
		case "mkdir":
			err = v.Mkdir(c.path, 0o755)
		case "unlink":
			err = v.Unlink(c.path)
		case "rmdir":
			err = v.Rmdir(c.path)
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s %q: %v, want %v", c.op, c.path, err, c.want)
		}
	}
	if _, err := v.OpenWrite("/file", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644); !errors.Is(err, ErrExist) {
		t.Errorf("O_EXCL on an existing file: %v", err)
	}
	rf, err := v.OpenFile("/file")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rf.WriteAt([]byte("x"), 0); err == nil {
		t.Error("write through a file opened for reading")
	}
	rf.Close()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
}

// TestWriteENOSPC fills a small volume: the write that runs out of space
// fails with an error wrapping ENOSPC after writing what fit, the volume
// stays consistent, files written before keep their bytes, and freeing
// space makes writing possible again.
func TestWriteENOSPC(t *testing.T) {
	for _, bs := range []int{1024, 4096} {
		t.Run(fmt.Sprintf("%dk", bs/1024), func(t *testing.T) {
			w := newWenv(t, "ext2", bs, "2M", "")
			var full error
			var i int
			for i = 0; full == nil; i++ {
				p := fmt.Sprintf("/f%03d", i)
				data := randBytes(uint64(80+i), 100*1024+13)
				f, err := w.v.Create(p, 0o644)
				if err != nil {
					full = err
					break
				}
				n, err := f.WriteAt(data, 0)
				if err == nil {
					err = f.Sync()
				}
				f.Close()
				w.files[p] = data[:n]
				full = err
			}
			if !errors.Is(full, syscall.ENOSPC) || !errors.Is(full, ErrNoSpace) {
				t.Fatalf("after %d files: %v, want ENOSPC", i, full)
			}
			t.Logf("full after %d files: %v", i, full)
			if err := w.v.Sync(); err != nil {
				t.Fatalf("sync of a full volume: %v", err)
			}
			w.verify()
			w.unlink("/f000")
			w.put("/after", randBytes(99, 50*1024))
			w.verify()
		})
	}
}

// TestWriteHtreeDirectory: a directory e2fsck -D indexed is edited as the
// linear directory it also is, losing its index; on a metadata_csum
// volume its index blocks get leaf checksum tails first.
func TestWriteHtreeDirectory(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	const n = 1500
	src := t.TempDir()
	for i := range n {
		writeFile(t, filepath.Join(src, "big", fmt.Sprintf("entry-%05d-with-a-longer-name", i)), []byte(fmt.Sprint(i)))
	}
	index := func(t *testing.T, img string) {
		if out, err := testenv.Output("e2fsck", "-fyD", img); err != nil && !strings.Contains(err.Error(), "exit status 1") {
			t.Fatalf("e2fsck -D: %v\n%s", err, out)
		}
	}
	for _, c := range []struct {
		name, typ string
		bs        int
		extra     []string
	}{
		{"ext2", "ext2", 1024, nil},
		{"ext4 metadata_csum 1k", "ext4", 1024, noJournal},
		{"ext4 metadata_csum 4k", "ext4", 4096, noJournal},
	} {
		t.Run(c.name, func(t *testing.T) {
			testHtree(t, src, n, c.typ, c.bs, c.extra, index)
		})
	}
}

// testHtree indexes /big with e2fsck -D, then adds, removes, renames and
// makes a directory in it.
func testHtree(t *testing.T, src string, n int, typ string, bs int, extra []string, index func(*testing.T, string)) {
	w := newWenv(t, typ, bs, "32M", src, extra...)
	w.close()
	index(t, w.img)
	w.open()
	if fi, err := w.v.Stat("/big"); err != nil || fi.Flags&FlagIndex == 0 {
		t.Fatalf("/big not indexed: %+v, %v", fi, err)
	}
	w.put("/big/new-entry", []byte("new"))
	for i := 0; i < n; i += 7 {
		w.unlink(fmt.Sprintf("/big/entry-%05d-with-a-longer-name", i))
	}
	w.mkdir("/big/sub")
	w.rename("/big/entry-00001-with-a-longer-name", "/big/renamed")
	w.rename("/big/entry-00002-with-a-longer-name", "/moved-out")
	w.rename("/big/sub", "/sub2")
	w.rename("/sub2", "/big/sub3")
	if fi, err := w.v.Stat("/big"); err != nil || fi.Flags&FlagIndex != 0 {
		t.Fatalf("/big still indexed after a change: %+v, %v", fi, err)
	}
	w.verify()
}

// TestWriteLargeFile: a sparse file past 2 GiB on a volume without
// large_file gets the feature set; revision 0 volumes cannot have one.
func TestWriteLargeFile(t *testing.T) {
	w := newWenv(t, "ext2", 4096, "64M", "", "-O", "^large_file")
	w.kernel = false // the model would read 3 GiB of zeroes back
	f, err := w.v.Create("/large", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("far out"), 5<<29); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w.close()
	fsckClean(t, w.img)
	out := testenv.Run(t, "debugfs", "-R", "stats", w.img)
	if !strings.Contains(out, "large_file") {
		t.Fatalf("large_file not set:\n%s", out)
	}
	w.open()
	g, err := w.v.OpenFile("/large")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 9)
	if _, err := g.ReadAt(b, 5<<29-1); err != nil || string(b) != "\x00far out\x00" {
		t.Fatalf("read %q, %v", b, err)
	}
	g.Close()

	rev0 := mustOpenImage(t, mkfs(t, "ext2", 4096, "", "16M", "-r", "0"), openOpts{rw: true})
	h, err := rev0.Create("/f", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Truncate(3 << 30); !errors.Is(err, ErrTooLarge) || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("3 GiB on a revision 0 volume: %v", err)
	}
}

// TestWriteUnlinkXattr: removing a file whose extended attributes live in
// a block of their own frees that block (or drops a reference to it).
func TestWriteUnlinkXattr(t *testing.T) {
	src := t.TempDir()
	for _, name := range []string{"a", "b"} {
		p := filepath.Join(src, name)
		writeFile(t, p, []byte(name))
		if err := syscall.Setxattr(p, "user.note", []byte(strings.Repeat("v", 300)), 0); err != nil {
			t.Skipf("no user xattrs on the test's temporary file system: %v", err)
		}
	}
	// 128-byte inodes: the attributes cannot live in the inode.
	w := newWenv(t, "ext2", 1024, "8M", src, "-I", "128")
	b0, _ := freeCounts(t, w.v)
	w.unlink("/a")
	w.unlink("/b")
	if b, _ := freeCounts(t, w.v); b <= b0 {
		t.Fatalf("%d free blocks after unlinking, %d before: the xattr blocks were not freed", b, b0)
	}
	w.verify()
}

// TestWriteOrphanAtClose: a file unlinked while open is freed when the
// volume closes with it still open.
func TestWriteOrphanAtClose(t *testing.T) {
	w := newWenv(t, "ext2", 1024, "8M", "")
	w.put("/o", randBytes(1, 20000))
	f, err := w.v.OpenFile("/o")
	if err != nil {
		t.Fatal(err)
	}
	w.unlink("/o")
	w.close()
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after the volume closed: %v", err)
	}
	f.Close()
	fsckClean(t, w.img)
}

// TestWriteExtents: extent trees as the writer rebuilds them: a file of
// one-block extents deep enough for a two-level tree is appended to,
// overwritten, shrunk (the tree gets shallower) and grown; a range
// debugfs fallocated (unwritten extents) is written into, splitting the
// extent, and truncated.
func TestWriteExtents(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	for _, bs := range []int{1024, 4096} {
		t.Run(fmt.Sprintf("%dk", bs/1024), func(t *testing.T) {
			src := t.TempDir()
			per := (bs - extentHeaderLen) / extentEntryLen
			nExt := 4*per + 20
			frag := map[int64][]byte{}
			for i := range nExt {
				frag[2*int64(i)*int64(bs)] = randBytes(uint64(1000+i), bs)
			}
			writeSparse(t, filepath.Join(src, "fragmented"), int64(2*nExt)*int64(bs), frag)
			writeSparse(t, filepath.Join(src, "prealloc"), 300*int64(bs), map[int64][]byte{0: randBytes(3, 1000)})
			img := mkfs(t, "ext4", bs, src, "32M", noJournal...)
			testenv.Run(t, "debugfs", "-w", "-R", "fallocate /prealloc 100 199", img)
			w := &wenv{t: t, typ: "ext4", img: img, opts: openOpts{rw: true}, files: map[string][]byte{},
				dirs: map[string]bool{"/": true, "/lost+found": true}, gone: map[string]bool{}, kernel: true}
			for _, name := range []string{"fragmented", "prealloc"} {
				b, err := os.ReadFile(filepath.Join(src, name))
				if err != nil {
					t.Fatal(err)
				}
				w.files["/"+name] = b
			}
			w.open()
			depth := func(p string) int {
				t.Helper()
				fi, err := w.v.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				f, err := w.v.OpenFile(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				root := f.n.inode().Block
				if fi.Flags&FlagExtents == 0 {
					t.Fatalf("%s is not extent-mapped", p)
				}
				return int(binary.LittleEndian.Uint16(root[6:]))
			}
			if d := depth("/fragmented"); d < 2 {
				t.Fatalf("depth %d before, want 2", d)
			}
			// Fill some holes (extents join their neighbours) and append.
			for i := 0; i < 40; i++ {
				w.writeAt("/fragmented", int64(2*i+1)*int64(bs), randBytes(uint64(2000+i), bs))
			}
			w.writeAt("/fragmented", int64(2*nExt)*int64(bs)+5, randBytes(5, 3*bs))
			// Into the unwritten range: the middle of it, then its start.
			w.writeAt("/prealloc", 150*int64(bs)+10, randBytes(6, 2*bs))
			w.writeAt("/prealloc", 100*int64(bs), randBytes(7, 100))
			w.verify()
			// The blocks written are initialised now (with a page's
			// neighbours when blocks are smaller than pages: whole pages
			// are written back), the rest of the range still unwritten.
			state := map[uint64]string{}
			for _, s := range debugfsSegments(t, img, "/prealloc") {
				for b := s.lstart; b < s.lstart+s.n; b++ {
					state[b] = map[bool]string{true: "unwritten", false: "written"}[s.uninit]
				}
			}
			for b, want := range map[uint64]string{100: "written", 150: "written", 152: "written", 120: "unwritten", 199: "unwritten"} {
				if state[b] != want {
					t.Fatalf("/prealloc block %d is %q, want %s", b, state[b], want)
				}
			}
			w.truncate("/fragmented", int64(per+5)*int64(bs))
			if d := depth("/fragmented"); d != 1 {
				t.Fatalf("depth %d after truncating to %d extents, want 1", d, (per+5)/2)
			}
			w.truncate("/prealloc", 160*int64(bs)-3)
			w.verify()
			w.truncate("/fragmented", 3*int64(bs))
			if d := depth("/fragmented"); d != 0 {
				t.Fatalf("depth %d after truncating to 2 extents, want 0", d)
			}
			w.writeAt("/fragmented", 100*int64(bs), []byte("grown again"))
			w.verify()
		})
	}
}
