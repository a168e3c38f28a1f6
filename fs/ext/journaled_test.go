package ext

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// journaledCases are plain mke2fs volumes with a journal, as the kernel
// makes them.
var journaledCases = []struct {
	typ string
	bs  int
}{{"ext4", 4096}, {"ext4", 1024}, {"ext3", 1024}, {"ext3", 4096}}

// journaledWorkload changes w's volume with every kind of write the
// writer has: files created, written, grown into indirect or extent
// blocks, truncated (freeing those blocks), unlinked, directories made and
// removed, renames and a replace. round varies names and bytes.
func journaledWorkload(w *wenv, round int) {
	bs := w.v.BlockSize()
	d := fmt.Sprintf("/d%d", round)
	w.mkdir(d)
	w.mkdir(d + "/sub")
	for i := range 12 {
		w.put(fmt.Sprintf("%s/f%d", d, i), randBytes(uint64(round*100+i), (i*7+1)*bs/3))
	}
	w.put(d+"/big", randBytes(uint64(round*100+50), 300*bs+17))
	w.writeAt(d+"/big", int64(2000*bs), randBytes(uint64(round*100+51), bs+5))
	w.truncate(d+"/big", int64(20*bs+3))
	w.unlink(d + "/f3")
	w.rename(d+"/f4", d+"/sub/f4")
	w.rename(d+"/f5", d+"/f6")
	w.mkdir(d + "/gone")
	w.rmdir(d + "/gone")
	for i := range 40 {
		w.put(fmt.Sprintf("%s/sub/many-%03d", d, i), randBytes(uint64(round*1000+i), 100+i))
	}
	for i := range 10 {
		w.unlink(fmt.Sprintf("%s/sub/many-%03d", d, i*3))
	}
	if _, _, err := w.v.ReplaceFile(d+"/f7", strings.NewReader("replaced"), 0o644, nil); err != nil {
		w.t.Fatal(err)
	}
	w.files[d+"/f7"] = []byte("replaced")
	w.dirs[StagingDir] = true
}

// TestJournaledWrites: writes to plain ext3/ext4 volumes with a journal
// go through it: the volume opens writable, a commit leaves well-formed
// transactions in the log (debugfs logdump on a copy taken after a
// File.Sync), and after Close e2fsck -fn finds nothing, the journal is
// empty and needs_recovery clear, and debugfs and the kernel read the
// model's bytes.
func TestJournaledWrites(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	for _, c := range journaledCases {
		t.Run(fmt.Sprintf("%s/%dk", c.typ, c.bs/1024), func(t *testing.T) {
			w := newWenv(t, c.typ, c.bs, "64M", "")
			journaledWorkload(w, 1)
			f, err := w.v.OpenFile("/d1/f1")
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			mid := copyFile(t, w.img)
			midHdr := dumpe2fsHeader(t, mid)
			if !strings.Contains(midHdr, "needs_recovery") || headerField(midHdr, "Journal start") == "0" {
				t.Errorf("after a commit: needs_recovery not set or the log empty:\n%s", midHdr)
			}
			checkLogdump(t, mid, 0)
			w.verify()
			journaledWorkload(w, 2)
			w.verify()
			w.close()
			hdr := dumpe2fsHeader(t, w.img)
			if strings.Contains(hdr, "needs_recovery") {
				t.Errorf("after Close the superblock still says needs_recovery")
			}
			if st := headerField(hdr, "Filesystem state"); st != "clean" {
				t.Errorf("after Close: state %q", st)
			}
			if !strings.Contains(hdr, "has_journal") {
				t.Errorf("the journal feature is gone")
			}
			if js := headerField(hdr, "Journal start"); js != "0" {
				t.Errorf("after Close the log starts at %q, want 0 (empty)", js)
			}
		})
	}
}

