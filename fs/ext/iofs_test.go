package ext

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"testing/fstest"
)

// iofsSource is a small tree for the io/fs view: nested directories, an
// empty file, sizes at page and block edges, hard and symbolic links.
func iofsSource(t *testing.T) (dir string, names []string) {
	dir = t.TempDir()
	for i, n := range []int{0, 1, 1023, 1024, 1025, 4095, 4096, 4097, 3*4096 + 17, 70000} {
		writeFile(t, filepath.Join(dir, "sizes", fmt.Sprintf("f%d", n)), randBytes(uint64(500+i), n))
	}
	writeFile(t, filepath.Join(dir, "a", "b", "c", "deep.txt"), []byte("deep\n"))
	writeFile(t, filepath.Join(dir, "top"), []byte("top\n"))
	if err := os.Link(filepath.Join(dir, "top"), filepath.Join(dir, "a", "top-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "empty-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, "b/c/deep.txt", filepath.Join(dir, "a", "rel-link"))
	symlink(t, "/sizes", filepath.Join(dir, "abs-dir-link"))
	fixTimes(dir)
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(dir, p); err == nil && rel != "." {
			names = append(names, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, names
}

// TestFS runs testing/fstest over the io/fs view of ext2, ext3 and ext4
// images mke2fs built from the same tree, and checks what fstest does
// not: errors, link handling, the content.
func TestFS(t *testing.T) {
	src, names := iofsSource(t)
	for _, c := range []struct {
		typ string
		bs  int
	}{{"ext2", 1024}, {"ext2", 4096}, {"ext3", 2048}, {"ext4", 1024}, {"ext4", 4096}} {
		t.Run(fmt.Sprintf("%s/%dk", c.typ, c.bs/1024), func(t *testing.T) {
			t.Parallel()
			v := mustOpenImage(t, mkfs(t, c.typ, c.bs, src, "16M"), openOpts{})
			fsys := v.FS()
			if err := fstest.TestFS(fsys, names...); err != nil {
				t.Fatal(err)
			}
			checkFSContent(t, fsys, src)
			checkFSErrors(t, fsys)
		})
	}
}

// checkFSContent compares every regular file with the source.
func checkFSContent(t *testing.T, fsys *FS, src string) {
	t.Helper()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		got, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		want, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			return err
		}
		if !equalBytes(got, want) {
			return fmt.Errorf("%s: %d bytes, want %d", p, len(got), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Links: followed by Open and Stat, described by Lstat, read by
	// ReadLink, typed by ReadDir.
	if b, err := fs.ReadFile(fsys, "a/rel-link"); err != nil || string(b) != "deep\n" {
		t.Errorf("read through a relative link: %q, %v", b, err)
	}
	if fi, err := fs.Stat(fsys, "abs-dir-link"); err != nil || !fi.IsDir() || fi.Name() != "abs-dir-link" {
		t.Errorf("stat through an absolute link: %v, %v", fi, err)
	}
	if fi, err := fs.Lstat(fsys, "abs-dir-link"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("lstat of a link: %v, %v", fi, err)
	}
	if target, err := fs.ReadLink(fsys, "abs-dir-link"); err != nil || target != "/sizes" {
		t.Errorf("readlink: %q, %v", target, err)
	}
	ents, err := fs.ReadDir(fsys, "abs-dir-link")
	if err != nil || len(ents) != 10 {
		t.Errorf("readdir through a link: %d entries, %v", len(ents), err)
	}
	ents, err = fs.ReadDir(fsys, "a")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range ents {
		types = append(types, fmt.Sprintf("%s:%v", e.Name(), e.Type()))
	}
	if want := []string{"b:d---------", "rel-link:L---------", "top-link:----------"}; !slices.Equal(types, want) {
		t.Errorf("ReadDir(a) = %q, want %q", types, want)
	}
	fi, err := fs.Stat(fsys, "a/top-link")
	if x, ok := fi.Sys().(FileInfo); err != nil || !ok || x.Links != 2 {
		t.Errorf("Sys of a hard-linked file: %#v, %v", fi.Sys(), err)
	}
}

// checkFSErrors: io/fs errors, and ReadDir(n) and Seek edges.
func checkFSErrors(t *testing.T, fsys *FS) {
	t.Helper()
	for _, c := range []struct {
		name string
		want error
	}{
		{"missing", fs.ErrNotExist},
		{"a/missing/x", fs.ErrNotExist},
		{"top/x", syscall.ENOTDIR},
		{"/top", fs.ErrInvalid},
		{"a/../top", fs.ErrInvalid},
		{"a//b", fs.ErrInvalid},
		{"a/", fs.ErrInvalid},
		{"", fs.ErrInvalid},
		{"nul\x00", fs.ErrInvalid},
	} {
		_, err := fsys.Open(c.name)
		var pe *fs.PathError
		if !errors.Is(err, c.want) || !errors.As(err, &pe) || pe.Path != c.name {
			t.Errorf("Open(%q): %v, want a *fs.PathError for it matching %v", c.name, err, c.want)
		}
		for what, err := range map[string]error{
			"Stat":     func() error { _, err := fsys.Stat(c.name); return err }(),
			"ReadDir":  func() error { _, err := fsys.ReadDir(c.name); return err }(),
			"ReadFile": func() error { _, err := fsys.ReadFile(c.name); return err }(),
		} {
			if !errors.Is(err, c.want) {
				t.Errorf("%s(%q): %v, want %v", what, c.name, err, c.want)
			}
		}
	}
	if _, err := fsys.ReadLink("top"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("ReadLink of a file: %v", err)
	}
	if _, err := fsys.ReadFile("a"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("ReadFile of a directory: %v", err)
	}
	if _, err := fsys.ReadDir("top"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("ReadDir of a file: %v", err)
	}

	d, err := fsys.Open("sizes")
	if err != nil {
		t.Fatal(err)
	}
	dir := d.(fs.ReadDirFile)
	var got []string
	for _, n := range []int{3, 3, 3, 3} {
		ents, err := dir.ReadDir(n)
		if err != nil || len(ents) != min(n, 10-len(got)) {
			t.Fatalf("ReadDir(%d) after %d: %d entries, %v", n, len(got), len(ents), err)
		}
		for _, e := range ents {
			got = append(got, e.Name())
		}
	}
	if !slices.IsSorted(got) || len(got) != 10 {
		t.Errorf("ReadDir in steps: %q", got)
	}
	if ents, err := dir.ReadDir(1); len(ents) != 0 || err != io.EOF {
		t.Errorf("ReadDir(1) at the end: %d, %v", len(ents), err)
	}
	if ents, err := dir.ReadDir(0); len(ents) != 0 || err != nil {
		t.Errorf("ReadDir(0) at the end: %d, %v", len(ents), err)
	}
	if _, err := d.Read(make([]byte, 1)); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("Read of a directory: %v", err)
	}
	d.Close()
	if _, err := dir.ReadDir(-1); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("ReadDir after Close: %v", err)
	}

	f, err := fsys.Open("sizes/f4097")
	if err != nil {
		t.Fatal(err)
	}
	s := f.(io.ReadSeeker)
	if off, err := s.Seek(-1, io.SeekEnd); off != 4096 || err != nil {
		t.Errorf("Seek(-1, end) = %d, %v", off, err)
	}
	b, err := io.ReadAll(s)
	if err != nil || len(b) != 1 || b[0] != randBytes(507, 4097)[4096] {
		t.Errorf("the last byte: %q, %v", b, err)
	}
	if _, err := s.Seek(-4098, io.SeekEnd); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Seek before the start: %v", err)
	}
	if _, err := f.(io.ReaderAt).ReadAt(make([]byte, 1), -1); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("ReadAt(-1): %v", err)
	}
	f.Close()
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if err := f.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestFSWhileWriting: the io/fs view of a volume open for writing sees
// changes as they are made; files and directories it has open keep their
// inode when their names go, and free it at Close.
func TestFSWhileWriting(t *testing.T) {
	w := newWenv(t, "ext4", 1024, "8M", "", noJournal...)
	fsys := w.v.FS()
	w.mkdir("/d")
	w.put("/d/f", randBytes(600, 5000))
	f, err := fsys.Open("d/f")
	if err != nil {
		t.Fatal(err)
	}
	w.put("/new", randBytes(601, 100))
	w.rename("/new", "/d/f")
	if b, err := fsys.ReadFile("d/f"); err != nil || !equalBytes(b, randBytes(601, 100)) {
		t.Fatalf("ReadFile after the rename: %d bytes, %v", len(b), err)
	}
	if b, err := io.ReadAll(f); err != nil || !equalBytes(b, randBytes(600, 5000)) {
		t.Fatalf("the open file after its name was replaced: %d bytes, %v", len(b), err)
	}
	w.mkdir("/gone")
	d, err := fsys.Open("gone")
	if err != nil {
		t.Fatal(err)
	}
	w.rmdir("/gone")
	if ents, err := d.(fs.ReadDirFile).ReadDir(-1); err != nil || len(ents) != 0 {
		t.Fatalf("ReadDir of a removed open directory: %v, %v", ents, err)
	}
	if _, err := fsys.Stat("gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat of the removed directory: %v", err)
	}
	f.Close()
	d.Close()
	w.verify()
}

