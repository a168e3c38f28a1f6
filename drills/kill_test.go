package drills

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
)

// killWorkers is how many clients write at once during a kill round.
const killWorkers = 4

// TestKillDrill runs the real daemon on a volume image, has killWorkers
// clients write files through the API (PUT, PUT ?offset&sync=1, PUT
// ?offset then POST /v1/fsync, DELETE then POST /v1/sync), and SIGKILLs
// the daemon after a random delay; then it restarts it and reads every
// file back. Each client owns its own files, and keeps the crash drill's
// oracle for them (see TestCrashDrill): a file settled since its
// acknowledgement must hold exactly its acknowledged bytes (or be absent
// if that was acknowledged); one with a request in flight at the kill
// may hold any state since. What the restarted daemon serves becomes the
// next round's starting point. After the last round the daemon stops
// cleanly and e2fsck -fn must find the volume clean.
//
// Two volumes, a row each (killVolumes): a journal-less ext4, where serve
// runs e2fsck -p on the unclean volume (the log must say so), and a
// journaled ext4, where the killed image needs recovery and the restart
// replays the journal with no e2fsck at all.
func TestKillDrill(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	testenv.RequireTool(t, "dumpe2fs")
	for _, kv := range killVolumes {
		// -run TestKillDrill/kill-ext4-journal picks one row.
		t.Run(strings.ReplaceAll(kv.name, "/", "-"), func(t *testing.T) { runKillDrill(t, kv) })
	}
}

// killVolume is one volume the kill drill runs on.
type killVolume struct {
	name string   // the summary row's drill
	mkfs []string // mke2fs options after -t ext4
	// journaled: the journal answers for the kill; a restart that runs
	// e2fsck (or serves read-only) fails the drill.
	journaled bool
}

// killVolumes: on the journal-less volume e2fsck -p still refuses some
// restarts (a new inode's table block on the device before the directory
// entry naming it, see RELIABILITY.md): those are counted and reported,
// not failed, in both modes, until that is fixed (then repair's Logf
// becomes an Errorf). The journaled row is strict.
var killVolumes = []killVolume{
	{name: "kill", mkfs: []string{"-O", "^has_journal"}},
	{name: "kill/ext4-journal", journaled: true},
}

func runKillDrill(t *testing.T, kv killVolume) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-drills.crash.seed=%d; the kill moments are timing, not the seed)", seed, seed)
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.img")
	testenv.Run(t, "mke2fs", append(append([]string{"-q", "-F", "-t", "ext4"}, kv.mkfs...), img, "64M")...)
	k := &killDrill{t: t, dir: dir, img: img, journaled: kv.journaled, rng: rand.New(rand.NewPCG(seed, 0x4b111))}
	for i := range killWorkers {
		k.workers = append(k.workers, &killWorker{id: i, m: newModel(), rng: rand.New(rand.NewPCG(seed, uint64(i)))})
	}
	rounds := pick(3, 30)
	defer func() {
		restart := fmt.Sprintf("e2fsck -p refused %d of %d restarts (counted, not failed: read-only until e2fsck -fy)", k.fsckRefused, k.rounds)
		if kv.journaled {
			restart = fmt.Sprintf("%d restarts replayed the journal (%d kills came before any change), none ran e2fsck; e2fsck -fn clean at the end",
				k.replayed, k.earlyKills)
		}
		summary.Add(Row{Drill: kv.name, Rounds: k.rounds, Faults: k.rounds, Acknowledged: k.acks.Load(),
			Verified: k.verified, Lost: k.lost, Crashes: k.crashes, Hangs: k.hangs.Load(),
			Note: fmt.Sprintf("SIGKILL of mpaged serve, %d clients; %s; seed %d", killWorkers, restart, seed)})
	}()
	d, _ := k.start(false)
	for range rounds {
		d = k.round(d)
	}
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("the last daemon exited %d after SIGTERM:\n%s", code, d.Stderr.String())
	}
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck -fn after a clean stop: %v\n%s", err, out)
	}
	t.Logf("%d rounds, %d acknowledgements, %d files verified, %d lost; e2fsck -p refused %d restarts, %d replayed the journal",
		k.rounds, k.acks.Load(), k.verified, k.lost, k.fsckRefused, k.replayed)
}

