package ext

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// treeEntry is what a file tree comparison looks at: type and permission
// bits, size, and the content's hash (a symbolic link's target).
type treeEntry struct {
	mode fs.FileMode
	size int64
	sum  [32]byte
}

func (e treeEntry) String() string { return fmt.Sprintf("%v %d %x", e.mode, e.size, e.sum[:4]) }

// snapshotTree reads every name under the volume's root through fs/ext.
func snapshotTree(t *testing.T, v *Volume) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	fsys := v.FS()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "lost+found" {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode(), size: fi.Size()}
		switch {
		case fi.Mode().IsRegular():
			b, err := fs.ReadFile(fsys, p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256(b)
		case fi.Mode().Type() == fs.ModeSymlink:
			target, err := v.Readlink("/" + p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256([]byte(target))
		case fi.IsDir():
			e.size = 0 // directory sizes are block counts, not content
		}
		out[p] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	return out
}

// snapshotDir reads a directory tree of the host (the kernel's mount) the
// same way.
func snapshotDir(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "lost+found" {
			return fs.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode(), size: fi.Size()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256(b)
		case fi.Mode().Type() == fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256([]byte(target))
		case fi.IsDir():
			e.size = 0
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree fails t with the first differences between two snapshots.
func sameTree(t *testing.T, what string, got, want map[string]treeEntry) {
	t.Helper()
	var diffs []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[p]; !ok {
			diffs = append(diffs, p+": missing")
		} else if g != want[p] {
			diffs = append(diffs, fmt.Sprintf("%s: %v, want %v", p, g, want[p]))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, p+": unexpected")
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("%s: %d differences (of %d names), first: %s", what, len(diffs), len(want), strings.Join(diffs[:min(5, len(diffs))], "; "))
	}
}

// kernelWorkload creates, overwrites, deletes, renames and links files
// and directories under mnt; every step's result stays in the journal
// after the final sync.
func kernelWorkload(t *testing.T, mnt string, round int) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	base := filepath.Join(mnt, fmt.Sprintf("r%d", round))
	must(os.MkdirAll(filepath.Join(base, "a", "b", "c"), 0o755))
	must(os.Mkdir(filepath.Join(base, "gone"), 0o700))
	for i := range 24 {
		dir := filepath.Join(base, []string{"", "a", "a/b", "a/b/c"}[i%4])
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%02d", i)), randBytes(uint64(round*100+i), 1000+i*3777))
	}
	for i := 0; i < 24; i += 3 { // overwrite, shorter and longer
		dir := filepath.Join(base, []string{"", "a", "a/b", "a/b/c"}[i%4])
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%02d", i)), randBytes(uint64(round*100+i+50), 500+i*9000))
	}
	for i := 1; i < 24; i += 5 {
		dir := filepath.Join(base, []string{"", "a", "a/b", "a/b/c"}[i%4])
		must(os.Remove(filepath.Join(dir, fmt.Sprintf("f%02d", i))))
	}
	must(os.Rename(filepath.Join(base, "f00"), filepath.Join(base, "a", "b", "moved")))
	must(os.Rename(filepath.Join(base, "a", "f05"), filepath.Join(base, "f04"))) // replaces f04
	must(os.Rename(filepath.Join(base, "a", "b", "c"), filepath.Join(base, "c2")))
	must(os.Remove(filepath.Join(base, "gone")))
	must(os.Symlink("a/b/moved", filepath.Join(base, "link")))
	must(os.Symlink(strings.Repeat("long/", 30), filepath.Join(base, "longlink")))
	must(os.Link(filepath.Join(base, "f08"), filepath.Join(base, "hard")))
}

// dumpe2fsHeader returns dumpe2fs -h's output for img.
func dumpe2fsHeader(t *testing.T, img string) string {
	t.Helper()
	testenv.RequireTool(t, "dumpe2fs")
	out, err := testenv.Output("dumpe2fs", "-h", img)
	if err != nil {
		t.Fatalf("dumpe2fs -h: %v\n%s", err, out)
	}
	return out
}

// headerField returns the value of "name:" in dumpe2fs output.
func headerField(out, name string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*)$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// findLine returns the submatches of the first notice rec logged that
// matches re, nil if none does.
func findLine(rec *logRecorder, re string) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, s := range rec.lines {
		if m := regexp.MustCompile(re).FindStringSubmatch(s); m != nil {
			return m
		}
	}
	return nil
}

