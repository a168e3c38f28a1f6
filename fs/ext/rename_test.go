package ext

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// renameSource is the tree the rename scenario starts from.
func renameSource(t *testing.T, dir string, bs int) {
	writeFile(t, filepath.Join(dir, "a", "f1"), randBytes(200, 3*bs+5))
	writeFile(t, filepath.Join(dir, "a", "f2"), randBytes(201, 100))
	writeFile(t, filepath.Join(dir, "a", "f3"), randBytes(202, (nDirect+3)*bs))
	writeFile(t, filepath.Join(dir, "b", "target"), randBytes(203, 20*bs))
	writeFile(t, filepath.Join(dir, "b", "open-target"), randBytes(204, 5*bs))
	writeFile(t, filepath.Join(dir, "d1", "sub", "x"), randBytes(205, 7))
	writeFile(t, filepath.Join(dir, "d1", "y"), randBytes(206, bs))
	if err := os.MkdirAll(filepath.Join(dir, "d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "hard1"), randBytes(207, 2*bs))
	if err := os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "hard2")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "h", "link-a"), randBytes(208, 3000))
	if err := os.Link(filepath.Join(dir, "h", "link-a"), filepath.Join(dir, "h", "link-b")); err != nil {
		t.Fatal(err)
	}
	symlink(t, "a/f1", filepath.Join(dir, "sym"))
}

// renameScenario: renames within and across directories, over files
// (one open, one with another link), of directories across parents (their
// ".." and link counts), over an empty directory, onto another link of
// the same inode, of a symbolic link; verify judges every step with the
// engine, e2fsck, debugfs and the kernel.
func renameScenario(w *wenv, bs int) {
	t := w.t
	w.rename("/a/f1", "/a/f1-renamed")
	w.rename("/a/f2", "/b/f2")
	w.rename("/a/f3", "/b/target")
	// Over a file a reader has open: it keeps reading the old bytes.
	f, err := w.v.OpenFile("/b/open-target")
	if err != nil {
		t.Fatal(err)
	}
	w.put("/new", randBytes(209, 9*bs+1))
	w.rename("/new", "/b/open-target")
	old := randBytes(204, 5*bs)
	buf := make([]byte, len(old)+1)
	if n, err := f.ReadAt(buf, 0); err != io.EOF || !equalBytes(buf[:n], old) {
		t.Fatalf("open replaced file: %d bytes, %v", n, err)
	}
	f.Close()
	// A directory across parents, then within one.
	w.rename("/d1", "/b/d1")
	w.rename("/b/d1/sub", "/d2") // over an empty directory
	w.rename("/b/d1", "/b/d1-renamed")
	// Two links of one inode: nothing happens, both names stay.
	w.rename("/hard1", "/hard2")
	// Over a file with another link: the other name keeps the old bytes.
	w.put("/h/new", randBytes(210, 50))
	w.rename("/h/new", "/h/link-a")
	if fi, err := w.v.Stat("/h/link-b"); err != nil || fi.Links != 1 {
		t.Fatalf("/h/link-b after its other name was replaced: %+v, %v", fi, err)
	}
	// A symbolic link is renamed itself (the model holds no links: it
	// goes again).
	if err := w.v.Rename("/sym", "/b/sym"); err != nil {
		t.Fatal(err)
	}
	if target, err := w.v.Readlink("/b/sym"); err != nil || target != "a/f1" {
		t.Fatalf("renamed link: %q, %v", target, err)
	}
	if err := w.v.Unlink("/b/sym"); err != nil {
		t.Fatal(err)
	}
	w.gone["/sym"], w.gone["/b/sym"] = true, true
	w.verify()
	// Back and forth through a new tree, a name reused.
	w.mkdir("/m")
	w.mkdir("/m/n")
	w.rename("/b/d1-renamed", "/m/n/deep")
	w.rename("/m/n/deep/y", "/y")
	w.rename("/y", "/m/y")
	w.verify()
}

