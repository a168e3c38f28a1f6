package ext

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/crashring"
)

// crashCutsPerFlush is how many power cuts each device flush is checked
// with: each pending write is whole or absent with even odds, so a
// combination of a few writes shows up in most runs of this many.
const crashCutsPerFlush = 32

// crashVolume is a writable volume on a crash ring that, at every device
// flush, cuts the image crashCutsPerFlush times and checks each cut with
// check after e2fsck -fy.
type crashVolume struct {
	*testVolume
	t     *testing.T
	cuts  int
	check func(fsys fs.FS) error // armed when set
	// preen: each cut must be one e2fsck -p repairs by itself (exit 0 or
	// 1, then e2fsck -fn finds nothing), and one fs/ext's writable open
	// releases the orphans of (e2fsck -p then finds none), instead of
	// e2fsck -fy's repair. orphanCuts counts cuts with orphans.
	preen      bool
	orphanCuts int
}

func newCrashVolume(t *testing.T, typ string, bs int, files map[string][]byte) *crashVolume {
	t.Helper()
	testenv.RequireTool(t, "e2fsck")
	src := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	extra := []string{}
	if typ == "ext4" {
		extra = noJournal
	}
	img := mkfs(t, typ, bs, src, "8M", extra...)
	cv := &crashVolume{t: t}
	var ring *crashring.Ring
	cv.testVolume = mustOpenImage(t, img, openOpts{rw: true, wrap: func(r uring.Ring) uring.Ring {
		ring = crashring.New(r, crashring.Config{NoTear: true, BeforeFlush: func(fd int) { cv.cutAll(ring, fd) }})
		return ring
	}})
	return cv
}

// cutAll checks crashCutsPerFlush cuts of the device as a flush starts.
func (cv *crashVolume) cutAll(ring *crashring.Ring, fd int) {
	if cv.check == nil {
		return
	}
	for range crashCutsPerFlush {
		cv.cuts++
		im, err := ring.CutFile(fd, rand.New(rand.NewPCG(uint64(cv.cuts), 1)))
		if err != nil {
			cv.t.Error(err)
			return
		}
		if err := cv.checkCut(im); err != nil {
			cv.t.Errorf("cut %d (%s): %v", cv.cuts, im, err)
			return
		}
	}
}

func (cv *crashVolume) checkCut(im *crashring.Image) error {
	img := filepath.Join(cv.t.TempDir(), fmt.Sprintf("cut%d.img", cv.cuts))
	defer os.Remove(img)
	if err := im.WriteFile(img); err != nil {
		return err
	}
	var out string
	var err error
	if cv.preen {
		out, err = cv.preenCut(img)
	} else {
		out, err = fsckRepair(img, "-fy")
	}
	if err != nil {
		return err
	}
	v, err := openImage(cv.t, img, openOpts{})
	if err != nil {
		return err
	}
	defer v.Close()
	if err := cv.check(v.FS()); err != nil {
		return fmt.Errorf("%w\ne2fsck -fy said:\n%s", err, out)
	}
	return nil
}

// fsckRepair runs e2fsck with a repairing flag (-fy, -p) on img, which
// must exit 0 or 1.
func fsckRepair(img, flag string) (string, error) {
	out, err := testenv.Output("e2fsck", flag, img)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return out, fmt.Errorf("e2fsck %s: %v\n%s", flag, err, out)
	}
	return out, nil
}