type killDrill struct {
	t       *testing.T
	dir     string
	img     string
	rng     *rand.Rand
	workers []*killWorker
	// journaled: the volume has a journal (killVolume.journaled).
	journaled bool

	rounds, verified, lost, crashes int64
	fsckRefused                     int64 // restarts e2fsck -p could not repair
	replayed                        int64 // journaled restarts of a volume needing recovery
	earlyKills                      int64 // journaled kills before the session's first change
	acksBefore                      int64 // acks when the round started
	acks, hangs                     atomic.Int64
}

// start runs the daemon; unclean says the volume was left unclean by a
// kill, so the log must show serve's e2fsck -p (journal-less). readOnly:
// e2fsck -p refused to repair the volume and the daemon serves it
// read-only. A journaled volume goes to startJournaled.
func (k *killDrill) start(unclean bool) (d *testenv.Daemon, readOnly bool) {
	k.t.Helper()
	if k.journaled {
		return k.startJournaled(unclean), false
	}
	d = testenv.StartDaemon(k.t, k.dir, "--volume", k.img, "--cache", "16MiB", "--log-level", "warn")
	logs := d.Stderr.String()
	if unclean && !strings.Contains(logs, "not cleanly unmounted: running e2fsck -p") {
		k.t.Fatalf("round %d: the daemon did not check the unclean volume:\n%s", k.rounds, logs)
	}
	if !strings.Contains(logs, "serving the volume read-only") {
		return d, false
	}
	if !unclean || !strings.Contains(logs, "e2fsck could not repair it") {
		k.t.Fatalf("round %d: the daemon serves the volume read-only:\n%s", k.rounds, logs)
	}
	return d, true
}

// startJournaled runs the daemon on the journaled volume. After a kill
// (killed) the image must need recovery (the journal was in use) and the
// restart must neither run e2fsck nor serve read-only: replay answers for
// the kill.
func (k *killDrill) startJournaled(killed bool) *testenv.Daemon {
	k.t.Helper()
	if killed {
		out, err := testenv.Output("dumpe2fs", "-h", k.img)
		if err != nil {
			k.t.Fatalf("round %d: dumpe2fs -h: %v\n%s", k.rounds, err, out)
		}
		switch {
		case strings.Contains(string(out), "needs_recovery"):
			k.replayed++
		case k.acks.Load() > k.acksBefore:
			k.t.Fatalf("round %d: the killed journaled volume does not need recovery after %d acknowledged changes:\n%s",
				k.rounds, k.acks.Load()-k.acksBefore, out)
		default:
			// Killed before the session's first change (a loaded machine
			// can take the whole round to start the clients): nothing set
			// needs_recovery, and nothing needs it.
			k.earlyKills++
		}
	}
	d := testenv.StartDaemon(k.t, k.dir, "--volume", k.img, "--cache", "16MiB", "--log-level", "warn")
	logs := d.Stderr.String()
	if strings.Contains(logs, "e2fsck") || strings.Contains(logs, "serving the volume read-only") {
		k.t.Fatalf("round %d: the journaled volume needed e2fsck after a kill:\n%s", k.rounds, logs)
	}
	return d
}