// TestRenameErrors: what rename(2) refuses, each a *os.LinkError naming
// both paths whose error is the sentinel and its errno; refused renames
// change nothing.
func TestRenameErrors(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "file"), []byte("file"))
	writeFile(t, filepath.Join(src, "file2"), []byte("file2"))
	writeFile(t, filepath.Join(src, "dir", "sub", "x"), []byte("x"))
	writeFile(t, filepath.Join(src, "full", "y"), []byte("y"))
	if err := os.MkdirAll(filepath.Join(src, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	w := newWenv(t, "ext2", 1024, "8M", src)
	for _, c := range []struct {
		old, new string
		want     error
		errno    syscall.Errno
	}{
		{"/nothing", "/x", ErrNotFound, syscall.ENOENT},
		{"/file", "/missing/x", ErrNotFound, syscall.ENOENT},
		{"/file", "/file2/x", ErrNotDir, syscall.ENOTDIR},
		{"/file", "/dir", ErrIsDir, syscall.EISDIR},
		{"/file", "/empty", ErrIsDir, syscall.EISDIR},
		{"/dir", "/file", ErrNotDir, syscall.ENOTDIR},
		{"/dir", "/full", ErrNotEmpty, syscall.ENOTEMPTY},
		{"/empty", "/dir", ErrNotEmpty, syscall.ENOTEMPTY},
		{"/dir", "/dir/sub/x2", ErrIntoItself, syscall.EINVAL},
		{"/dir", "/dir/new", ErrIntoItself, syscall.EINVAL},
		{"/dir/sub", "/dir", ErrNotEmpty, syscall.ENOTEMPTY},
		{"/", "/x", ErrBusy, syscall.EBUSY},
		{"/empty", "/", ErrBusy, syscall.EBUSY},
		{"/file/", "/y", ErrNotDir, syscall.ENOTDIR},
		{"/file", "/y/", ErrNotDir, syscall.ENOTDIR},
		{"relative", "/x", ErrInvalidPath, syscall.EINVAL},
		{"/file", "/a/../b", ErrInvalidPath, syscall.EINVAL},
		{"/file", "/" + strings.Repeat("n", 256), ErrInvalidPath, syscall.EINVAL},
	} {
		err := w.v.Rename(c.old, c.new)
		var le *os.LinkError
		if !errors.Is(err, c.want) || !errors.Is(err, c.errno) || !errors.As(err, &le) || le.Old != c.old || le.New != c.new || le.Op != "rename" {
			t.Errorf("rename %q %q: %v, want %v (%v) as *os.LinkError", c.old, c.new, err, c.want, c.errno)
		}
	}
	if err := w.v.Rename("/file", "/file"); err != nil {
		t.Errorf("rename onto itself: %v", err)
	}
	w.verify()
	ro := mustOpenImage(t, w.img, openOpts{})
	if err := ro.Rename("/file", "/z"); !errors.Is(err, ErrReadOnly) || !errors.Is(err, syscall.EROFS) {
		t.Errorf("rename on a read-only volume: %v", err)
	}
}

// TestRenameReplace is the daemon's atomic PUT: a new file is written and
// synced beside the target, which shows its old bytes (to new opens, to a
// reader that has it open, and on the device) until the rename, and the
// new ones from the rename on; the replaced inode is freed at the last
// close, or at once when nothing has it open.
func TestRenameReplace(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	for _, c := range []struct {
		typ   string
		bs    int
		extra []string
	}{{"ext2", 1024, nil}, {"ext2", 4096, nil}, {"ext4", 4096, noJournal}} {
		t.Run(fmt.Sprintf("%s/%dk", c.typ, c.bs/1024), func(t *testing.T) {
			w := newWenv(t, c.typ, c.bs, "16M", "", c.extra...)
			w.mkdir("/srv")
			oldData, newData := randBytes(300, 40*c.bs+9), randBytes(301, 33*c.bs+1)
			w.put("/srv/t", oldData)
			if err := w.v.Sync(); err != nil {
				t.Fatal(err)
			}
			b0, i0 := freeCounts(t, w.v)
			oldIno, err := w.v.Lookup("/srv/t")
			if err != nil {
				t.Fatal(err)
			}
			reader, err := w.v.OpenFile("/srv/t")
			if err != nil {
				t.Fatal(err)
			}
			w.put("/srv/.t.tmp", newData)
			tmp, err := w.v.OpenFile("/srv/.t.tmp")
			if err != nil {
				t.Fatal(err)
			}
			if err := tmp.Sync(); err != nil {
				t.Fatal(err)
			}
			tmp.Close()
			oldInfo, newInfo := statOK(t, w.v, "/srv/t"), statOK(t, w.v, "/srv/.t.tmp")
			readBack(t, w.v, "/srv/t", oldData)
			if got := debugfsDump(t, copyFile(t, w.img), "/srv/t"); !equalBytes(got, oldData) {
				t.Fatal("before the rename the device shows new bytes at /srv/t")
			}

			w.rename("/srv/.t.tmp", "/srv/t")
			readBack(t, w.v, "/srv/t", newData)
			buf := make([]byte, len(oldData))
			if _, err := reader.ReadAt(buf, 0); err != nil || !equalBytes(buf, oldData) {
				t.Fatalf("the open reader after the rename: %v", err)
			}
			if _, err := w.v.StatInode(oldIno, "t"); err != nil {
				t.Fatalf("the replaced inode while open: %v", err)
			}
			if err := w.v.Sync(); err != nil {
				t.Fatal(err)
			}
			// A crash now leaves the open replaced inode unlinked but
			// not freed (ext2 has no orphan list): e2fsck -p frees it.
			crash := copyFile(t, w.img)
			if got := debugfsDump(t, crash, "/srv/t"); !equalBytes(got, newData) {
				t.Fatal("after the rename and a Sync the device shows old bytes at /srv/t")
			}
			if out, err := testenv.Output("e2fsck", "-p", crash); err != nil && !strings.Contains(err.Error(), "exit status 1") {
				t.Fatalf("e2fsck -p of a crash with the replaced file open: %v\n%s", err, out)
			}
			fsckClean(t, crash)
			reader.Close()
			if _, err := w.v.StatInode(oldIno, "t"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("the replaced inode after its last close: %v, want it free", err)
			}
			if err := w.v.Sync(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, copyFile(t, w.img))
			// The old file's blocks (data and mapping) came back, the
			// new one's are taken.
			if b, i := freeCounts(t, w.v); i != i0 || b != b0+fsBlocks(oldInfo, c.bs)-fsBlocks(newInfo, c.bs) {
				t.Fatalf("free blocks %d, inodes %d; before %d, %d; old file %d blocks, new %d", b, i, b0, i0, fsBlocks(oldInfo, c.bs), fsBlocks(newInfo, c.bs))
			}
			// Nothing open: freed at once.
			newIno, err := w.v.Lookup("/srv/t")
			if err != nil {
				t.Fatal(err)
			}
			w.put("/srv/.t.tmp", oldData)
			w.rename("/srv/.t.tmp", "/srv/t")
			if _, err := w.v.StatInode(newIno, "t"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("the replaced inode, not open: %v, want it free", err)
			}
			w.verify()
		})
	}
}

func statOK(t *testing.T, v *testVolume, p string) FileInfo {
	t.Helper()
	fi, err := v.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// fsBlocks is how many blocks of bs bytes fi's file holds.
func fsBlocks(fi FileInfo, bs int) uint64 { return uint64(fi.Blocks) * 512 / uint64(bs) }

// readBack checks that a new open of p reads want.
func readBack(t *testing.T, v *testVolume, p string, want []byte) {
	t.Helper()
	f, err := v.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want)+1)
	n, err := f.ReadAt(got, 0)
	if err != io.EOF || !equalBytes(got[:n], want) {
		t.Fatalf("%s: %d bytes (%v), want %d", p, n, err, len(want))
	}
}