// preenCut checks a cut the way a daemon restarts on it: first fs/ext's
// writable open on a copy, which must release the cut's orphans (e2fsck
// -p then finds none left), then e2fsck -p on img itself, which must
// repair by itself, leaving nothing for e2fsck -fn.
func (cv *crashVolume) preenCut(img string) (string, error) {
	cp := img + ".ext"
	defer os.Remove(cp)
	b, err := os.ReadFile(img)
	if err == nil {
		err = os.WriteFile(cp, b, 0o644)
	}
	if err != nil {
		return "", err
	}
	out, err := fsckRepair(img, "-p")
	if err != nil {
		return out, err
	}
	if fout, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		return out, fmt.Errorf("e2fsck -fn after e2fsck -p: %v\n%s\ne2fsck -p said:\n%s", err, fout, out)
	}
	var log logLines
	v, err := openImage(cv.t, cp, openOpts{rw: true, allowUnclean: true, logf: log.logf})
	if err != nil {
		return out, fmt.Errorf("writable open: %w", err)
	}
	if err := v.Close(); err != nil {
		return out, fmt.Errorf("close after the writable open: %w", err)
	}
	if log.find("orphan list: released") != "" {
		cv.orphanCuts++
	}
	eout, err := fsckRepair(cp, "-p")
	if err != nil {
		return out, fmt.Errorf("after fs/ext's open: %w\nbefore it, e2fsck -p said:\n%s", err, out)
	}
	if strings.Contains(eout, "orphaned inode") {
		return out, fmt.Errorf("orphans left after fs/ext's open:\n%s", eout)
	}
	return out, nil
}

