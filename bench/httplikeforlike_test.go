package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
)

// TestMain removes the binary the HTTP tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilt()
	os.Exit(code)
}

func buildMpaged(t *testing.T) string { return testenv.MpagedBinary(t) }

// httpLikeForLike is a target with the HTTP volume and the three HTTP
// runners set up on it.
type httpLikeForLike struct {
	env    *Env
	daemon *mpagedHTTPRunner
	nginx  *nginxRunner
	cat    *catRunner
}

func newHTTPLikeForLike(t *testing.T) *httpLikeForLike {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nginx")
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	bin := buildMpaged(t)
	spec := TargetLoop
	if zramAvailable() {
		spec = TargetZram
	}
	const size = 16 << 20
	tg := openTestTarget(t, TargetConfig{Spec: spec, Size: size, DeviceSize: size + httpOverhead(size), Write: true, TempDir: t.TempDir()})
	env := &Env{Target: tg, CacheBytes: 4 << 20, MpagedBinary: bin, TempDir: t.TempDir(), Logf: t.Logf}
	lf := &httpLikeForLike{env: env, daemon: new(mpagedHTTPRunner), nginx: new(nginxRunner), cat: new(catRunner)}
	setUpForTest(t, env, lf.daemon, lf.nginx, lf.cat)
	return lf
}

func httpWorkload(t *testing.T, name string) Workload {
	t.Helper()
	cfg, err := Config{Quick: true, Workloads: []string{name}, Depth: 8}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.workloads()[0]
	w.Duration = 0 // ranges: one pass over every block
	return w
}

// wholeBody runs a whole-file workload and returns what the server sent.
func wholeBody(t *testing.T, run func(context.Context, Workload, func(int64, []byte)) (Result, error), w Workload) ([]byte, Result) {
	t.Helper()
	var body bytes.Buffer
	res, err := run(context.Background(), w, func(_ int64, b []byte) { body.Write(b) })
	if err != nil {
		t.Fatal(err)
	}
	return body.Bytes(), res
}