// repair is the operator's answer to a volume e2fsck -p would not
// repair: stop the daemon, e2fsck -fy, start again (clean, writable).
// The refusal is counted and logged, not failed: a new inode's table
// block can still reach the device before the entry naming it (a known
// gap, RELIABILITY.md), some 4% of kills. The drill repairs and goes on,
// so the figures cover every round.
func (k *killDrill) repair(d *testenv.Daemon) *testenv.Daemon {
	k.t.Helper()
	k.fsckRefused++
	k.t.Logf("round %d: e2fsck -p refused the killed volume (known gap: counted); the daemon served it read-only:\n%s", k.rounds, d.Stderr.String())
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		k.t.Fatalf("round %d: the read-only daemon exited %d after SIGTERM", k.rounds, code)
	}
	out, err := testenv.Output("e2fsck", "-fy", k.img)
	if code := exitCode(err); code != 0 && code != 1 {
		k.t.Fatalf("round %d: e2fsck -fy: exit %d (%v)\n%s", k.rounds, code, err, out)
	}
	k.t.Logf("round %d: e2fsck -fy:\n%s", k.rounds, out)
	d, ro := k.start(false)
	if ro {
		k.t.Fatalf("round %d: read-only after e2fsck -fy:\n%s", k.rounds, d.Stderr.String())
	}
	return d
}

// round lets the workers write, kills the daemon, restarts it and checks
// every file; it returns the new daemon.
func (k *killDrill) round(d *testenv.Daemon) *testenv.Daemon {
	k.t.Helper()
	k.rounds++
	k.acksBefore = k.acks.Load()
	var killed atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, len(k.workers))
	client := &http.Client{Timeout: time.Minute}
	for _, w := range k.workers {
		wg.Go(func() {
			if err := w.run(client, d.URL, &killed, &k.acks); err != nil {
				if errors.Is(err, errHang) {
					k.hangs.Add(1)
				}
				errs <- err
			}
		})
	}
	time.Sleep(time.Duration(50+k.rng.IntN(450)) * time.Millisecond)
	if d.Cmd.ProcessState != nil {
		k.crashes++
		k.t.Fatalf("round %d: the daemon exited before the kill:\n%s", k.rounds, d.Stderr.String())
	}
	killed.Store(true)
	d.Stop(syscall.SIGKILL)
	wg.Wait()
	close(errs)
	for err := range errs {
		k.t.Errorf("round %d: %v", k.rounds, err)
	}
	if k.t.Failed() {
		k.t.FailNow()
	}
	d, readOnly := k.start(true)
	if readOnly {
		// What a refused e2fsck -p left (it may have stopped half way
		// through its repairs) is not what the files are checked on:
		// they are checked after the operator's e2fsck -fy.
		d = k.repair(d)
	}
	k.verify(d)
	return d
}

// verify reads every worker's files back and stops the drill on a loss.
func (k *killDrill) verify(d *testenv.Daemon) {
	k.t.Helper()
	for _, w := range k.workers {
		v, lost := w.verify(d)
		k.verified += v
		k.lost += int64(len(lost))
		for _, l := range lost {
			k.t.Errorf("round %d: %s", k.rounds, l)
		}
	}
	if k.t.Failed() {
		k.t.FailNow()
	}
}

var errHang = errors.New("request timed out")

// killWorker is one client: its files are /w<id>/f0../f3.
type killWorker struct {
	id  int
	m   *model
	rng *rand.Rand
}

// run writes until killed is set. A request that fails after the kill is
// the kill's; one that fails before is an error.
func (w *killWorker) run(c *http.Client, url string, killed *atomic.Bool, acks *atomic.Int64) error {
	dir := fmt.Sprintf("/w%d", w.id)
	call := func(method, p string, body []byte, want ...int) (bool, error) {
		ok, err := killCall(c, url, method, p, body, want...)
		if err != nil && killed.Load() {
			return false, nil
		}
		return ok, err
	}
	if _, err := call(http.MethodPost, "/v1/mkdir"+dir+"?parents=1", nil, http.StatusOK, http.StatusCreated); err != nil {
		return err
	}
	for !killed.Load() {
		p := fmt.Sprintf("%s/f%d", dir, w.rng.IntN(4))
		ok, err := w.step(call, p)
		if err != nil {
			return err
		}
		if ok {
			acks.Add(1)
		}
	}
	return nil
}