// replayOpen opens img read-write (replaying its journal) and returns the
// numbers of the replay log line: transactions and blocks.
func replayOpen(t *testing.T, img string) (*testVolume, int, int) {
	t.Helper()
	rec := &logRecorder{}
	v := mustOpenImage(t, img, openOpts{rw: true, logf: rec.logf})
	m := findLine(rec, `journal replayed: (\d+) transactions .*, (\d+) blocks written home`)
	if m == nil {
		t.Fatalf("no replay line logged:\n%s", rec)
	}
	t.Log(m[0])
	tx, _ := strconv.Atoi(m[1])
	blocks, _ := strconv.Atoi(m[2])
	return v, tx, blocks
}

// kernelJournalCases are the journal formats the kernel writes: checksum
// v3 with 64-bit tags (mke2fs's default ext4), checksum v1 (journal_checksum
// without metadata_csum) with 32-bit tags on 1 KiB blocks, and none; and
// ext3, whose journal inode maps its blocks with indirect blocks.
var kernelJournalCases = []struct {
	name     string
	fsType   string
	bs       int
	mkfs     []string
	mountOpt string
	feature  string // in dumpe2fs's "Journal features"
}{
	{"csum-v3-64bit", "ext4", 4096, []string{"-O", "64bit,metadata_csum"}, "", "journal_checksum_v3"},
	{"csum-v1-1k", "ext4", 1024, []string{"-O", "^64bit,^metadata_csum"}, "journal_checksum", "journal_checksum"},
	{"plain", "ext4", 4096, []string{"-O", "^64bit,^metadata_csum"}, "", ""},
	{"ext3", "ext3", 4096, nil, "", ""},
}

// TestJournalReplayKernel: the kernel writes a journal (a mounted ext4
// with a workload, synced, copied while still mounted); opening the copy
// read-write replays it, and the tree then equals both what the kernel
// showed and what e2fsck -fy makes of another copy, and e2fsck -fn finds
// nothing wrong with ours.
func TestJournalReplayKernel(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mount")
	testenv.RequireTool(t, "e2fsck")
	for _, c := range kernelJournalCases {
		t.Run(c.name, func(t *testing.T) {
			extra := append([]string{"-E", "lazy_itable_init=0,lazy_journal_init=0"}, c.mkfs...)
			img := mkfs(t, c.fsType, c.bs, "", "64M", extra...)
			crash, model := kernelCrashImage(t, img, c.fsType, c.mountOpt)
			hdr := dumpe2fsHeader(t, crash)
			if !strings.Contains(headerField(hdr, "Filesystem features"), "needs_recovery") {
				t.Fatalf("the copy does not need recovery:\n%s", hdr)
			}
			if start := headerField(hdr, "Journal start"); start == "0" || start == "" {
				t.Fatalf("the copy's journal is empty (start %q)", start)
			}
			if c.feature != "" && !strings.Contains(headerField(hdr, "Journal features"), c.feature) {
				t.Fatalf("journal features %q, want %s", headerField(hdr, "Journal features"), c.feature)
			}
			byFsck := copyFile(t, crash)
			out, err := testenv.Output("e2fsck", "-fy", byFsck)
			t.Logf("e2fsck -fy of the other copy: %v\n%s", err, out)

			view, _ := roView(t, crash, false)
			sameTree(t, "read-only view (the kernel's journal shown, not replayed) vs the kernel's view", view, model)
			v, tx, blocks := replayOpen(t, crash)
			if tx == 0 || blocks == 0 {
				t.Fatalf("replayed %d transactions, %d blocks: want some", tx, blocks)
			}
			if sb := v.Superblock(); sb.HasIncompat(IncompatRecover) {
				t.Fatal("needs_recovery still set after the replay")
			}
			ours := snapshotTree(t, v.Volume)
			v.Close()
			sameTree(t, "replayed by fs/ext vs the kernel's view", ours, model)
			fsckClean(t, crash)
			theirs := snapshotTree(t, mustOpenImage(t, byFsck, openOpts{readOnly: true}).Volume)
			sameTree(t, "replayed by fs/ext vs by e2fsck", ours, theirs)
		})
	}
}

