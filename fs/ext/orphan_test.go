package ext

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// fsckPreen runs e2fsck -p on img: it must repair by itself (exit 0 or 1),
// and e2fsck -fn must then find nothing. It returns e2fsck -p's output.
func fsckPreen(t *testing.T, img string) string {
	t.Helper()
	testenv.RequireTool(t, "e2fsck")
	out, err := testenv.Output("e2fsck", "-p", img)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("e2fsck -p refused the image: %v\n%s", err, out)
	}
	fsckClean(t, img)
	return string(out)
}

// orphanChain reads the orphan list of img as the device holds it:
// s_last_orphan, then each inode's i_dtime.
func orphanChain(t *testing.T, img string) []uint32 {
	t.Helper()
	v := mustOpenImage(t, img, openOpts{readOnly: true})
	defer v.Close()
	var chain []uint32
	for ino := v.Superblock().LastOrphan; ino != 0; {
		if len(chain) > 16 {
			t.Fatalf("orphan chain loops: %v", chain)
		}
		chain = append(chain, ino)
		in, err := v.readInode(ino)
		if err != nil {
			t.Fatal(err)
		}
		if in.Links != 0 {
			t.Errorf("orphan inode %d has %d links", ino, in.Links)
		}
		ino = in.Dtime
	}
	return chain
}

// logLines collects a volume's log lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(f string, a ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
	l.mu.Unlock()
}

func (l *logLines) find(sub string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return s
		}
	}
	return ""
}

