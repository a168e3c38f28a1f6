package drills

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaged/mpaged/uring/crashring"
)

// crashWorkload drives one crash drill: the stack, the oracle, the seeded
// choices and the cuts.
type crashWorkload struct {
	t     *testing.T
	st    *crashStack
	m     *model
	rng   *rand.Rand
	seed  uint64
	dirs  []string // directories that exist, "/" first
	tally crashTally

	// armed: the next request is cut during its flight (launch), after
	// a random delay or, when atFlush, as its flushAt-th device flush
	// starts (onFlush).
	armed     bool
	atFlush   bool
	flushAt   int
	cutMu     sync.Mutex // guards flushAt, flushSnap and flushRNG against onFlush
	flushSnap *model
	flushRNG  *rand.Rand
	pending   chan cutTaken
	scratch   string // where cut images are written
	// journaled: e2fsck may fix only the free counts of a replayed cut
	// (crashFilesystems).
	journaled bool
}

// cutTaken is a cut, written to path, and the oracle as it stood when
// the cut began.
type cutTaken struct {
	im   *crashring.Image
	path string
	snap *model
	mid  bool // taken while a request was in flight
	err  error
}

func newCrashWorkload(t *testing.T, mkfs []string, size string, seed uint64) *crashWorkload {
	w := &crashWorkload{t: t, m: newModel(), seed: seed,
		rng: rand.New(rand.NewPCG(seed, 0x5eed)), dirs: []string{"/"}, scratch: t.TempDir()}
	w.st = newCrashStack(t, mkfs, size, w.onFlush)
	return w
}

// onFlush runs as each device flush starts (the crash ring's BeforeFlush,
// on the goroutine serving the request): the flushAt-th flush of an armed
// request is cut there, with every write of the sync it ends pending.
func (w *crashWorkload) onFlush(fd int) {
	w.cutMu.Lock()
	defer w.cutMu.Unlock()
	if w.flushSnap == nil {
		return
	}
	if w.flushAt--; w.flushAt > 0 {
		return
	}
	path := w.cutPath()
	im, err := w.st.ring.CutFileTo(fd, path, w.flushRNG)
	w.pending <- cutTaken{im: im, path: path, snap: w.flushSnap, mid: true, err: err}
	w.flushSnap = nil
}

// run steps the workload until it has taken and checked cuts cuts: before
// each step, one chance in four to cut, half of those between requests and
// half during the next one.
func (w *crashWorkload) run(cuts int) {
	for int(w.tally.cuts) < cuts {
		if w.rng.IntN(4) != 0 {
			w.step()
			continue
		}
		var c cutTaken
		if w.rng.IntN(2) == 0 {
			c = w.cutNow()
		} else {
			c = w.cutDuringStep()
		}
		if c.err != nil {
			w.t.Fatalf("seed %d: cut %d: %v", w.seed, w.tally.cuts, c.err)
		}
		w.check(c)
	}
}

// cutRNG is cut i's own generator, so a cut's choices do not depend on
// how many numbers the workload drew.
func (w *crashWorkload) cutRNG() *rand.Rand {
	return rand.New(rand.NewPCG(w.seed, uint64(w.tally.cuts)+1))
}

// cutPath is where the next cut's image goes (check removes it).
func (w *crashWorkload) cutPath() string {
	return filepath.Join(w.scratch, fmt.Sprintf("cut-%d.img", w.tally.cuts))
}

func (w *crashWorkload) cutNow() cutTaken {
	snap := w.m.snapshot()
	path := w.cutPath()
	im, err := w.st.ring.CutTo(path, w.cutRNG())
	return cutTaken{im: im, path: path, snap: snap, err: err}
}

// cutDuringStep arms a cut for the next request (launch) and steps.
func (w *crashWorkload) cutDuringStep() cutTaken {
	w.armed, w.atFlush = true, w.rng.IntN(2) == 0
	w.pending = make(chan cutTaken, 1)
	w.step()
	if w.armed { // the step sent nothing
		w.launch()
	}
	w.cutMu.Lock()
	if w.flushSnap != nil { // the request made fewer flushes: cut now
		path := w.cutPath()
		im, err := w.st.ring.CutTo(path, w.flushRNG)
		w.pending <- cutTaken{im: im, path: path, snap: w.flushSnap, mid: true, err: err}
		w.flushSnap = nil
	}
	w.cutMu.Unlock()
	return <-w.pending
}

// launch, when a cut is armed, copies the oracle (the request's change is
// in it already) and cuts after a random delay of up to 3 ms while the
// request goes on, or leaves the cut to onFlush.
func (w *crashWorkload) launch() {
	if !w.armed {
		return
	}
	w.armed = false
	snap := w.m.snapshot()
	if w.atFlush {
		w.cutMu.Lock()
		w.flushSnap, w.flushRNG, w.flushAt = snap, w.cutRNG(), 1+w.rng.IntN(3)
		w.cutMu.Unlock()
		return
	}
	delay := time.Duration(w.rng.IntN(3000)) * time.Microsecond
	rng, path := w.cutRNG(), w.cutPath()
	go func() {
		time.Sleep(delay)
		im, err := w.st.ring.CutTo(path, rng)
		w.pending <- cutTaken{im: im, path: path, snap: snap, mid: true, err: err}
	}()
}

// step runs one random operation.
func (w *crashWorkload) step() {
	w.tally.ops++
	files := w.m.presentFiles()
	switch r := w.rng.IntN(100); {
	case r < 32 || len(files) == 0:
		w.putReplace(w.randomFile())
	case r < 47:
		w.putInPlace(w.pickFile(files))
	case r < 57:
		w.fsync(w.pickFile(files))
	case r < 62:
		w.sync()
	case r < 70 && len(w.dirs) < 6:
		w.mkdir()
	case r < 82:
		w.remove(w.pickFile(files))
	default:
		w.rename(w.pickFile(files), w.randomFile())
	}
}