// TestHTTPLikeForLike: the daemon and nginx serve the same bytes for the
// same GETs of the same file system, cold runs read the whole file from
// the device and warm ones nothing, and nginx leaves no mount behind.
func TestHTTPLikeForLike(t *testing.T) {
	lf := newHTTPLikeForLike(t)
	runners := map[string]func(context.Context, Workload, func(int64, []byte)) (Result, error){
		runnerHTTPMpaged: lf.daemon.run, runnerHTTPNginx: lf.nginx.run,
	}
	var bodies [][]byte
	for _, name := range []string{runnerHTTPMpaged, runnerHTTPNginx} {
		for _, wname := range []string{"http-get-cold", "http-get-warm"} {
			body, res := wholeBody(t, runners[name], httpWorkload(t, wname))
			file := lf.env.httpVol.File
			if file.Size != lf.env.Target.Size {
				t.Fatalf("the bench file has %d bytes, the region %d", file.Size, lf.env.Target.Size)
			}
			if int64(len(body)) != file.Size || crc32.Checksum(body, castagnoli) != file.CRC {
				t.Fatalf("%s %s: %d bytes, not the file's %d", name, wname, len(body), file.Size)
			}
			// Cold: every byte from the device, but for pages the drop
			// found still cached (and says so).
			dev := res.HTTP.DeviceReadBytes
			if cold := wname == "http-get-cold"; dev >= 0 && (cold && dev < file.Size-res.HTTP.CachedAtStartBytes || !cold && dev > file.Size/16) {
				t.Errorf("%s %s: the device read %d bytes for a %d-byte file (%d cached at the start)", name, wname, dev, file.Size, res.HTTP.CachedAtStartBytes)
			}
			if res.CPUSeconds < 0 || res.HTTP.ServerProcesses < 1 || res.HTTP.Connections != 1 {
				t.Errorf("%s %s: %+v", name, wname, res.HTTP)
			}
			bodies = append(bodies, body)
		}
	}
	for _, b := range bodies[1:] {
		if !bytes.Equal(b, bodies[0]) {
			t.Fatal("the servers sent different bodies for the whole file")
		}
	}
	want := make([]byte, lf.env.httpVol.File.Size)
	lf.env.httpVol.File.ReadAt(want, 0)
	if !bytes.Equal(bodies[0], want) {
		t.Fatal("the servers agree, but not with the file's content")
	}

	ranges := map[string]map[int64][]byte{}
	for name, run := range runners {
		var mu sync.Mutex
		got := map[int64][]byte{}
		res, err := run(context.Background(), httpWorkload(t, "http-range"), func(off int64, b []byte) {
			mu.Lock()
			got[off] = bytes.Clone(b)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := lf.env.httpVol.File.Size / httpRangeSize; int64(len(got)) != n || res.HTTP.Connections != 8 {
			t.Fatalf("%s: %d ranges over %d connections, want %d over 8", name, len(got), res.HTTP.Connections, n)
		}
		ranges[name] = got
	}
	for off, b := range ranges[runnerHTTPMpaged] {
		if !bytes.Equal(b, ranges[runnerHTTPNginx][off]) {
			t.Fatalf("range at %d differs between the servers", off)
		}
	}
	compareRawGETs(t, lf)

	mnt := lf.nginx.mnt
	if err := lf.nginx.Teardown(); err != nil {
		t.Fatal(err)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); bytes.Contains(mounts, []byte(mnt)) {
		t.Fatalf("%s still mounted after teardown", mnt)
	}
}

// compareRawGETs sends the same requests to a daemon and to nginx and
// wants the same status and body: ranges the load generator does not ask
// (unaligned, suffix, open-ended, past the end), HEAD, the empty file.
func compareRawGETs(t *testing.T, lf *httpLikeForLike) {
	t.Helper()
	ctx := context.Background()
	vol := lf.env.httpVol
	d, err := startDaemon(ctx, lf.daemon.bin, vol.Dev, 4<<20, 64, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.proc.stop(syscall.SIGTERM, 30*time.Second)
	size := vol.File.Size
	type request struct {
		method, path, rng string
	}
	var reqs []request
	for _, rng := range []string{"", "bytes=1-10", "bytes=4090-4105", "bytes=-100", fmt.Sprintf("bytes=%d-", size-10),
		fmt.Sprintf("bytes=%d-%d", size-5, size+100), fmt.Sprintf("bytes=%d-%d", size, size+10), "bytes=0-0"} {
		reqs = append(reqs, request{http.MethodGet, vol.File.Name, rng})
	}
	reqs = append(reqs, request{http.MethodHead, vol.File.Name, ""}, request{http.MethodGet, httpEmptyName, ""},
		request{http.MethodGet, "/no-such-file", ""})
	for _, rq := range reqs {
		var answers []string
		for _, base := range []string{d.url, lf.nginx.url} {
			req, _ := http.NewRequestWithContext(ctx, rq.method, base+"/v1/files"+rq.path, nil)
			if rq.rng != "" {
				req.Header.Set("Range", rq.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			a := fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Content-Range"))
			if resp.StatusCode < 300 {
				// Error bodies differ (JSON, HTML); data must not.
				a += fmt.Sprintf(" len=%s body=%x", resp.Header.Get("Content-Length"), crc32.Checksum(body, castagnoli))
				if rq.method == http.MethodGet && resp.StatusCode == http.StatusOK && rq.path == vol.File.Name &&
					crc32.Checksum(body, castagnoli) != vol.File.CRC {
					t.Errorf("%s %s: not the file", rq.method, base)
				}
			}
			answers = append(answers, a)
		}
		if answers[0] != answers[1] {
			t.Errorf("%s %s Range %q: daemon %s, nginx %s", rq.method, rq.path, rq.rng, answers[0], answers[1])
		}
		if strings.HasPrefix(answers[0], "5") {
			t.Errorf("%s %s Range %q: %s", rq.method, rq.path, rq.rng, answers[0])
		}
	}
}

// mpaged cat of the bench file reads it whole from the device, in a
// process of its own.
func TestCatRunner(t *testing.T) {
	lf := newHTTPLikeForLike(t)
	w := httpWorkload(t, "http-get-cold")
	res, err := lf.cat.Run(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	size := lf.env.httpVol.File.Size
	if res.ReadBytes != size || res.CPUSeconds <= 0 || res.Seconds <= 0 || res.HTTP.StartupSeconds <= 0 ||
		res.HTTP.DeviceReadBytes >= 0 && res.HTTP.DeviceReadBytes < size {
		t.Fatalf("cli-cat: %+v %+v", res, res.HTTP)
	}
	if lf.cat.Applies(httpWorkload(t, "http-get-warm")) || lf.cat.Applies(httpWorkload(t, "http-range")) {
		t.Fatal("cli-cat applies beyond the cold whole GET")
	}
}

// A run cancelled midway (Ctrl-C) returns, leaves no daemon running, and
// nginx's teardown still stops it and unmounts the volume.
func TestHTTPRunCancelled(t *testing.T) {
	lf := newHTTPLikeForLike(t)
	w := httpWorkload(t, "http-range")
	w.Duration = time.Minute
	for _, r := range []Runner{lf.daemon, lf.nginx} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(500*time.Millisecond, cancel)
		if _, err := r.Run(ctx, w); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: cancelled run: %v", r.Name(), err)
		}
		cancel()
	}
	if pids := processesWith(t, "serve", lf.env.httpVol.Dev); len(pids) > 0 {
		t.Fatalf("mpaged serve still running after a cancelled run: %v", pids)
	}
	master := lf.nginx.proc.pid()
	mnt := lf.nginx.mnt
	if err := lf.nginx.Teardown(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(master, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("nginx master %d alive after teardown: %v", master, err)
	}
	if pids := processesWith(t, "nginx", mnt); len(pids) > 0 {
		t.Fatalf("nginx processes left: %v", pids)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); bytes.Contains(mounts, []byte(mnt)) {
		t.Fatalf("%s still mounted", mnt)
	}
}

// processesWith lists the processes whose command line holds every word.
func processesWith(t *testing.T, words ...string) []int {
	t.Helper()
	var out []int
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		all := true
		for _, w := range words {
			all = all && bytes.Contains(b, []byte(w))
		}
		if all {
			out = append(out, pid)
		}
	}
	return out
}
