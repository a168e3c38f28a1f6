package ext

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
)

// crashRecorder is a ring wrapper that records, in completion order, every
// write that completed (its offset and bytes) and every flush: enough to
// build the image a power cut at any point would leave. The model: the
// writes completed before the last flush that completed before the cut are
// on the device; of the writes completed after it, any subset is (a drive
// cache loses what it likes). It is the smallest crash-clone device these
// tests need (uring/crashring was not on main when they were written).
// Writes are counted where they complete, so one that completes while a
// flush is in flight counts as covered by it: the model may call a little
// too much durable, never too little.
type crashRecorder struct {
	uring.Ring
	mu  sync.Mutex
	log []crashEvent
}

// crashEvent is a completed write (data at off) or a flush (data nil).
type crashEvent struct {
	off  int64
	data []byte
}

func (e crashEvent) flush() bool { return e.data == nil }

// crashHandler sees one write or flush complete.
type crashHandler struct {
	r    *crashRecorder
	orig uring.Handler
	ev   crashEvent
}

func (h *crashHandler) Complete(q *uring.Request) {
	q.Handler = h.orig // requests are reused: put the owner's handler back first
	if q.Err == nil {
		ev := h.ev
		if !ev.flush() && q.Res < len(ev.data) {
			ev.data = ev.data[:q.Res]
		}
		h.r.mu.Lock()
		h.r.log = append(h.r.log, ev)
		h.r.mu.Unlock()
	}
	h.orig.Complete(q)
}

// Submit records writes and flushes and passes everything on.
func (r *crashRecorder) Submit(reqs ...*uring.Request) error {
	for _, q := range reqs {
		var ev crashEvent
		switch q.Op {
		case uring.OpWrite:
			ev = crashEvent{off: q.Offset, data: append([]byte{}, q.Buf...)}
		case uring.OpWritev:
			ev = crashEvent{off: q.Offset, data: []byte{}}
			for _, v := range q.Vecs {
				ev.data = append(ev.data, v...)
			}
		case uring.OpFsync:
		default:
			continue
		}
		q.Handler = &crashHandler{r: r, orig: q.Handler, ev: ev}
	}
	return r.Ring.Submit(reqs...)
}

// events is how many events are recorded so far.
func (r *crashRecorder) events() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.log)
}