// TestJournaledOrphans: a file unlinked while open on a journaled volume
// is on the orphan list in what a crash leaves, whether the crash came
// after a checkpoint (the list home) or after a commit only (the list in
// the log: replay first); a writable open replays, releases it, commits,
// and leaves an image e2fsck -fn finds clean.
func TestJournaledOrphans(t *testing.T) {
	for _, tc := range []struct {
		name string
		// cut makes the unlink durable, as far as a crash goes.
		cut func(v *testVolume, other *File) error
		// home: the list is on the device outside the log.
		home bool
	}{
		{"checkpointed", func(v *testVolume, _ *File) error { return v.Sync() }, true},
		{"committed", func(_ *testVolume, other *File) error { return other.Sync() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkfs(t, "ext4", 4096, "", "16M")
			v := mustOpenImage(t, img, openOpts{rw: true})
			var inos []uint32
			var open []*File
			for _, name := range []string{"/a", "/b"} {
				f, err := v.Create(name, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(randBytes(uint64(name[1]), 30000), 0); err != nil {
					t.Fatal(err)
				}
				open = append(open, f)
				inos = append(inos, f.n.ino)
			}
			other, err := v.Create("/other", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, other)
			for _, name := range []string{"/a", "/b"} {
				if err := v.Unlink(name); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := other.WriteAt([]byte("x"), 0); err != nil {
				t.Fatal(err)
			}
			if err := tc.cut(v, other); err != nil {
				t.Fatal(err)
			}
			cut := copyFile(t, img)
			if tc.home {
				want := []uint32{inos[1], inos[0]}
				if got := orphanChain(t, copyFile(t, cut)); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("orphan chain in the cut %v, want %v", got, want)
				}
			}
			releasedByOpen(t, cut, 2, true)
			for _, f := range open {
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			if c := orphanChain(t, img); len(c) != 0 {
				t.Errorf("orphan list after Close: %v", c)
			}
			fsckClean(t, img)
		})
	}
}

// TestJournaledTimerCommit: changes are committed every
// journalCommitInterval without any Sync: a copy of the image taken then
// needs recovery, and its replay (by us and by e2fsck) has the file.
func TestJournaledTimerCommit(t *testing.T) {
	setCommitInterval(t, 50*time.Millisecond)
	img := mkfs(t, "ext4", 4096, "", "16M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	data := randBytes(5, 10000)
	f, err := v.Create("/timed", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var crash string
	for deadline := time.Now().Add(10 * time.Second); ; {
		time.Sleep(20 * time.Millisecond)
		crash = copyFile(t, img)
		if headerField(dumpe2fsHeader(t, crash), "Journal start") != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no commit reached the log without a Sync")
		}
	}
	// The commit that started the log may not be the one with the file
	// yet: wait for the next interval and copy again.
	time.Sleep(200 * time.Millisecond)
	crash = copyFile(t, img)
	byFsck := copyFile(t, crash)
	if out, err := testenv.Output("e2fsck", "-fy", byFsck); err != nil && !testenv.OnlySummaryFixed(err, out) {
		t.Fatalf("e2fsck -fy: %v\n%s", err, out)
	}
	readBack(t, mustOpenImage(t, byFsck, openOpts{readOnly: true}), "/timed", data)
	cv, _, _ := replayOpen(t, crash)
	readBack(t, cv, "/timed", data)
}

// TestJournaledAbort: a log write that fails aborts the journal: that
// Sync and every later one fail with ErrJournalAborted (EIO), nothing of
// the failed transaction goes home, Close reports it and leaves
// needs_recovery set, and the next open replays the log to the last
// commit, which e2fsck -fn finds consistent and which holds the file
// synced before the failure.
func TestJournaledAbort(t *testing.T) {
	img := mkfs(t, "ext4", 4096, "", "16M")
	var fr *faultring.Ring
	v := mustOpenImage(t, img, openOpts{rw: true, wrap: func(r uring.Ring) uring.Ring {
		fr = faultring.New(r, 1)
		return fr
	}})
	before := randBytes(8, 20000)
	writeSynced := func(p string, b []byte) error {
		f, err := v.Create(p, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, 0); err != nil {
			t.Fatal(err)
		}
		return f.Sync()
	}
	if err := writeSynced("/before", before); err != nil {
		t.Fatal(err)
	}
	log, err := v.JournalLog()
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(v.BlockSize())
	for _, e := range log.Extents() {
		fr.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev, uring.OpWrite), Off: int64(e.Physical) * bs,
			End: int64(e.Physical+e.Len) * bs, Fault: faultring.Fault{Errno: syscall.EIO}})
	}
	if err := writeSynced("/after", randBytes(9, 30000)); !errors.Is(err, ErrJournalAborted) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync with the log failing: %v, want ErrJournalAborted", err)
	}
	if err := v.Sync(); !errors.Is(err, ErrJournalAborted) {
		t.Fatalf("a later Sync: %v, want ErrJournalAborted", err)
	}
	if err := v.Close(); !errors.Is(err, ErrJournalAborted) {
		t.Fatalf("Close: %v, want ErrJournalAborted", err)
	}
	if !strings.Contains(dumpe2fsHeader(t, img), "needs_recovery") {
		t.Fatal("an aborted journal's volume does not say needs_recovery")
	}
	rv, _, _ := replayOpen(t, img)
	readBack(t, rv, "/before", before)
	if err := rv.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
}