type callFunc func(method, p string, body []byte, want ...int) (bool, error)

// step runs one operation on p and says whether it was acknowledged.
func (w *killWorker) step(call callFunc, p string) (bool, error) {
	h := w.m.file(p)
	existed := http.StatusCreated
	if h.cur.present {
		existed = http.StatusNoContent
	}
	switch r := w.rng.IntN(10); {
	case r < 4 || !h.cur.present:
		body := randomBytes(w.rng, w.rng.IntN(128<<10))
		w.m.change(p, true, body, false)
		ok, err := call(http.MethodPut, "/v1/files"+p, body, existed)
		return w.acked(p, ok, err)
	case r < 9:
		off := w.rng.IntN(len(h.cur.data) + 4096)
		body := randomBytes(w.rng, 1+w.rng.IntN(32<<10))
		next := make([]byte, max(len(h.cur.data), off+len(body)))
		copy(next, h.cur.data)
		copy(next[off:], body)
		w.m.change(p, true, next, true)
		q := fmt.Sprintf("/v1/files%s?offset=%d", p, off)
		if r < 6 {
			ok, err := call(http.MethodPut, q+"&sync=1", body, existed)
			return w.acked(p, ok, err)
		}
		if ok, err := call(http.MethodPut, q, body, existed); !ok || err != nil {
			return false, err
		}
		ok, err := call(http.MethodPost, "/v1/fsync"+p, nil, http.StatusOK)
		return w.acked(p, ok, err)
	default:
		w.m.change(p, false, nil, false)
		if ok, err := call(http.MethodDelete, "/v1/files"+p, nil, http.StatusNoContent); !ok || err != nil {
			return false, err
		}
		ok, err := call(http.MethodPost, "/v1/sync", nil, http.StatusOK)
		if ok {
			w.m.ackAll()
		}
		return ok, err
	}
}

func (w *killWorker) acked(p string, ok bool, err error) (bool, error) {
	if ok {
		w.m.ack(p)
	}
	return ok, err
}

// verify reads every file back from the restarted daemon: it returns how
// many settled files held their acknowledged bytes and what was lost.
// What it finds is each file's new acknowledged state.
func (w *killWorker) verify(d *testenv.Daemon) (verified int64, lost []string) {
	for p, h := range w.m.files {
		resp, body := d.Call(http.MethodGet, "/v1/files"+p, nil)
		present := resp.StatusCode == http.StatusOK
		if !present && resp.StatusCode != http.StatusNotFound {
			lost = append(lost, fmt.Sprintf("GET %s: %d %s", p, resp.StatusCode, body))
			continue
		}
		switch {
		case h.settled() && !h.acked.matches(present, body):
			lost = append(lost, fmt.Sprintf("%s: acknowledged %s, found %s%s", p, describe(h.acked), describeFound(present, body), describeDiff(h.acked, present, body)))
		case h.settled():
			if present {
				verified++
			}
		case !h.allowed(present, body):
			lost = append(lost, fmt.Sprintf("%s: found %s, neither the acknowledged %s nor a later state", p, describeFound(present, body), describe(h.acked)))
		}
		found := version{present: present, data: bytes.Clone(body)}
		if !present {
			found.data = nil
		}
		h.acked, h.cur, h.since = found, found, nil
	}
	return verified, lost
}

// killCall sends one request; ok says the status was one of want. A
// status outside want is an error; so is a transport error (the caller
// forgives it after the kill).
func killCall(c *http.Client, url, method, p string, body []byte, want ...int) (bool, error) {
	var rd io.Reader = http.NoBody
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url+p, rd)
	if err != nil {
		return false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return false, fmt.Errorf("%s %s: %w: %v", method, p, errHang, err)
		}
		return false, fmt.Errorf("%s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, s := range want {
		if resp.StatusCode == s {
			return true, nil
		}
	}
	return false, fmt.Errorf("%s %s: %d, want %v: %s", method, p, resp.StatusCode, want, b)
}
