package ext

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A generated source tree: every case the read side must get right, laid
// out so one mke2fs -d image holds them all.
type treeOpts struct {
	blockSize int
	manyFiles int  // files in /many
	fifo      bool // a FIFO (mke2fs copies it as an inode without data)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// randBytes is deterministic per seed, so a failure reproduces.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeSparse creates a file of size bytes with data only at the given
// offsets (holes elsewhere).
func writeSparse(t testing.TB, path string, size int64, chunks map[int64][]byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, b := range chunks {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

func symlink(t testing.TB, target, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// longName is a 200-byte file name (slow symlinks point at it).
var longName = strings.Repeat("long-name-", 20)

func buildTree(t testing.TB, root string, o treeOpts) {
	t.Helper()
	bs := o.blockSize
	ptrs := bs / 4
	seed := uint64(bs)
	// Small files around page and block edges.
	for i, n := range []int{0, 1, 100, bs - 1, bs, bs + 1, 4095, 4096, 4097, 10000, 3*4096 + 17} {
		writeFile(t, filepath.Join(root, "tiny", fmt.Sprintf("f%02d-%d", i, n)), randBytes(seed+uint64(i), n))
	}
	// Block-count edges of the indirect scheme: the direct area (12), the
	// end of the single-indirect range, into the double-indirect range.
	for _, c := range []struct {
		name string
		size int
	}{
		{"exact12", 12 * bs},
		{"twelve-plus1", 12*bs + 1},
		{"thirteen", 13 * bs},
		{"single-end", (nDirect + ptrs) * bs},
		{"double", (nDirect+ptrs+20)*bs + 77},
	} {
		writeFile(t, filepath.Join(root, "blocks", c.name), randBytes(seed+uint64(len(c.name)), c.size))
	}
	// Sparse files.
	sp := filepath.Join(root, "sparse")
	writeSparse(t, filepath.Join(sp, "hole-middle"), 1<<20+5000, map[int64][]byte{0: randBytes(1, 3000), 1 << 20: randBytes(2, 5000)})
	writeSparse(t, filepath.Join(sp, "hole-start"), 200<<10+7000, map[int64][]byte{200 << 10: randBytes(3, 7000)})
	writeSparse(t, filepath.Join(sp, "all-hole"), 3<<20, nil)
	writeSparse(t, filepath.Join(sp, "hole-end"), 2<<20, map[int64][]byte{0: randBytes(4, 10<<10)})
	alt := map[int64][]byte{}
	for i := int64(0); i < 64; i += 2 {
		alt[i*int64(bs)] = randBytes(uint64(100+i), bs)
	}
	writeSparse(t, filepath.Join(sp, "every-other-block"), 64*int64(bs), alt)
	// Enough one-block extents that the extent tree needs depth 2 (the
	// root holds 4 indexes, each leaf (bs-12)/12 extents).
	frag := map[int64][]byte{}
	nExt := 4*((bs-extentHeaderLen)/extentEntryLen) + 20
	for i := range nExt {
		frag[2*int64(i)*int64(bs)] = randBytes(uint64(1000+i), bs)
	}
	writeSparse(t, filepath.Join(sp, "fragmented"), int64(2*nExt)*int64(bs), frag)
	// Deep directories.
	deep := filepath.Join(root, "deep")
	for i := range 30 {
		deep = filepath.Join(deep, fmt.Sprintf("d%02d", i))
	}
	writeFile(t, filepath.Join(deep, "leaf"), []byte("at the bottom\n"))
	// Symbolic links: fast (target in the inode), slow (a data block),
	// to directories, absolute, dangling, looping, chained.
	ln := filepath.Join(root, "links")
	writeFile(t, filepath.Join(ln, "target.txt"), []byte("target contents\n"))
	writeFile(t, filepath.Join(ln, longName), []byte("reached through a slow symlink\n"))
	symlink(t, "target.txt", filepath.Join(ln, "fast"))
	symlink(t, "../links/./"+longName, filepath.Join(ln, "slow"))
	symlink(t, "../deep/d00/d01", filepath.Join(ln, "dir"))
	symlink(t, "/links/target.txt", filepath.Join(ln, "abs"))
	symlink(t, "nowhere", filepath.Join(ln, "dangling"))
	symlink(t, "loop2", filepath.Join(ln, "loop1"))
	symlink(t, "loop1", filepath.Join(ln, "loop2"))
	symlink(t, "fast", filepath.Join(ln, "chain"))
	symlink(t, "../../../../../..//links/target.txt", filepath.Join(ln, "climb"))
	// Hard links.
	writeFile(t, filepath.Join(root, "hard", "a"), []byte("one inode, two names\n"))
	if err := os.Link(filepath.Join(root, "hard", "a"), filepath.Join(root, "hard", "b")); err != nil {
		t.Fatal(err)
	}
	// Many files in one directory.
	for i := range o.manyFiles {
		writeFile(t, filepath.Join(root, "many", fmt.Sprintf("entry-%05d-with-a-longer-name", i)), []byte(fmt.Sprintf("file %d\n", i)))
	}
	if o.fifo {
		if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fixTimes(root)
}

// fixTimes gives every file but symlinks one whole-second mtime, so
// volumes whose inodes keep only seconds compare equal.
func fixTimes(root string) {
	mt := time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink == 0 {
			os.Chtimes(p, mt, mt)
		}
		return nil
	})
}

// verifyTree checks that the volume holds exactly the source tree: every
// directory lists the same names, every file reads back byte for byte,
// every link points where the source's does, and metadata agrees.
func verifyTree(t *testing.T, v *testVolume, src string) {
	t.Helper()
	var files, dirs, links int
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		vp := "/" + filepath.ToSlash(rel)
		if rel == "." {
			vp = "/"
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fi, err := v.Lstat(vp)
		if err != nil {
			t.Errorf("lstat %s: %v", vp, err)
			return nil
		}
		sys := st.Sys().(*syscall.Stat_t)
		if fi.Mode != st.Mode() {
			t.Errorf("%s: mode %v, source %v", vp, fi.Mode, st.Mode())
		}
		if fi.Links != uint32(sys.Nlink) && !(vp == "/") {
			t.Errorf("%s: %d links, source %d", vp, fi.Links, sys.Nlink)
		}
		// mke2fs -d leaves the root's times at mkfs time.
		if st.Mode().Type() != fs.ModeSymlink && vp != "/" && !fi.ModTime.Equal(st.ModTime()) {
			t.Errorf("%s: mtime %v, source %v", vp, fi.ModTime, st.ModTime())
		}
		switch {
		case st.Mode().IsRegular():
			files++
			if fi.Size != st.Size() {
				t.Errorf("%s: size %d, source %d", vp, fi.Size, st.Size())
			}
			checkFile(t, v, vp, p)
		case st.IsDir():
			dirs++
			checkDir(t, v, vp, p)
		case st.Mode().Type() == fs.ModeSymlink:
			links++
			want, _ := os.Readlink(p)
			got, err := v.Readlink(vp)
			if err != nil || got != want {
				t.Errorf("readlink %s = %q, %v; want %q", vp, got, err, want)
			}
			if fi.Size != int64(len(want)) {
				t.Errorf("%s: link size %d, want %d", vp, fi.Size, len(want))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verified %d files, %d directories, %d symlinks", files, dirs, links)
}

func checkDir(t *testing.T, v *testVolume, vp, p string) {
	t.Helper()
	want, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.ReadDir(vp)
	if err != nil {
		t.Errorf("readdir %s: %v", vp, err)
		return
	}
	var wn, gn []string
	for _, d := range want {
		wn = append(wn, d.Name())
	}
	for _, d := range got {
		if vp == "/" && d.Name == "lost+found" {
			continue
		}
		gn = append(gn, d.Name)
		if d.Type == TypeUnknown {
			t.Errorf("%s/%s: unknown type", vp, d.Name)
		}
	}
	slices.Sort(wn)
	if !slices.Equal(gn, wn) {
		t.Errorf("readdir %s: %d names, source %d (first diff near %v)", vp, len(gn), len(wn), firstDiff(gn, wn))
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] + " vs " + b[i]
		}
	}
	return "the end"
}

// checkFile reads the file whole through the engine, then a few short
// ranges at odd offsets, and compares with the source.
func checkFile(t *testing.T, v *testVolume, vp, p string) {
	t.Helper()
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.OpenFile(vp)
	if err != nil {
		t.Errorf("open %s: %v", vp, err)
		return
	}
	defer f.Close()
	if f.Size() != int64(len(want)) {
		t.Errorf("%s: size %d, want %d", vp, f.Size(), len(want))
		return
	}
	got := make([]byte, len(want))
	n, err := f.ReadAt(got, 0)
	if n != len(want) || (err != nil && err != io.EOF) {
		t.Errorf("read %s: %d bytes of %d, %v", vp, n, len(want), err)
		return
	}
	if i := mismatch(got, want); i >= 0 {
		t.Errorf("read %s: byte %d differs (got %#x, want %#x)", vp, i, got[i], want[i])
		return
	}
	r := rand.New(rand.NewPCG(uint64(len(want)), 7))
	for range 4 {
		if len(want) == 0 {
			break
		}
		off := r.IntN(len(want))
		n := min(r.IntN(9000)+1, len(want)-off)
		buf := make([]byte, n)
		k, err := f.ReadAt(buf, int64(off))
		if k != n || (err != nil && err != io.EOF) || !bytes.Equal(buf, want[off:off+n]) {
			t.Errorf("read %s at %d+%d: %d bytes, %v, equal %v", vp, off, n, k, err, bytes.Equal(buf[:k], want[off:off+k]))
		}
	}
	// Past the end.
	if _, err := f.ReadAt(make([]byte, 1), int64(len(want))); err != io.EOF {
		t.Errorf("read %s at EOF: %v, want io.EOF", vp, err)
	}
}

func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestReadTree builds the tree into images of every type and block size
// and reads everything back through the engine.
func TestReadTree(t *testing.T) {
	for _, typ := range []string{"ext2", "ext3", "ext4"} {
		for _, bs := range []int{1024, 2048, 4096} {
			t.Run(fmt.Sprintf("%s-%d", typ, bs), func(t *testing.T) {
				t.Parallel()
				src := t.TempDir()
				buildTree(t, src, treeOpts{blockSize: bs, manyFiles: 600, fifo: true})
				img := mkfs(t, typ, bs, src, "24M")
				v := mustOpenImage(t, img, openOpts{})
				verifyTree(t, v, src)
				checkPathErrors(t, v)
			})
		}
	}
}

// checkPathErrors runs the hostile and broken paths against a tree volume.
func checkPathErrors(t *testing.T, v *testVolume) {
	t.Helper()
	for _, c := range []struct {
		path string
		want error
	}{
		{"", ErrInvalidPath},
		{"tiny", ErrInvalidPath},
		{"//tiny", ErrInvalidPath},
		{"/tiny//f01-1", ErrInvalidPath},
		{"/tiny/./f01-1", ErrInvalidPath},
		{"/tiny/../tiny/f01-1", ErrInvalidPath},
		{"/..", ErrInvalidPath},
		{"/tiny/f01-1\x00", ErrInvalidPath},
		{"/" + strings.Repeat("x", 256), ErrInvalidPath},
		{"/" + strings.Repeat("x/", 2100), ErrInvalidPath},
		{"/nope", ErrNotFound},
		{"/tiny/nope", ErrNotFound},
		{"/" + strings.Repeat("x", 255), ErrNotFound},
		{"/tiny/f01-1/x", ErrNotDir},
		{"/tiny/f01-1/", ErrNotDir},
		{"/links/dangling", ErrNotFound},
		{"/links/loop1", ErrLoop},
		{"/links/loop1/x", ErrLoop},
		{"/deep", ErrIsDir},
		{"/fifo", ErrNotRegular},
	} {
		_, err := v.OpenFile(c.path)
		if !errors.Is(err, c.want) {
			t.Errorf("open %q: %v, want %v", c.path, err, c.want)
		}
		var pe *fs.PathError
		if err != nil && !errors.As(err, &pe) {
			t.Errorf("open %q: %T is not a *fs.PathError", c.path, err)
		}
	}
	// Links resolve inside the volume.
	for _, p := range []string{"/links/fast", "/links/slow", "/links/abs", "/links/chain", "/links/climb", "/links/dir/d02/d03/../d03"} {
		if strings.Contains(p, "..") {
			continue // caller paths may not hold ".."; link targets may
		}
		if _, err := v.Stat(p); err != nil {
			t.Errorf("stat %s: %v", p, err)
		}
	}
	fi, err := v.Stat("/links/dir/d02/")
	if err != nil || !fi.IsDir() {
		t.Errorf("stat through a directory link: %+v, %v", fi, err)
	}
	if got, err := v.Lstat("/links/fast"); err != nil || got.Type != TypeSymlink {
		t.Errorf("lstat /links/fast: %v, %v", got.Type, err)
	}
	if got, err := v.Stat("/links/fast"); err != nil || got.Type != TypeRegular || got.Size != int64(len("target contents\n")) {
		t.Errorf("stat /links/fast: %+v, %v", got, err)
	}
}

// TestReadTreeFeatures reads the tree from volumes with less common
// layouts: meta_bg descriptors over many groups, bigalloc clusters,
// uninit_bg crc16 descriptors, 128-byte inodes, no flex_bg, a stored
// checksum seed, revision 0.
func TestReadTreeFeatures(t *testing.T) {
	for _, c := range []struct {
		name, typ string
		bs        int
		size      string
		extra     []string
	}{
		{"meta_bg", "ext4", 1024, "300M", []string{"-O", "meta_bg,^resize_inode"}},
		{"bigalloc", "ext4", 4096, "64M", []string{"-O", "bigalloc", "-C", "16384"}},
		{"uninit_bg", "ext4", 2048, "24M", []string{"-O", "^metadata_csum,uninit_bg,^64bit"}},
		{"inode128", "ext4", 4096, "24M", []string{"-I", "128"}},
		{"no_flex_bg", "ext4", 1024, "40M", []string{"-O", "^flex_bg"}},
		{"csum_seed", "ext4", 4096, "24M", []string{"-O", "metadata_csum_seed"}},
		{"no_filetype", "ext2", 1024, "24M", []string{"-O", "^filetype"}},
		{"rev0", "ext2", 1024, "24M", []string{"-r", "0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			buildTree(t, src, treeOpts{blockSize: c.bs, manyFiles: 50, fifo: true})
			img := mkfs(t, c.typ, c.bs, src, c.size, c.extra...)
			v := mustOpenImage(t, img, openOpts{})
			t.Logf("%d groups, features %v / %v / %v", v.sb.GroupCount, v.sb.Compat, v.sb.Incompat, v.sb.ROCompat)
			verifyTree(t, v, src)
		})
	}
}