// kernelCrashImage mounts img with the kernel's fsType driver (extra mount
// options opt),
// runs the workload, syncs, snapshots the tree as the kernel shows it and
// copies the image while it is still mounted: the journal holds committed
// transactions and needs_recovery is set, as after a crash. The mount is
// undone before it returns.
func kernelCrashImage(t *testing.T, img, fsType, opt string) (string, map[string]treeEntry) {
	t.Helper()
	dev := testenv.AttachLoop(t, img)
	mnt := t.TempDir()
	opts := "commit=300,noinit_itable"
	if opt != "" {
		opts += "," + opt
	}
	if out, err := testenv.Output("mount", "-t", fsType, "-o", opts, dev, mnt); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	mounted := true
	unmount := func() {
		if mounted {
			mounted = false
			if err := testenv.Unmount(mnt); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(unmount)
	for round := range 3 {
		kernelWorkload(t, mnt, round)
		testenv.Run(t, "sync", "-f", mnt)
	}
	model := snapshotDir(t, mnt)
	crash := copyFile(t, img)
	unmount()
	return crash, model
}

// TestJournalReadOnlyOpenDoesNotReplay: a read-only open of a volume that
// needs recovery leaves the device alone and says so.
func TestJournalReadOnlyOpenDoesNotReplay(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mount")
	img := mkfs(t, "ext4", 4096, "", "32M", "-E", "lazy_itable_init=0,lazy_journal_init=0")
	crash, _ := kernelCrashImage(t, img, "ext4", "")
	before, err := os.ReadFile(crash)
	if err != nil {
		t.Fatal(err)
	}
	rec := &logRecorder{}
	v := mustOpenImage(t, crash, openOpts{readOnly: true, logf: rec.logf})
	snapshotTree(t, v.Volume)
	v.Close()
	if findLine(rec, `journal needs recovery`) == nil {
		t.Errorf("no notice of the unreplayed journal:\n%s", rec)
	}
	after, err := os.ReadFile(crash)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("a read-only open changed the image (first difference at byte %d)", mismatch(before, after))
	}
}

// TestJournalExternalRefused: a volume whose journal is on another device
// is refused for read-write by name while it needs recovery.
func TestJournalExternalRefused(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "debugfs")
	dir := t.TempDir()
	jdev := filepath.Join(dir, "journal.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-O", "journal_dev", "-b", "4096", jdev, "4M")
	loop := testenv.AttachLoop(t, jdev) // mke2fs -J device= wants a block device
	img := filepath.Join(dir, "fs.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-J", "device="+loop, img, "32M")
	testenv.Run(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
	_, err := openImage(t, img, openOpts{rw: true})
	if !errors.Is(err, ErrNeedsRecovery) || !strings.Contains(err.Error(), "external") {
		t.Fatalf("open: %v, want ErrNeedsRecovery naming the external journal", err)
	}
}

// lastCommitBlock follows the log of the image on dev and returns the
// journal block of the last commit block.
func lastCommitBlock(t *testing.T, dev *fileDev, log jbd2.Log) uint64 {
	t.Helper()
	p0, _ := log.Map(0)
	sb, err := jbd2.ParseSuperblock(dev.block(p0))
	if err != nil {
		t.Fatal(err)
	}
	l := jbd2.LayoutOf(sb)
	pos, tid, last := uint64(sb.Start), sb.Sequence, uint64(0)
	for range log.Len() {
		p, _ := log.Map(pos)
		b := dev.block(p)
		h := jbd2.ParseHeader(b)
		if h.Magic != jbd2.Magic || h.Sequence != tid {
			break
		}
		n := uint64(1)
		switch h.Type {
		case jbd2.BlockDescriptor:
			n += uint64(len(l.ParseTags(b)))
		case jbd2.BlockCommit:
			last, tid = pos, tid+1
		}
		pos += n
		if pos >= uint64(sb.MaxLen) {
			pos = uint64(sb.First) + pos - uint64(sb.MaxLen)
		}
	}
	if last == 0 {
		t.Fatal("no commit block in the log")
	}
	return last
}

// TestJournalCorruptLastCommit: a kernel journal whose last commit block
// has a bad checksum (checksum v3, and v1) ends before that transaction,
// for us as for e2fsck: one transaction fewer is replayed, and the trees
// agree.
func TestJournalCorruptLastCommit(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mount")
	testenv.RequireTool(t, "e2fsck")
	for _, c := range kernelJournalCases[:2] { // the checksummed ones
		t.Run(c.name, func(t *testing.T) {
			extra := append([]string{"-E", "lazy_itable_init=0,lazy_journal_init=0"}, c.mkfs...)
			img := mkfs(t, c.fsType, c.bs, "", "64M", extra...)
			crash, _ := kernelCrashImage(t, img, c.fsType, c.mountOpt)
			_, full, _ := replayOpen(t, copyFile(t, crash))

			log, _ := imageJournal(t, crash)
			dev := openFileDev(t, crash, c.bs)
			commit, _ := log.Map(lastCommitBlock(t, dev, log))
			b := dev.block(commit)
			b[0x10] ^= 0x5A // h_chksum[0]
			if err := dev.WriteBlock(commit, b); err != nil {
				t.Fatal(err)
			}
			byFsck := copyFile(t, crash)
			out, _ := testenv.Output("e2fsck", "-fy", byFsck)
			t.Logf("e2fsck -fy:\n%s", out)

			rec := &logRecorder{}
			v := mustOpenImage(t, crash, openOpts{rw: true, logf: rec.logf})
			m := findLine(rec, `journal replayed: (\d+) transactions`)
			if m == nil || m[1] != strconv.Itoa(full-1) {
				t.Fatalf("replayed %v transactions, want %d (one fewer than the intact log's):\n%s", m, full-1, rec)
			}
			if findLine(rec, `failed its checksums`) == nil {
				t.Errorf("no notice of the failed transaction:\n%s", rec)
			}
			ours := snapshotTree(t, v.Volume)
			v.Close()
			theirs := snapshotTree(t, mustOpenImage(t, byFsck, openOpts{readOnly: true}).Volume)
			sameTree(t, "replayed by fs/ext vs by e2fsck", ours, theirs)
		})
	}
}

// TestJournalReplayInterrupted: recovery cut short by a failing device at
// each step of its order (the replayed blocks, the journal superblock that
// empties the log, the file-system superblock that drops needs_recovery)
// leaves a volume the next read-write open recovers to the very bytes an
// uninterrupted recovery leaves.
func TestJournalReplayInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mount")
	img := mkfs(t, "ext4", 4096, "", "64M", "-E", "lazy_itable_init=0,lazy_journal_init=0")
	crash, _ := kernelCrashImage(t, img, "ext4", "")
	oneShot := copyFile(t, crash)
	v, _, _ := replayOpen(t, oneShot)
	v.Close()
	want, err := os.ReadFile(oneShot)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := imageJournal(t, crash)
	jsb, _ := log.Map(0)
	const bs = 4096
	for _, c := range []struct {
		name     string
		off, end int64
	}{
		{"every write", 0, 0},
		{"journal superblock", int64(jsb) * bs, int64(jsb+1) * bs},
		{"file-system superblock", superblockOffset, superblockOffset + superblockSize},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := copyFile(t, crash)
			var fr *faultring.Ring
			_, err := openImage(t, img, openOpts{rw: true, wrap: func(inner uring.Ring) uring.Ring {
				fr = faultring.New(inner, 1)
				fr.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev, uring.OpWrite), Off: c.off, End: c.end,
					Fault: faultring.Fault{Errno: syscall.EIO}})
				return fr
			}})
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("open with failing writes: %v, want EIO", err)
			}
			if fr.FaultStats().Errors == 0 {
				t.Fatal("no write failed")
			}
			v := mustOpenImage(t, img, openOpts{rw: true})
			if sb := v.Superblock(); sb.HasIncompat(IncompatRecover) {
				t.Fatal("needs_recovery still set")
			}
			v.Close()
			got, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				i := mismatch(got, want)
				t.Fatalf("the interrupted and resumed recovery differs from a single one at byte %d (block %d)", i, i/bs)
			}
		})
	}
}