// debugfsDump is what debugfs reads at p in img.
func debugfsDump(t *testing.T, img, p string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dump")
	testenv.Run(t, "debugfs", "-R", fmt.Sprintf("dump %q %s", p, out), img)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("debugfs dump %s: %v", p, err)
	}
	return b
}

// TestRenameConcurrent: renames back and forth between two directories
// race with lookups, listings and reads; every lookup finds a file under
// one of its two names, and the volume ends consistent.
func TestRenameConcurrent(t *testing.T) {
	w := newWenv(t, "ext4", 1024, "16M", "", noJournal...)
	w.mkdir("/l")
	w.mkdir("/r")
	const files = 8
	for i := range files {
		w.put(fmt.Sprintf("/l/f%d", i), randBytes(uint64(400+i), 1000+i))
	}
	var wg, readers sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 16)
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 20 {
				from, to := "/l", "/r"
				if round%2 == 1 {
					from, to = to, from
				}
				if err := w.v.Rename(fmt.Sprintf("%s/f%d", from, i), fmt.Sprintf("%s/f%d", to, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			l, err1 := w.v.ReadDir("/l")
			r, err2 := w.v.ReadDir("/r")
			if err := errors.Join(err1, err2); err != nil {
				errs <- err
				return
			}
			_ = len(l) + len(r)
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// 20 rounds: every file is back in /l.
	w.verify()
}
