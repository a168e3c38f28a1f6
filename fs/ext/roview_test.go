package ext

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
)

// count is the number the first line matching re captured (logLines,
// orphan_test.go), or -1.
func (l *logLines) count(re *regexp.Regexp) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if m := re.FindStringSubmatch(s); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return -1
}

var (
	shownRE    = regexp.MustCompile(`journal needs recovery: (\d+) transactions shown from the journal \(read-only, device not written\)`)
	replayedRE = regexp.MustCompile(`journal replayed: (\d+) transactions`)
)

// fileSum is the SHA-256 of the file at p.
func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// recoveryImage runs the journaled workload on a fresh volume (its
// journal with checksum v3 if csum), commits
// it (two File.Syncs: at least two transactions) and returns a copy of
// the image taken while the writer still has it open: the log holds the
// transactions, their home blocks are not all written, needs_recovery is
// set, as a kill -9 leaves it.
func recoveryImage(t *testing.T, typ string, bs int, csum bool) string {
	t.Helper()
	img := mkfs(t, typ, bs, "", "64M")
	if csum {
		checksumJournal(t, img)
	}
	w := modelOf(t, typ, img, "", openOpts{rw: true})
	w.open()
	journaledWorkload(w, 1)
	for i, p := range []string{"/d1/f1", "/after"} {
		if i > 0 {
			w.put(p, randBytes(uint64(i), 3*bs+17))
		}
		f, err := w.v.OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	img = copyFile(t, w.img)
	if !strings.Contains(headerField(dumpe2fsHeader(t, img), "Filesystem features"), "needs_recovery") {
		t.Fatal("the copy does not need recovery")
	}
	return img
}

// roView opens img read-only (the recovered view unless pre) with a cache
// of 16 pages, so the walk evicts and reads pages again through the
// overlay, and returns its tree and notices; the image must be byte for
// byte what it was.
func roView(t *testing.T, img string, pre bool) (map[string]treeEntry, *logLines) {
	t.Helper()
	before := fileSum(t, img)
	logs := &logLines{}
	v := mustOpenImage(t, img, openOpts{readOnly: true, preRecovery: pre, cache: 16 * 4096, logf: logs.logf})
	tree := snapshotTree(t, v.Volume)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, img) != before {
		t.Fatal("a read-only open changed the image")
	}
	return tree, logs
}

// replayedTree opens a copy of img read-write (replaying its journal) and
// returns its tree and the number of transactions replayed.
func replayedTree(t *testing.T, img string) (map[string]treeEntry, int) {
	t.Helper()
	logs := &logLines{}
	v := mustOpenImage(t, copyFile(t, img), openOpts{rw: true, logf: logs.logf})
	tree := snapshotTree(t, v.Volume)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return tree, logs.count(replayedRE)
}

// TestReadOnlyShowsRecovered: a volume left needing recovery by a writer
// that did not close, opened read-only, shows exactly the tree (names,
// types, sizes, bytes) a read-write open shows after replaying the
// journal, says so in one line, and leaves the image unchanged; the view
// as it is on the device differs (so the overlay is what shows it).
func TestReadOnlyShowsRecovered(t *testing.T) {
	for _, c := range journaledCases {
		t.Run(fmt.Sprintf("%s/%dk", c.typ, c.bs/1024), func(t *testing.T) {
			img := recoveryImage(t, c.typ, c.bs, false)
			view, logs := roView(t, img, false)
			replayed, tx := replayedTree(t, img)
			shown := logs.count(shownRE)
			if shown < 2 || shown != tx {
				t.Errorf("%d transactions shown read-only, %d replayed read-write: want the same, at least 2", shown, tx)
			}
			sameTree(t, "read-only view vs replayed", view, replayed)
			// The last transaction's new file is in the log only: the
			// volume as it is on the device does not have it (its walk
			// may even fail: a directory block home, the inode not).
			if _, ok := view["after"]; !ok {
				t.Fatal("the read-only view lacks the last transaction's file")
			}
			pre := mustOpenImage(t, img, openOpts{readOnly: true, preRecovery: true})
			if _, err := fs.Stat(pre.FS(), "after"); err == nil {
				t.Error("the volume as it is on the device already has the last transaction's file: the test proves nothing")
			}
		})
	}
}