// TestFSReadAllocs: reading cached pages through the io/fs view costs no
// allocation per call, as File.ReadAt does not (the daemon's GET path).
func TestFSReadAllocs(t *testing.T) {
	src, _ := iofsSource(t)
	v := mustOpenImage(t, mkfs(t, "ext2", 4096, src, "16M"), openOpts{})
	f, err := v.FS().Open("sizes/f70000")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadAll(f); err != nil { // cache every page
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	rs, ra := f.(io.ReadSeeker), f.(io.ReaderAt)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := rs.Seek(4096, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := ra.ReadAt(buf, 8192); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per Seek+Read+ReadAt of cached pages", n)
	}
}

// BenchmarkFSRead reads a cached 64 KiB file through the io/fs view and
// through File.ReadAt, in one run, to show what the view costs.
func BenchmarkFSRead(b *testing.B) {
	src := b.TempDir()
	writeFile(b, filepath.Join(src, "f"), randBytes(1, 64<<10))
	v := mustOpenImage(b, mkfs(b, "ext2", 4096, src, "16M"), openOpts{})
	buf := make([]byte, 64<<10)
	b.Run("iofs", func(b *testing.B) {
		f, err := v.FS().Open("f")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		ra := f.(io.ReaderAt)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ra.ReadAt(buf, 0); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	})
	b.Run("File", func(b *testing.B) {
		f, err := v.OpenFile("/f")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	})
}