func (w *crashWorkload) pickFile(files []string) string {
	if len(files) == 0 {
		return w.randomFile()
	}
	return files[w.rng.IntN(len(files))]
}

// randomFile is one of six names in an existing directory.
func (w *crashWorkload) randomFile() string {
	return path.Join(w.dirs[w.rng.IntN(len(w.dirs))], fmt.Sprintf("f%d", w.rng.IntN(6)))
}

// randomBody is 0 bytes to 400 KiB, most of them small.
func (w *crashWorkload) randomBody() []byte {
	var n int
	switch w.rng.IntN(4) {
	case 0:
		n = w.rng.IntN(100)
	case 1:
		n = 1 + w.rng.IntN(8<<10)
	case 2:
		n = 8<<10 + w.rng.IntN(56<<10)
	default:
		n = 64<<10 + w.rng.IntN(336<<10)
	}
	return w.randomBytes(n)
}

func (w *crashWorkload) randomBytes(n int) []byte { return randomBytes(w.rng, n) }

// randomBytes is n bytes from rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		x := rng.Uint64()
		for j := i; j < min(i+8, n); j++ {
			b[j] = byte(x)
			x >>= 8
		}
	}
	return b
}

// expect sends a request and wants one of the statuses.
func (w *crashWorkload) expect(method, p string, body []byte, want ...int) {
	w.t.Helper()
	w.launch()
	if *crashTrace {
		w.t.Logf("op %d: %s %s (%d bytes)", w.tally.ops, method, p, len(body))
	}
	status, resp, err := w.st.call(method, p, body)
	if err != nil {
		w.tally.hangs++
		w.t.Fatalf("seed %d: op %d: %s %s: %v", w.seed, w.tally.ops, method, p, err)
	}
	if !slices.Contains(want, status) {
		w.t.Fatalf("seed %d: op %d: %s %s: %d, want %v: %s", w.seed, w.tally.ops, method, p, status, want, resp)
	}
}

// putReplace is a PUT without ?offset: durable at its answer.
func (w *crashWorkload) putReplace(p string) {
	body := w.randomBody()
	status := http.StatusCreated
	if w.m.file(p).cur.present {
		status = http.StatusNoContent
	}
	w.m.change(p, true, body, false)
	w.expect(http.MethodPut, "/v1/files"+p, body, status)
	w.m.ack(p)
	w.tally.acks++
}

// putInPlace writes at an offset up to 8 KiB past the end (a hole), with
// ?sync=1 half the time.
func (w *crashWorkload) putInPlace(p string) {
	h := w.m.file(p)
	cur := h.cur.data
	off := w.rng.IntN(len(cur) + 8<<10)
	body := w.randomBytes(1 + w.rng.IntN(32<<10))
	next := make([]byte, max(len(cur), off+len(body)))
	copy(next, cur)
	copy(next[off:], body)
	sync := w.rng.IntN(2) == 0
	status := http.StatusCreated
	if h.cur.present {
		status = http.StatusNoContent
	}
	// Loose even with ?sync=1: until the answer, any part of it may
	// have landed.
	w.m.change(p, true, next, true)
	q := fmt.Sprintf("/v1/files%s?offset=%d", p, off)
	if sync {
		q += "&sync=1"
	}
	w.expect(http.MethodPut, q, body, status)
	if sync {
		w.m.ack(p)
		w.tally.acks++
	}
}

func (w *crashWorkload) fsync(p string) {
	w.expect(http.MethodPost, "/v1/fsync"+p, nil, http.StatusOK)
	w.m.ack(p)
	w.tally.acks++
}

func (w *crashWorkload) sync() {
	w.expect(http.MethodPost, "/v1/sync", nil, http.StatusOK)
	w.m.ackAll()
	w.tally.acks++
}

func (w *crashWorkload) mkdir() {
	d := path.Join(w.dirs[w.rng.IntN(len(w.dirs))], fmt.Sprintf("d%d", len(w.dirs)))
	w.m.mkdir(d)
	w.expect(http.MethodPost, "/v1/mkdir"+d, nil, http.StatusCreated)
	w.dirs = append(w.dirs, d)
}

func (w *crashWorkload) remove(p string) {
	w.m.change(p, false, nil, false)
	w.expect(http.MethodDelete, "/v1/files"+p, nil, http.StatusNoContent)
}

// rename moves a file with ext.Volume.Rename (the API has no route for
// it), replacing the target if there is one.
func (w *crashWorkload) rename(from, to string) {
	if from == to || strings.HasPrefix(to, from+"/") {
		return
	}
	// A file whose bytes are not all durable (changed since its
	// acknowledgement) may arrive at its new name with any of them.
	src := w.m.file(from)
	w.m.change(to, true, src.cur.data, !src.settled())
	// Until the rename is durable the old name may still name the file,
	// and the file may change under its new name meanwhile: the old name
	// may show any bytes.
	w.m.allow(from, version{present: true, loose: true})
	w.m.change(from, false, nil, false)
	w.launch()
	if *crashTrace {
		w.t.Logf("op %d: rename %s %s", w.tally.ops, from, to)
	}
	if err := w.st.vol.Rename(from, to); err != nil {
		w.t.Fatalf("seed %d: op %d: rename %s %s: %v", w.seed, w.tally.ops, from, to, err)
	}
}
