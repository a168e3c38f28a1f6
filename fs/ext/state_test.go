package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
)

// superState is what the superblock on an image says of its mounts.
type superState struct {
	state    uint16
	mntCount uint16
	mtime    uint32
}

func readSuperState(t *testing.T, img string) superState {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, superblockSize)
	if _, err := f.ReadAt(b, superblockOffset); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	return superState{le.Uint16(b[sbStateOff:]), le.Uint16(b[sbMntCountOff:]), le.Uint32(b[sbMtimeOff:])}
}

// copyFile copies img to a new file: the image as a crash right now would
// leave it.
func copyFile(t *testing.T, img string) string {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "crash.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// e2fsckQuick runs e2fsck -n without -f and reports whether it only said
// "clean" (skipping the check) rather than checking; a check that finds
// problems fails t.
func e2fsckQuick(t *testing.T, img string) (skipped bool) {
	t.Helper()
	out, err := testenv.Output("e2fsck", "-n", img)
	if err != nil {
		t.Fatalf("e2fsck -n: %v\n%s", err, out)
	}
	return strings.Contains(out, ": clean, ")
}

// dumpe2fsState is the "Filesystem state" dumpe2fs -h reports.
func dumpe2fsState(t *testing.T, img string) string {
	t.Helper()
	out := testenv.Run(t, "dumpe2fs", "-h", img)
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Filesystem state:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("dumpe2fs -h: no state\n%s", out)
	return ""
}

// logRecorder collects a volume's notices.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestCleanState: a writing session marks the superblock as a mount does
// (not clean, one more mount, s_mtime now) at its first change, and Close
// restores the state found at open. A session killed after a Sync leaves
// an unclean image that read-write opens refuse (ErrUnclean) unless
// AllowUnclean; such a session's Close leaves it unclean, so e2fsck -n
// still checks it; after e2fsck it opens and closes clean again.
func TestCleanState(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	testenv.RequireTool(t, "dumpe2fs")
	for _, c := range []struct {
		typ   string
		bs    int
		extra []string
	}{{"ext2", 1024, nil}, {"ext4", 4096, noJournal}} {
		t.Run(c.typ, func(t *testing.T) {
			testCleanState(t, mkfs(t, c.typ, c.bs, "", "16M", c.extra...))
		})
	}
}

func testCleanState(t *testing.T, img string) {
	orig := readSuperState(t, img)
	if orig.state != stateValid {
		t.Fatalf("fresh image: state %#x", orig.state)
	}
	put := func(v *testVolume, name string) {
		t.Helper()
		f, err := v.Create(name, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(randBytes(9, 10000), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}

	// A session that changes nothing leaves the image as it was.
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	v := mustOpenImage(t, img, openOpts{rw: true})
	if !v.WasClean() {
		t.Fatal("fresh image: WasClean false")
	}
	if _, err := v.Stat("/lost+found"); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Fatal("a session without changes changed the image")
	}

	// A session that writes, "killed" after its Sync.
	start := time.Now().Unix()
	v = mustOpenImage(t, img, openOpts{rw: true})
	put(v, "/a")
	crash := copyFile(t, img)
	st := readSuperState(t, crash)
	if st.state&stateValid != 0 || st.mntCount != orig.mntCount+1 || int64(st.mtime) < start || int64(st.mtime) > time.Now().Unix() {
		t.Fatalf("during a session: %+v (at open %+v, session started %d)", st, orig, start)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readSuperState(t, img); st.state != stateValid {
		t.Fatalf("after Close: state %#x", st.state)
	}
	if !e2fsckQuick(t, img) {
		t.Fatal("e2fsck -n checked a cleanly closed volume")
	}

	// The crashed image: refused for writing, readable, with a notice.
	_, err = openImage(t, crash, openOpts{rw: true})
	expectErr(t, err, ErrUnclean, "not cleanly unmounted")
	var logs logRecorder
	ro := mustOpenImage(t, crash, openOpts{logf: logs.logf})
	if ro.WasClean() {
		t.Fatal("crashed image: WasClean true")
	}
	if _, err := ro.Stat("/a"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "not cleanly unmounted") {
		t.Fatalf("no notice of the state: %q", logs.String())
	}
	ro.Close()

	// Written anyway: it stays unclean, and e2fsck -n checks it.
	v = mustOpenImage(t, crash, openOpts{rw: true, allowUnclean: true})
	if ro, why := v.ReadOnly(); ro || v.WasClean() {
		t.Fatalf("AllowUnclean: read-only %v (%s), WasClean %v", ro, why, v.WasClean())
	}
	put(v, "/b")
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readSuperState(t, crash); st.state&stateValid != 0 || st.mntCount != orig.mntCount+2 {
		t.Fatalf("after an AllowUnclean session: %+v", st)
	}
	if s := dumpe2fsState(t, crash); s != "not clean" {
		t.Fatalf("dumpe2fs: state %q", s)
	}
	if e2fsckQuick(t, crash) {
		t.Fatal("e2fsck -n skipped the check of an unclean volume")
	}
	fsckClean(t, crash)

	// After e2fsck: clean at open, clean at Close.
	// Exit status 1: "errors corrected", here marking it clean.
	if out, err := testenv.Output("e2fsck", "-p", crash); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck -p: %v\n%s", err, out)
	}
	v = mustOpenImage(t, crash, openOpts{rw: true})
	if !v.WasClean() {
		t.Fatal("WasClean false after e2fsck -p")
	}
	put(v, "/c")
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if s := dumpe2fsState(t, crash); s != "clean" {
		t.Fatalf("dumpe2fs after e2fsck and a session: state %q", s)
	}
	if !e2fsckQuick(t, crash) {
		t.Fatal("e2fsck -n checked a cleanly closed volume")
	}
	fsckClean(t, crash)
}

// TestRecordedErrors: a volume whose superblock records errors is unclean
// too: refused for writing without AllowUnclean; written with it, Close
// keeps the errors bit.
func TestRecordedErrors(t *testing.T) {
	img := mkfs(t, "ext2", 1024, "", "8M")
	patchSuper(t, img, func(b []byte) { binary.LittleEndian.PutUint16(b[sbStateOff:], stateValid|stateErrors) })
	_, err := openImage(t, img, openOpts{rw: true})
	expectErr(t, err, ErrUnclean, "recorded errors")
	v := mustOpenImage(t, img, openOpts{rw: true, allowUnclean: true})
	if err := v.Mkdir("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readSuperState(t, img); st.state != stateValid|stateErrors {
		t.Fatalf("state %#x after Close, want %#x", st.state, stateValid|stateErrors)
	}
	if s := dumpe2fsState(t, img); s != "clean with errors" {
		t.Fatalf("dumpe2fs: state %q", s)
	}
}