// cutImage writes to a new file the image a power cut after event cut
// leaves: base, every write up to the last flush before cut, and a random
// subset (rng) of the writes after that flush.
func (r *crashRecorder) cutImage(t *testing.T, base []byte, cut int, rng *rand.Rand) string {
	t.Helper()
	r.mu.Lock()
	log := r.log[:cut]
	r.mu.Unlock()
	lastFlush := -1
	for i, ev := range log {
		if ev.flush() {
			lastFlush = i
		}
	}
	img := append([]byte(nil), base...)
	for i, ev := range log {
		if ev.flush() || (i > lastFlush && rng.IntN(2) == 0) {
			continue
		}
		copy(img[ev.off:], ev.data)
	}
	p := path.Join(t.TempDir(), fmt.Sprintf("cut%d.img", cut))
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// crashCuts is how many cut points each crash test tries: 20, or 200 with
// MPAGED_CRASH_CUTS=long (or any number).
func crashCuts() int {
	switch s := os.Getenv("MPAGED_CRASH_CUTS"); s {
	case "":
		return 20
	case "long":
		return 200
	default:
		var n int
		if _, err := fmt.Sscan(s, &n); err == nil && n > 0 {
			return n
		}
		return 20
	}
}

// ackedFile is a file whose File.Sync returned after event pos: from any
// cut at or after pos on it must hold data.
type ackedFile struct {
	path string
	data []byte
	pos  int
}

// crashWorkload writes files through v (some synced and then never
// touched again: acknowledged), renames, truncates and unlinks files that
// were not acknowledged, makes and removes directories, and returns what
// was acknowledged, with rec's event count at each acknowledgement.
func crashWorkload(t *testing.T, v *testVolume, rec *crashRecorder, rng *rand.Rand) []ackedFile {
	t.Helper()
	bs := v.BlockSize()
	var acked []ackedFile
	var loose []string // written, not acknowledged: free to change
	for i := range 60 {
		d := fmt.Sprintf("/c%d", i%4)
		if i < 4 {
			if err := v.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		p := fmt.Sprintf("%s/f%03d", d, i)
		data := randBytes(uint64(7000+i), 1+rng.IntN(40*bs))
		f, err := v.Create(p, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			acked = append(acked, ackedFile{path: p, data: data, pos: rec.events()})
		} else {
			loose = append(loose, p)
		}
		f.Close()
		if len(loose) > 3 {
			j := rng.IntN(len(loose))
			q := loose[j]
			switch rng.IntN(3) {
			case 0:
				if err := v.Unlink(q); err != nil {
					t.Fatal(err)
				}
				loose = append(loose[:j], loose[j+1:]...)
			case 1:
				nq := q + "-renamed"
				if err := v.Rename(q, nq); err != nil {
					t.Fatal(err)
				}
				loose[j] = nq
			case 2:
				f, err := v.OpenWrite(q, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(int64(rng.IntN(3 * bs))); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
		}
		if i%10 == 9 {
			tmp := fmt.Sprintf("/tmpdir%d", i)
			if err := v.Mkdir(tmp, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := v.Rmdir(tmp); err != nil {
				t.Fatal(err)
			}
		}
	}
	return acked
}

// TestJournaledCrash: a write workload on a journaled volume is cut at
// random points (crashRecorder's model of a power cut). Every cut image,
// replayed by opening it read-write, passes e2fsck -fn (no repair) and
// holds every file acknowledged before the cut with its bytes; the kernel
// (mounting another copy) and e2fsck -fy (a third) replay it to the same
// tree.
func TestJournaledCrash(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	for _, c := range []struct {
		typ string
		bs  int
	}{{"ext4", 4096}, {"ext3", 1024}} {
		t.Run(fmt.Sprintf("%s/%dk", c.typ, c.bs/1024), func(t *testing.T) {
			img := mkfs(t, c.typ, c.bs, "", "32M")
			base, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			rec := &crashRecorder{}
			v := mustOpenImage(t, img, openOpts{rw: true, wrap: func(r uring.Ring) uring.Ring { rec.Ring = r; return rec }})
			rng := rand.New(rand.NewPCG(uint64(c.bs), 11))
			acked := crashWorkload(t, v, rec, rng)
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, img)
			total := rec.events()
			cuts := crashCuts()
			for k := range cuts {
				cut := rng.IntN(total + 1)
				if k == 0 {
					cut = total
				}
				checkCut(t, c.typ, rec.cutImage(t, base, cut, rng), cut, acked)
			}
			t.Logf("%d events, %d cuts, %d files acknowledged", total, cuts, len(acked))
		})
	}
}

// checkCut replays the cut image img three ways and checks them.
func checkCut(t *testing.T, typ, img string, cut int, acked []ackedFile) {
	t.Helper()
	byKernel, byFsck := copyFile(t, img), copyFile(t, img)
	v := mustOpenImage(t, img, openOpts{rw: true})
	for _, a := range acked {
		if a.pos <= cut {
			readBack(t, v, a.path, a.data)
		}
	}
	ours := snapshotTree(t, v.Volume)
	if err := v.Close(); err != nil {
		t.Fatalf("cut %d: close: %v", cut, err)
	}
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("cut %d: e2fsck -fn after our replay: %v\n%s", cut, err, out)
	}
	if out, err := testenv.Output("e2fsck", "-fy", byFsck); err != nil && !onlySummaryFixed(err, out) {
		t.Fatalf("cut %d: e2fsck -fy: %v\n%s", cut, err, out)
	}
	sameTree(t, fmt.Sprintf("cut %d: ours vs e2fsck's replay", cut), ours,
		snapshotTree(t, mustOpenImage(t, byFsck, openOpts{readOnly: true}).Volume))
	if os.Geteuid() == 0 {
		mnt, done := mountRO(t, byKernel, typ)
		sameTree(t, fmt.Sprintf("cut %d: ours vs the kernel's replay", cut), ours, snapshotDir(t, mnt))
		done()
	}
	for _, p := range []string{img, byKernel, byFsck} {
		os.Remove(p)
	}
}

// summaryFix is what e2fsck says of the superblock's free counts, which
// lag the group descriptors on a journaled volume between syncs (as the
// kernel's do): not an inconsistency.
var summaryFix = regexp.MustCompile(`^Free (blocks|inodes) count wrong \(\d+, counted=\d+\)\.$`)

// onlySummaryFixed reports whether e2fsck -fy exited 1 (errors fixed)
// having fixed only the superblock's free counts.
func onlySummaryFixed(err error, out string) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		return false
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Fix? ") && (i == 0 || !summaryFix.MatchString(lines[i-1])) {
			return false
		}
	}
	return true
}