// releasedByOpen opens a copy of img read-write, as a daemon without
// e2fsck would, and checks that Open releases want orphans (saying so),
// that the list is then empty and that e2fsck finds no orphan left: with
// synced, e2fsck -fn finds nothing at all (img was a synced image, whose
// only loose ends are the orphans); without, e2fsck -p repairs the rest
// of a cut by itself.
func releasedByOpen(t *testing.T, img string, want int, synced bool) {
	t.Helper()
	cp := copyFile(t, img)
	var log logLines
	v, err := openImage(t, cp, openOpts{rw: true, allowUnclean: true, logf: log.logf})
	if err != nil {
		t.Fatal(err)
	}
	line := log.find("orphan list: released")
	switch {
	case want == 0 && line != "":
		t.Errorf("released orphans on a volume without any: %q", line)
	case want > 0 && !strings.Contains(line, fmt.Sprintf("released %d inodes", want)):
		t.Errorf("open's log says %q, want %d released", line, want)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if c := orphanChain(t, cp); len(c) != 0 {
		t.Errorf("orphan list after a writable open: %v", c)
	}
	if synced {
		fsckClean(t, cp)
		return
	}
	if out := fsckPreen(t, cp); strings.Contains(out, "orphaned inode") {
		t.Errorf("e2fsck -p still found orphans after the open:\n%s", out)
	}
}

// TestOrphanList: files unlinked while open are chained from the
// superblock (the newest first), leave the chain as they are freed (the
// head or not), and every image on the way is one e2fsck -p repairs by
// itself and fs/ext's writable open releases.
func TestOrphanList(t *testing.T) {
	for _, fsys := range []struct {
		typ string
		bs  int
	}{{"ext2", 1024}, {"ext4", 4096}} {
		t.Run(fsys.typ, func(t *testing.T) {
			src := t.TempDir()
			for _, name := range []string{"a", "b", "c"} {
				if err := os.WriteFile(filepath.Join(src, name), randBytes(uint64(name[0]), 20000), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			extra := []string{}
			if fsys.typ == "ext4" {
				extra = noJournal
			}
			img := mkfs(t, fsys.typ, fsys.bs, src, "8M", extra...)
			v := mustOpenImage(t, img, openOpts{rw: true})
			inos := map[string]uint32{}
			files := map[string]*File{}
			for _, name := range []string{"a", "b", "c"} {
				f, err := v.OpenWrite("/"+name, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				files[name], inos[name] = f, f.n.ino
				if err := v.Unlink("/" + name); err != nil {
					t.Fatal(err)
				}
			}
			step := func(when string, want ...string) {
				t.Helper()
				if err := v.Sync(); err != nil {
					t.Fatal(err)
				}
				cp := copyFile(t, img)
				var chain []uint32
				for _, n := range want {
					chain = append(chain, inos[n])
				}
				if got := orphanChain(t, cp); fmt.Sprint(got) != fmt.Sprint(chain) {
					t.Fatalf("%s: orphan chain %v, want %v", when, got, chain)
				}
				out := fsckPreen(t, copyFile(t, cp))
				if got := strings.Count(out, "orphaned inode"); got != len(want) {
					t.Errorf("%s: e2fsck -p cleared %d orphans, want %d:\n%s", when, got, len(want), out)
				}
				releasedByOpen(t, cp, len(want), true)
			}
			step("three unlinked while open", "c", "b", "a")
			// The middle one: its predecessor's i_dtime skips it.
			if err := files["b"].Close(); err != nil {
				t.Fatal(err)
			}
			step("the middle one closed", "c", "a")
			if err := files["c"].Close(); err != nil {
				t.Fatal(err)
			}
			step("the head closed", "a")
			if err := files["a"].Close(); err != nil {
				t.Fatal(err)
			}
			step("all closed")
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, img)
		})
	}
}

// TestOrphanTruncate: an orphan that still has links (a truncate a crash
// cut off: blocks past i_size) is cut to i_size by a writable open, as
// e2fsck does.
// With a journal (a kernel's crash left the list) the open releases it in
// a transaction.
func TestOrphanTruncate(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	for _, tc := range []struct {
		name string
		mkfs []string
	}{{"nojournal", noJournal}, {"journaled", nil}} {
		t.Run(tc.name, func(t *testing.T) { testOrphanTruncate(t, tc.mkfs) })
	}
}

func testOrphanTruncate(t *testing.T, mkfsArgs []string) {
	src := t.TempDir()
	content := randBytes(9, 70000)
	if err := os.WriteFile(filepath.Join(src, "f"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	img := mkfs(t, "ext4", 4096, src, "8M", mkfsArgs...)
	ino := inodeOf(t, img, "/f")
	for _, req := range []string{
		fmt.Sprintf("sif <%d> size 5000", ino),
		fmt.Sprintf("sif <%d> dtime 0", ino),
		fmt.Sprintf("ssv last_orphan %d", ino),
	} {
		if out, err := testenv.Output("debugfs", "-w", "-R", req, img); err != nil {
			t.Fatalf("debugfs %s: %v\n%s", req, err, out)
		}
	}
	releasedByOpen(t, img, 1, true)
	var log logLines
	v, err := openImage(t, img, openOpts{rw: true, logf: log.logf})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, "/f"); !bytes.Equal(got, content[:5000]) {
		t.Errorf("/f after the open: %d bytes, want the first 5000", len(got))
	}
	in, err := v.readInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	if in.Dtime != 0 || in.Links != 1 || in.Blocks != 16 { // two 4 KiB blocks
		t.Errorf("inode after the open: dtime %d links %d sectors %d", in.Dtime, in.Links, in.Blocks)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
}

// inodeOf returns the inode number path names in img.
func inodeOf(t *testing.T, img, path string) uint32 {
	t.Helper()
	v := mustOpenImage(t, img, openOpts{readOnly: true})
	defer v.Close()
	fi, err := v.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(fi.Ino)
}

// TestDeleteCrashWindows: the two ways a delete's sync can be cut between
// its writes: the inode (no links, on the orphan list) on the device
// without the directory block that drops its name, and the directory
// block without the rest of the metadata (bitmaps, counts). Both are
// images e2fsck -p repairs by itself, with the name gone. (Before the
// inode's write went first, a cut after the directory left it in use,
// linked and nameless: e2fsck -p refused it.)
func TestDeleteCrashWindows(t *testing.T) {
	windows := []struct {
		name  string
		write func(v *testVolume) error
	}{
		{"metadata, not the directory", func(v *testVolume) error {
			return v.MetaMapping().WriteAndWait(0, -1)
		}},
		{"the fresh inode and the directory, not the rest", func(v *testVolume) error {
			if err := v.syncFresh(); err != nil {
				return err
			}
			return v.syncDirs()
		}},
	}
	for _, w := range windows {
		t.Run(w.name, func(t *testing.T) {
			src := t.TempDir()
			if err := os.WriteFile(filepath.Join(src, "f"), randBytes(3, 30000), 0o644); err != nil {
				t.Fatal(err)
			}
			img := mkfs(t, "ext4", 4096, src, "8M", noJournal...)
			v := mustOpenImage(t, img, openOpts{rw: true})
			if err := v.Unlink("/f"); err != nil {
				t.Fatal(err)
			}
			if err := w.write(v); err != nil {
				t.Fatal(err)
			}
			if err := v.cfg.Device.Flush(); err != nil {
				t.Fatal(err)
			}
			crash := copyFile(t, img)
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, img)
			releasedByOpen(t, crash, len(orphanChain(t, crash)), false)
			fsckPreen(t, crash)
			c := mustOpenImage(t, crash, openOpts{})
			if _, err := c.Stat("/f"); !errors.Is(err, ErrNotFound) {
				t.Errorf("/f after the crash and e2fsck -p: %v", err)
			}
		})
	}
}
