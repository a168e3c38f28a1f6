package ext

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// wenv drives one image through the write side and keeps a model of what
// it must hold afterwards: every file's bytes, every directory, and names
// that must be gone. verify checks the image against the model through
// the engine, e2fsck, debugfs and the kernel's driver.
type wenv struct {
	t     *testing.T
	typ   string
	img   string
	opts  openOpts
	v     *testVolume
	files map[string][]byte
	dirs  map[string]bool
	gone  map[string]bool
	// kernel: also mount the image with the kernel's driver in verify.
	kernel bool
}

func newWenv(t *testing.T, typ string, bs int, size, src string, extra ...string) *wenv {
	t.Helper()
	w := modelOf(t, typ, mkfs(t, typ, bs, src, size, extra...), src, openOpts{rw: true})
	w.open()
	return w
}

// modelOf is the model of img, just made by mke2fs from src, not yet
// open; opts open it.
func modelOf(t *testing.T, typ, img, src string, opts openOpts) *wenv {
	t.Helper()
	w := &wenv{t: t, typ: typ, img: img, opts: opts,
		files: map[string][]byte{}, dirs: map[string]bool{"/": true, "/lost+found": true}, gone: map[string]bool{}, kernel: true}
	if src != "" {
		err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			vp := path.Join("/", filepath.ToSlash(rel))
			switch {
			case d.IsDir():
				w.dirs[vp] = true
			case d.Type().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				w.files[vp] = b
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *wenv) open() {
	w.t.Helper()
	w.v = mustOpenImage(w.t, w.img, w.opts)
	if ro, why := w.v.ReadOnly(); ro {
		w.t.Fatalf("%s opened read-only: %s", w.img, why)
	}
}

func (w *wenv) close() {
	w.t.Helper()
	if err := w.v.Close(); err != nil {
		w.t.Fatalf("close: %v", err)
	}
	w.v = nil
}

// writeAt writes b at off of p, creating p if needed.
func (w *wenv) writeAt(p string, off int64, b []byte) {
	w.t.Helper()
	f, err := w.v.OpenWrite(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		w.t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	if n, err := f.WriteAt(b, off); err != nil || n != len(b) {
		w.t.Fatalf("write %s at %d: %d of %d bytes, %v", p, off, n, len(b), err)
	}
	cur := w.files[p]
	if end := off + int64(len(b)); end > int64(len(cur)) {
		cur = append(cur, make([]byte, end-int64(len(cur)))...)
	}
	copy(cur[off:], b)
	w.files[p] = cur
	delete(w.gone, p)
}

// put replaces p's content with b (creating or truncating it).
func (w *wenv) put(p string, b []byte) {
	w.t.Helper()
	f, err := w.v.Create(p, 0o644)
	if err != nil {
		w.t.Fatalf("create %s: %v", p, err)
	}
	defer f.Close()
	if n, err := f.WriteAt(b, 0); err != nil || n != len(b) {
		w.t.Fatalf("write %s: %d of %d bytes, %v", p, n, len(b), err)
	}
	w.files[p] = append([]byte(nil), b...)
	delete(w.gone, p)
}

func (w *wenv) truncate(p string, size int64) {
	w.t.Helper()
	f, err := w.v.OpenWrite(p, os.O_RDWR, 0)
	if err != nil {
		w.t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		w.t.Fatalf("truncate %s to %d: %v", p, size, err)
	}
	cur := w.files[p]
	if size <= int64(len(cur)) {
		cur = cur[:size]
	} else {
		cur = append(cur, make([]byte, size-int64(len(cur)))...)
	}
	w.files[p] = cur
}

func (w *wenv) unlink(p string) {
	w.t.Helper()
	if err := w.v.Unlink(p); err != nil {
		w.t.Fatalf("unlink %s: %v", p, err)
	}
	delete(w.files, p)
	w.gone[p] = true
}

func (w *wenv) mkdir(p string) {
	w.t.Helper()
	if err := w.v.Mkdir(p, 0o755); err != nil {
		w.t.Fatalf("mkdir %s: %v", p, err)
	}
	w.dirs[p] = true
	delete(w.gone, p)
}

func (w *wenv) rmdir(p string) {
	w.t.Helper()
	if err := w.v.Rmdir(p); err != nil {
		w.t.Fatalf("rmdir %s: %v", p, err)
	}
	delete(w.dirs, p)
	w.gone[p] = true
}

// rename renames oldp to newp and moves everything at and under oldp in
// the model; what newp named is replaced.
func (w *wenv) rename(oldp, newp string) {
	w.t.Helper()
	oldIno, _ := w.v.Lookup(oldp)
	newIno, _ := w.v.Lookup(newp)
	if err := w.v.Rename(oldp, newp); err != nil {
		w.t.Fatalf("rename %s %s: %v", oldp, newp, err)
	}
	if oldIno == newIno {
		return // two links of one inode: nothing changes
	}
	move := func(p string) (string, bool) {
		if p == oldp {
			return newp, true
		}
		if rest, ok := strings.CutPrefix(p, oldp+"/"); ok {
			return newp + "/" + rest, true
		}
		return "", false
	}
	delete(w.files, newp)
	delete(w.dirs, newp)
	files, dirs := map[string][]byte{}, map[string]bool{}
	for p, b := range w.files {
		if np, ok := move(p); ok {
			delete(w.files, p)
			files[np] = b
			w.gone[p] = true
		}
	}
	for p := range w.dirs {
		if np, ok := move(p); ok {
			delete(w.dirs, p)
			dirs[np] = true
			w.gone[p] = true
		}
	}
	if len(files)+len(dirs) == 0 {
		// Not a regular file or directory (a link, a FIFO): only the
		// old name's absence is modelled.
		w.gone[oldp] = true
	}
	for p, b := range files {
		w.files[p] = b
		delete(w.gone, p)
	}
	for p := range dirs {
		w.dirs[p] = true
		delete(w.gone, p)
	}
	delete(w.gone, newp)
}

// children is what the model says directory d lists.
func (w *wenv) children(d string) []string {
	var out []string
	add := func(p string) {
		if p != "/" && path.Dir(p) == d {
			out = append(out, path.Base(p))
		}
	}
	for p := range w.files {
		add(p)
	}
	for p := range w.dirs {
		add(p)
	}
	sort.Strings(out)
	return out
}

// verify checks the model against the engine (before and after a
// reopen), e2fsck -fn, debugfs and, as root, the kernel's driver. The
// volume is open again afterwards.
func (w *wenv) verify() {
	w.t.Helper()
	w.verifyEngine("before close")
	w.close()
	fsckClean(w.t, w.img)
	w.verifyDebugfs()
	if w.kernel {
		w.verifyKernel()
	}
	w.open()
	w.verifyEngine("after reopen")
}

func (w *wenv) verifyEngine(when string) {
	w.t.Helper()
	for p, want := range w.files {
		f, err := w.v.OpenFile(p)
		if err != nil {
			w.t.Fatalf("%s: open %s: %v", when, p, err)
		}
		got := make([]byte, len(want)+1)
		n, err := f.ReadAt(got, 0)
		f.Close()
		if err != io.EOF || n != len(want) || !bytes.Equal(got[:n], want) {
			w.t.Fatalf("%s: %s: read %d bytes (%v), want %d; first difference at %d", when, p, n, err, len(want), mismatch(got[:n], want))
		}
	}
	for d := range w.dirs {
		ents, err := w.v.ReadDir(d)
		if err != nil {
			w.t.Fatalf("%s: readdir %s: %v", when, d, err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name)
		}
		if want := w.children(d); !slices.Equal(names, want) {
			w.t.Fatalf("%s: readdir %s: %d names, model %d (first difference near %s)", when, d, len(names), len(want), firstDiff(names, want))
		}
	}
	for p := range w.gone {
		if _, err := w.v.Lstat(p); !errors.Is(err, ErrNotFound) {
			w.t.Fatalf("%s: %s should be gone: %v", when, p, err)
		}
	}
	// A directory's links: its name, its ".", each subdirectory's "..".
	for d := range w.dirs {
		want := uint32(2)
		for _, c := range w.children(d) {
			if w.dirs[path.Join(d, c)] {
				want++
			}
		}
		if fi, err := w.v.Stat(d); err != nil || fi.Links != want {
			w.t.Fatalf("%s: %s has %d links (%v), want %d", when, d, fi.Links, err, want)
		}
	}
}

// fsckClean runs e2fsck -fn on img and fails t unless it finds nothing.
func fsckClean(t *testing.T, img string) {
	t.Helper()
	testenv.RequireTool(t, "e2fsck")
	out, err := testenv.Output("e2fsck", "-fn", img)
	if err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

// verifyDebugfs dumps every file of the model with one debugfs run and
// compares, and checks that gone names are gone.
func (w *wenv) verifyDebugfs() {
	w.t.Helper()
	testenv.RequireTool(w.t, "debugfs")
	dir := w.t.TempDir()
	var cmds strings.Builder
	var paths []string
	for p := range w.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	// Thousands of dumps take a while: a sample is enough past 400.
	if len(paths) > 400 {
		step := len(paths) / 400
		var sample []string
		for i := 0; i < len(paths); i += step {
			sample = append(sample, paths[i])
		}
		paths = sample
	}
	for i, p := range paths {
		fmt.Fprintf(&cmds, "dump \"%s\" %s\n", p, filepath.Join(dir, fmt.Sprint(i)))
	}
	for p := range w.gone {
		fmt.Fprintf(&cmds, "stat \"%s\"\n", p)
	}
	cmdFile := filepath.Join(dir, "cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		w.t.Fatal(err)
	}
	out := testenv.Run(w.t, "debugfs", "-f", cmdFile, w.img)
	for i, p := range paths {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			w.t.Fatalf("debugfs dump %s: %v\n%s", p, err, out)
		}
		if want := w.files[p]; !bytes.Equal(got, want) {
			w.t.Fatalf("debugfs dump %s: %d bytes, want %d; first difference at %d", p, len(got), len(want), mismatch(got, want))
		}
	}
	if n := strings.Count(out, "File not found by ext2_lookup"); n != len(w.gone) {
		w.t.Fatalf("debugfs: %d of %d removed names not found\n%s", n, len(w.gone), out)
	}
}

// verifyKernel mounts the image read-only with the kernel's driver (as
// root; skipped otherwise, failed under CI) and compares every file and
// directory with the model.
func (w *wenv) verifyKernel() {
	w.t.Helper()
	w.t.Run("kernel", func(t *testing.T) {
		mnt, done := mountRO(t, w.img, w.typ)
		defer done()
		for p, want := range w.files {
			got, err := os.ReadFile(filepath.Join(mnt, p))
			if err != nil {
				t.Fatalf("kernel: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("kernel: %s: %d bytes, want %d; first difference at %d", p, len(got), len(want), mismatch(got, want))
			}
		}
		for d := range w.dirs {
			ents, err := os.ReadDir(filepath.Join(mnt, d))
			if err != nil {
				t.Fatalf("kernel: %v", err)
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if want := w.children(d); !slices.Equal(names, want) {
				t.Fatalf("kernel: readdir %s: %d names, model %d (first difference near %s)", d, len(names), len(want), firstDiff(names, want))
			}
		}
		for p := range w.gone {
			if _, err := os.Lstat(filepath.Join(mnt, p)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("kernel: %s should be gone: %v", p, err)
			}
		}
	})
}

// mountRO attaches img to a loop device and mounts it read-only with the
// kernel's driver for fsType. done unmounts and detaches (also run at the
// end of the test, pass or fail).
func mountRO(t *testing.T, img, fsType string) (string, func()) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "losetup")
	testenv.RequireTool(t, "mount")
	out, err := testenv.Output("losetup", "--find", "--show", "--direct-io=on", img)
	if err != nil {
		out, err = testenv.Output("losetup", "--find", "--show", img)
	}
	if err != nil {
		testenv.Unavailable(t, "losetup: %v: %s", err, strings.TrimSpace(out))
	}
	dev := strings.TrimSpace(out)
	mnt := t.TempDir()
	mounted := false
	done := func() {
		if mounted {
			if err := testenv.Unmount(mnt); err != nil {
				t.Errorf("%v", err)
			}
			mounted = false
		}
		if dev != "" {
			if out, err := testenv.Output("losetup", "--detach", dev); err != nil {
				t.Errorf("detach %s: %v: %s", dev, err, out)
			}
			dev = ""
		}
	}
	t.Cleanup(done)
	if out, err := testenv.Output("mount", "-o", "ro", "-t", fsType, dev, mnt); err != nil {
		done()
		if _, ok := err.(*exec.ExitError); ok && strings.Contains(out, "unknown filesystem type") {
			testenv.Unavailable(t, "kernel has no %s driver: %s", fsType, out)
		}
		t.Fatalf("mount -t %s %s: %v: %s", fsType, img, err, out)
	}
	mounted = true
	return mnt, done
}

// freeCounts sums the group descriptors' free blocks and inodes.
func freeCounts(t *testing.T, v *testVolume) (blocks, inodes uint64) {
	t.Helper()
	for g := range v.sb.GroupCount {
		d, err := v.Group(g)
		if err != nil {
			t.Fatal(err)
		}
		blocks += uint64(d.FreeBlocks)
		inodes += uint64(d.FreeInodes)
	}
	return blocks, inodes
}