// wantOneOf checks that name holds one of contents (nil: absent).
func wantOneOf(fsys fs.FS, name string, contents ...[]byte) error {
	got, err := fs.ReadFile(fsys, name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, c := range contents {
		if c == nil && err != nil || c != nil && err == nil && bytes.Equal(got, c) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("%s is gone", name)
	}
	return fmt.Errorf("%s holds %d bytes that are none of the %d allowed contents", name, len(got), len(contents))
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// TestCrashRenameOverFile: a power cut while a rename over a file is
// being made durable leaves the new name with the old file or the new
// one, never neither. (Before Rename held the replaced inode until the
// directory was durable, a cut could put the freed inode on the device
// with the old directory entry still naming it; e2fsck then cleared the
// name.)
func TestCrashRenameOverFile(t *testing.T) {
	a, b := pattern(10000, 1), pattern(7000, 2)
	for _, fsys := range []struct {
		typ string
		bs  int
	}{{"ext2", 1024}, {"ext4", 4096}} {
		t.Run(fsys.typ, func(t *testing.T) {
			cv := newCrashVolume(t, fsys.typ, fsys.bs, map[string][]byte{"a": a, "b": b})
			cv.check = func(fsys fs.FS) error {
				if err := wantOneOf(fsys, "b", a, b); err != nil {
					return err
				}
				return wantOneOf(fsys, "a", a, nil)
			}
			if err := cv.Rename("/a", "/b"); err != nil {
				t.Fatal(err)
			}
			if err := cv.Sync(); err != nil {
				t.Fatal(err)
			}
			if cv.cuts == 0 {
				t.Fatal("no flush was cut")
			}
		})
	}
}

// TestCrashFreedBlocksNotReused: the blocks of a file deleted without a
// sync are not given to a new file before the delete is durable, so a
// power cut never shows the deleted name with the new file's bytes.
func TestCrashFreedBlocksNotReused(t *testing.T) {
	a, c := pattern(64<<10, 3), pattern(64<<10, 4)
	for _, fsys := range []struct {
		typ string
		bs  int
	}{{"ext2", 1024}, {"ext4", 4096}} {
		t.Run(fsys.typ, func(t *testing.T) {
			cv := newCrashVolume(t, fsys.typ, fsys.bs, map[string][]byte{"a": a})
			cv.check = func(fsys fs.FS) error {
				if err := wantOneOf(fsys, "a", a, nil); err != nil {
					return err
				}
				// c is not acknowledged until its Sync returns: any prefix
				// of its writes may be there, but not a's name with its bytes.
				return nil
			}
			if err := cv.Unlink("/a"); err != nil {
				t.Fatal(err)
			}
			f, err := cv.Create("/c", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(c, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if cv.cuts == 0 {
				t.Fatal("no flush was cut")
			}
		})
	}
}

// TestCrashFileGrowsIndirect: a durable file grown in place past its
// direct blocks gets an indirect block; a power cut while that is made
// durable leaves the file with its old bytes (and any part of the new
// ones), never an inode pointing at an indirect block that still holds
// old data, which e2fsck clears with the whole file. (Before syncFresh
// wrote new metadata blocks in a flush of their own, it did.)
func TestCrashFileGrowsIndirect(t *testing.T) {
	old, grown := pattern(4096, 5), pattern(60<<10, 6)
	// junk's blocks, after a's, are where a grows: freed and synced,
	// they still hold junk's bytes, which read as block numbers are
	// garbage.
	cv := newCrashVolume(t, "ext2", 1024, map[string][]byte{"a": old, "junk": pattern(64<<10, 7)})
	if err := cv.Unlink("/junk"); err != nil {
		t.Fatal(err)
	}
	if err := cv.Sync(); err != nil {
		t.Fatal(err)
	}
	cv.check = func(fsys fs.FS) error {
		got, err := fs.ReadFile(fsys, "a")
		if err != nil {
			return err
		}
		if len(got) < len(old) || !bytes.Equal(got[:len(old)], old) {
			return fmt.Errorf("a: %d bytes, not starting with its %d durable ones", len(got), len(old))
		}
		return nil
	}
	f, err := cv.OpenWrite("/a", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(grown, int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if cv.cuts == 0 {
		t.Fatal("no flush was cut")
	}
}

// preenCrashFilesystems are the volumes the preen crash tests cut.
var preenCrashFilesystems = []struct {
	typ string
	bs  int
}{{"ext2", 1024}, {"ext4", 4096}}

// TestCrashPreen cuts the device at every flush of a replacement (from the
// staged file durable on), a delete and a delete of an open file, and
// requires every cut to be an image e2fsck -p repairs by itself (never
// "UNEXPECTED INCONSISTENCY": an inode in use, linked, that no name points
// at), and whose orphans fs/ext's writable open releases, with the name
// showing an allowed content. (Before the orphan list and ReplaceFile's
// graves, the replacement and the delete each had cuts e2fsck -p refused.)
func TestCrashPreen(t *testing.T) {
	old, repl := pattern(30000, 8), pattern(20000, 9)
	ops := []struct {
		name  string
		check func(fsys fs.FS) error
		// run arms the cuts (arm) where they start.
		run func(t *testing.T, cv *crashVolume, arm func())
	}{
		// ReplaceFile's steps after the staged file is durable (its
		// creation has cuts of its own, see below).
		{"replace", func(fsys fs.FS) error { return wantOneOf(fsys, "f", old, repl) }, func(t *testing.T, cv *crashVolume, arm func()) {
			rep := &replacement{}
			if err := cv.digGrave(rep, []string{"f"}); err != nil {
				t.Fatal(err)
			}
			tmp, err := cv.stage(bytes.NewReader(repl), 0o644)
			if err != nil {
				t.Fatal(err)
			}
			arm()
			if _, err := cv.linkOver(rep, tmp, []string{"f"}, nil); err != nil {
				t.Fatal(err)
			}
			if err := cv.finishReplace(rep, true); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete", func(fsys fs.FS) error { return wantOneOf(fsys, "f", old, nil) }, func(t *testing.T, cv *crashVolume, arm func()) {
			arm()
			if err := cv.Unlink("/f"); err != nil {
				t.Fatal(err)
			}
			if err := cv.Sync(); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete-open", func(fsys fs.FS) error { return wantOneOf(fsys, "f", old, nil) }, func(t *testing.T, cv *crashVolume, arm func()) {
			arm()
			f, err := cv.OpenWrite("/f", os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := cv.Unlink("/f"); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(repl, int64(len(old))); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := cv.Sync(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, fsys := range preenCrashFilesystems {
		for _, op := range ops {
			t.Run(fsys.typ+"/"+op.name, func(t *testing.T) {
				cv := newCrashVolume(t, fsys.typ, fsys.bs, map[string][]byte{"f": old})
				// The staging directory exists, durable, as in a daemon's
				// steady state: a new directory has cuts e2fsck -p refuses
				// of its own (its entry without its inode, or the inode
				// unconnected), which the orphan list does not address.
				if err := cv.Mkdir(StagingDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := cv.Sync(); err != nil {
					t.Fatal(err)
				}
				op.run(t, cv, func() { cv.preen, cv.check = true, op.check })
				if cv.cuts == 0 {
					t.Fatal("no flush was cut")
				}
				t.Logf("%d cuts, %d with orphans fs/ext's open released", cv.cuts, cv.orphanCuts)
			})
		}
	}
}