// TestJournaledConcurrent: writers creating, writing, renaming and
// unlinking files in parallel while commits run every few milliseconds
// and another goroutine syncs: no commit deadlocks with the handles, and
// the volume closes consistent (e2fsck -fn) holding what each writer left.
func TestJournaledConcurrent(t *testing.T) {
	setCommitInterval(t, 3*time.Millisecond)
	img := mkfs(t, "ext4", 1024, "", "32M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	const writers, rounds = 4, 40
	want := make([]map[string][]byte, writers)
	done := make(chan struct{})
	syncErr := make(chan error, 1)
	go func() {
		defer close(syncErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := v.Sync(); err != nil {
				syncErr <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	errs := make(chan error, writers)
	for w := range writers {
		want[w] = map[string][]byte{}
		go func() {
			errs <- concurrentWriter(v, w, rounds, want[w])
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-syncErr; err != nil {
		t.Fatal(err)
	}
	for _, m := range want {
		for p, b := range m {
			readBack(t, v, p, b)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
}

// concurrentWriter is one writer of TestJournaledConcurrent: in its own
// directory it creates files, rewrites some, renames and unlinks others;
// want gets what must be there at the end.
func concurrentWriter(v *testVolume, w, rounds int, want map[string][]byte) error {
	d := fmt.Sprintf("/w%d", w)
	if err := v.Mkdir(d, 0o755); err != nil {
		return err
	}
	for i := range rounds {
		p := fmt.Sprintf("%s/f%d", d, i)
		b := randBytes(uint64(w*1000+i), 1+(i*997)%9000)
		f, err := v.Create(p, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(b, 0); err != nil {
			return err
		}
		if i%5 == 0 {
			if err := f.Sync(); err != nil {
				return err
			}
		}
		f.Close()
		want[p] = b
		switch i % 4 {
		case 1:
			if err := v.Unlink(p); err != nil {
				return err
			}
			delete(want, p)
		case 2:
			q := p + "-moved"
			if err := v.Rename(p, q); err != nil {
				return err
			}
			want[q] = b
			delete(want, p)
		}
	}
	return nil
}

// TestJournaledReplaceOneCommit: ReplaceFile on a journaled volume is the
// staged file's commit (its File.Sync) and one commit of the rename that
// also drops the replaced inode's link (replaceJournaled), not the
// journal-less steps of replace_link.go (a grave, then a sync per step).
// A File open on the old content keeps reading it, and the old inode is
// on the orphan list in the commit, released at its last close.
func TestJournaledReplaceOneCommit(t *testing.T) {
	setCommitInterval(t, time.Hour) // no timer commits in between
	img := mkfs(t, "ext4", 4096, "", "16M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	first, second := randBytes(21, 20000), randBytes(22, 9000)
	if _, _, err := v.ReplaceFile("/f", bytes.NewReader(first), 0o644, nil); err != nil {
		t.Fatal(err)
	}
	f, err := v.OpenFile("/f")
	if err != nil {
		t.Fatal(err)
	}
	oldIno := f.n.ino
	seq0 := v.jnl.j.Sequence()
	if _, existed, err := v.ReplaceFile("/f", bytes.NewReader(second), 0o644, nil); err != nil || !existed {
		t.Fatalf("ReplaceFile: existed %v, %v", existed, err)
	}
	if commits := v.jnl.j.Sequence() - seq0; commits != 2 {
		t.Errorf("ReplaceFile over a file took %d commits, want 2 (the staged file's, the rename's)", commits)
	}
	if got := readAll(t, v, "/f"); !bytes.Equal(got, second) {
		t.Errorf("/f holds %d bytes, want the second content", len(got))
	}
	buf := make([]byte, len(first))
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, first) {
		t.Errorf("the open File lost the old content: %v", err)
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	if c := orphanChain(t, copyFile(t, img)); fmt.Sprint(c) != fmt.Sprint([]uint32{oldIno}) {
		t.Errorf("orphan list with the old file open: %v, want [%d]", c, oldIno)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if c := orphanChain(t, img); len(c) != 0 {
		t.Errorf("orphan list after Close: %v", c)
	}
	fsckClean(t, img)
}

// setCommitInterval sets the journal's commit timer for the test's volumes
// and puts it back when the test ends.
func setCommitInterval(t *testing.T, d time.Duration) {
	old := journalCommitInterval
	journalCommitInterval = d
	t.Cleanup(func() { journalCommitInterval = old })
}