// checksumJournal turns on checksum v3 in the journal of img, a fresh
// mke2fs image (mke2fs leaves the journal's features to the first mount;
// the kernel sets v3 with metadata_csum), so the writer checksums what it
// commits.
func checksumJournal(t *testing.T, img string) {
	t.Helper()
	v := mustOpenImage(t, img, openOpts{readOnly: true})
	log, err := v.JournalLog()
	bs := int64(v.BlockSize())
	v.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, _ := log.Map(0)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw := make([]byte, jbd2.SuperblockSize)
	if _, err := f.ReadAt(raw, int64(p)*bs); err != nil {
		t.Fatal(err)
	}
	sb, err := jbd2.ParseSuperblock(raw)
	if err != nil {
		t.Fatal(err)
	}
	sb.Incompat |= jbd2.IncompatCsumV3
	sb.ChecksumType = jbd2.ChecksumCRC32C
	if _, err := f.WriteAt(sb.Encode(), int64(p)*bs); err != nil {
		t.Fatal(err)
	}
}

// lastCommit returns the image offset of the commit block of the log's
// newest transaction.
func lastCommit(t *testing.T, img string) int64 {
	t.Helper()
	v := mustOpenImage(t, img, openOpts{readOnly: true, preRecovery: true})
	log, err := v.JournalLog()
	bs := int64(v.BlockSize())
	v.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	best, bestSeq := int64(-1), uint32(0)
	for lblk := uint64(1); lblk < log.Len(); lblk++ {
		p, _ := log.Map(lblk)
		h := jbd2.ParseHeader(b[int64(p)*bs:])
		if h.Magic == jbd2.Magic && h.Type == jbd2.BlockCommit && (best < 0 || int32(h.Sequence-bestSeq) > 0) {
			best, bestSeq = int64(p)*bs, h.Sequence
		}
	}
	if best < 0 {
		t.Fatal("no commit block in the log")
	}
	return best
}

// TestReadOnlyCorruptCommit: a bad checksum in the newest transaction's
// commit block ends the log before it for the read-only scan exactly
// where replay ends it: one transaction fewer, the same tree.
func TestReadOnlyCorruptCommit(t *testing.T) {
	img := recoveryImage(t, "ext4", 4096, true)
	good, goodTx := replayedTree(t, img)
	off := lastCommit(t, img)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sec [8]byte
	if _, err := f.ReadAt(sec[:], off+48); err != nil { // commit_sec: under the v3 checksum
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(sec[:], binary.BigEndian.Uint64(sec[:])^0xFF)
	if _, err := f.WriteAt(sec[:], off+48); err != nil {
		t.Fatal(err)
	}
	f.Close()
	view, logs := roView(t, img, false)
	replayed, tx := replayedTree(t, img)
	if shown := logs.count(shownRE); shown != tx || tx < 1 {
		t.Errorf("%d transactions shown read-only, %d replayed: want the same, at least 1", shown, tx)
	}
	if logs.find("the log ended at a transaction that failed its checksums") == "" {
		t.Errorf("no checksum notice in %q", logs.lines)
	}
	if tx != goodTx-1 {
		t.Errorf("replayed %d transactions of a log whose last commit is corrupt, %d of the intact one: want one fewer", tx, goodTx)
	}
	sameTree(t, "read-only view vs replayed, corrupt last commit", view, replayed)
	if _, ok := good["after"]; !ok {
		t.Error("the intact log's replay lacks the last transaction's file")
	}
}

// TestReadOnlyRecoveredViewLimit: a journal whose unreplayed blocks take
// more than the limit refuses the read-only open (ErrNeedsRecovery, saying
// what to do) and leaves the image as it was.
func TestReadOnlyRecoveredViewLimit(t *testing.T) {
	img := recoveryImage(t, "ext4", 4096, false)
	before := fileSum(t, img)
	old := recoveredViewLimit
	recoveredViewLimit = 4 * 4096
	t.Cleanup(func() { recoveredViewLimit = old })
	_, err := openImage(t, img, openOpts{readOnly: true})
	if !errors.Is(err, ErrNeedsRecovery) || !errors.Is(err, jbd2.ErrScanLimit) || !strings.Contains(err.Error(), "run e2fsck or open read-write") {
		t.Fatalf("read-only open past the limit: %v", err)
	}
	if fileSum(t, img) != before {
		t.Fatal("the refused open changed the image")
	}
}
