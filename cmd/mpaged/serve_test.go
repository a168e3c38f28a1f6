package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
)

// TestServeEndToEnd: `mpaged serve` with no --volume makes its default
// volume, answers the API, and on SIGTERM writes everything back, leaves
// a volume e2fsck finds clean, and serves the same bytes after a restart.
func TestServeEndToEnd(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	dir := t.TempDir()
	d := testenv.StartDaemon(t, dir, "--cache", "16MiB")
	img := filepath.Join(dir, "mpaged-data", "volume.img")
	if st, err := os.Stat(img); err != nil || st.Size() != 1<<30 {
		t.Fatalf("default volume: %v %v", st, err)
	}
	d.Must(200, "GET", "/healthz", nil)
	d.Must(200, "GET", "/readyz", nil)

	data := make([]byte, 3<<20+123)
	rand.NewChaCha8([32]byte{1}).Read(data)
	d.Must(201, "POST", "/v1/mkdir/docs/2026?parents=1", nil)
	d.Must(201, "PUT", "/v1/files/docs/2026/report.bin", bytes.NewReader(data))
	if got := d.Must(200, "GET", "/v1/files/docs/2026/report.bin", nil); !bytes.Equal(got, data) {
		t.Fatal("GET returned other bytes than PUT sent")
	}
	resp, got := d.Call("GET", "/v1/files/docs/2026/report.bin", nil, "Range", "bytes=1048570-1048585")
	if resp.StatusCode != 206 || !bytes.Equal(got, data[1048570:1048586]) {
		t.Fatalf("range: %d %x", resp.StatusCode, got)
	}
	d.Must(304, "GET", "/v1/files/docs/2026/report.bin", nil, "If-None-Match", resp.Header.Get("ETag"))
	d.Must(201, "PUT", "/v1/files/docs/gone", strings.NewReader("temporary"))
	d.Must(204, "DELETE", "/v1/files/docs/gone", nil)
	d.Must(404, "GET", "/v1/files/docs/gone", nil)
	var listing struct{ Entries []struct{ Name string } }
	if err := json.Unmarshal(d.Must(200, "GET", "/v1/files/docs/2026", nil), &listing); err != nil || len(listing.Entries) != 1 {
		t.Fatalf("listing: %v %+v", err, listing)
	}
	d.Must(200, "POST", "/v1/fsync/docs/2026/report.bin", nil)
	// Dirty, not synced: SIGTERM must write it back.
	d.Must(204, "PUT", "/v1/files/docs/2026/report.bin?offset=100", strings.NewReader("written just before SIGTERM"))
	copy(data[100:], "written just before SIGTERM")
	d.Must(201, "PUT", "/v1/files/unsynced", strings.NewReader("not synced by the client"))
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.Stderr.String())
	}
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck -fn after shutdown: %v\n%s", err, out)
	}
	d = testenv.StartDaemon(t, dir)
	if got := d.Must(200, "GET", "/v1/files/docs/2026/report.bin", nil); !bytes.Equal(got, data) {
		t.Fatal("after restart: other bytes")
	}
	if got := d.Must(200, "GET", "/v1/files/unsynced", nil); string(got) != "not synced by the client" {
		t.Fatalf("after restart: %q", got)
	}
	if strings.Contains(d.Stderr.String(), "created the default volume") {
		t.Error("the restart created the default volume again")
	}
	if code := d.Stop(syscall.SIGINT); code != 0 {
		t.Fatalf("SIGINT: exit %d", code)
	}
}

// TestServeRefusesSecondWriter: a second daemon on the same volume, and a
// one-shot write beside a running daemon, are refused with one line.
func TestServeRefusesSecondWriter(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	dir := t.TempDir()
	testenv.StartDaemon(t, dir)
	img := filepath.Join(dir, "mpaged-data", "volume.img")
	for _, fsck := range []string{"auto", "force"} {
		out, err := exec2(t, dir, "serve", "--volume", img, "--listen", "127.0.0.1:0", "--fsck", fsck)
		if err == nil || !strings.Contains(out, "in use") || strings.Contains(out, "e2fsck") {
			t.Errorf("second serve (--fsck %s): %v\n%s", fsck, err, out)
		}
	}
	code, _, errs := putCmd([]byte("x"), "--volume", img, "/x")
	if code != 1 || !strings.Contains(errs, "in use") || strings.Count(errs, "\n") != 1 {
		t.Errorf("put beside serve: exit %d: %q", code, errs)
	}
	// Reading beside it works, with a warning.
	code, _, errs = runCmd("ls", "--volume", img, "/")
	if code != 0 || !strings.Contains(errs, "open for writing by another process") {
		t.Errorf("ls beside serve: exit %d: %q", code, errs)
	}
}

// exec2 runs the built binary (mpagedBinary built it) and returns its
// combined output.
func exec2(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testenv.MpagedBinary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestServeKernelMounted: a volume the kernel has mounted is not written.
func TestServeKernelMounted(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mount")
	img := ext2Image(t, "16M")
	dev := testenv.AttachLoop(t, img)
	mnt := t.TempDir()
	testenv.Run(t, "mount", "-t", "ext2", dev, mnt)
	t.Cleanup(func() { testenv.Unmount(mnt) })
	testenv.MpagedBinary(t)
	for _, args := range [][]string{
		{"serve", "--volume", img, "--listen", "127.0.0.1:0"},
		{"mkdir", "--volume", img, "/new"},
		{"mkdir", "--volume", dev, "/new"},
	} {
		out, err := exec2(t, t.TempDir(), args...)
		if err == nil || !strings.Contains(out, "mounted at "+mnt) {
			t.Errorf("%v on a mounted volume: %v\n%s", args, err, out)
		}
	}
}

// TestServeUncleanVolume: on a volume without a journal (the default
// volume has one: TestServeDefaultVolumeKill), a daemon killed with dirty
// data leaves the volume unclean; the next start runs e2fsck -p and serves
// read-write; with --fsck never it serves read-only and says why.
func TestServeUncleanVolume(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	dir := t.TempDir()
	img := ext2Image(t, "32M")
	d := testenv.StartDaemon(t, dir, "--volume", img)
	d.Must(201, "PUT", "/v1/files/a?sync=1", strings.NewReader("synced before the kill"))
	d.Stop(syscall.SIGKILL)

	d = testenv.StartDaemon(t, dir, "--volume", img, "--fsck", "never")
	var ready struct {
		ReadOnly bool   `json:"read_only"`
		Reason   string `json:"read_only_reason"`
	}
	json.Unmarshal(d.Must(200, "GET", "/readyz", nil), &ready)
	if !ready.ReadOnly || !strings.Contains(ready.Reason, "not cleanly unmounted") {
		t.Errorf("--fsck never on an unclean volume: %+v", ready)
	}
	d.Must(503, "PUT", "/v1/files/b", strings.NewReader("refused"))
	if got := d.Must(200, "GET", "/v1/files/a", nil); string(got) != "synced before the kill" {
		t.Errorf("read-only: %q", got)
	}
	d.Stop(syscall.SIGTERM)

	d = testenv.StartDaemon(t, dir, "--volume", img)
	if !strings.Contains(d.Stderr.String(), "e2fsck -p") {
		t.Errorf("no e2fsck run logged:\n%s", d.Stderr.String())
	}
	d.Must(201, "PUT", "/v1/files/b", strings.NewReader("writable again"))
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if out, err := testenv.Output("e2fsck", "-n", img); err != nil || !strings.Contains(out, "clean") {
		t.Errorf("e2fsck -n after a clean shutdown: %v\n%s", err, out)
	}
}

// TestServeDefaultVolumeKill: the default volume serve creates is a
// journaled ext4 (dumpe2fs lists has_journal). A daemon killed with -9
// after an fsync and with writes not synced leaves it needing recovery;
// the next start replays the journal (its log says so) and runs no
// e2fsck, serves it writable with every synced byte, and after SIGTERM
// e2fsck -fn finds it clean.
func TestServeDefaultVolumeKill(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	testenv.RequireTool(t, "dumpe2fs")
	dir := t.TempDir()
	img := filepath.Join(dir, "mpaged-data", "volume.img")
	d := testenv.StartDaemon(t, dir, "--create-size", "64MiB", "--cache", "16MiB")
	features := testenv.Run(t, "dumpe2fs", "-h", img)
	if !strings.Contains(features, "has_journal") || !strings.Contains(features, "Filesystem volume name:   mpaged") {
		t.Fatalf("the default volume has no journal or not its label:\n%s", features)
	}
	synced := bytes.Repeat([]byte("synced before the kill "), 3000)
	d.Must(201, "POST", "/v1/mkdir/d", nil)
	d.Must(201, "PUT", "/v1/files/d/a?sync=1", bytes.NewReader(synced))
	d.Must(201, "PUT", "/v1/files/d/b", strings.NewReader("not synced"))
	d.Must(204, "PUT", "/v1/files/d/a?offset=70000", strings.NewReader("appended, not synced"))
	d.Stop(syscall.SIGKILL)
	if hdr := testenv.Run(t, "dumpe2fs", "-h", img); !strings.Contains(hdr, "needs_recovery") {
		t.Fatalf("the killed default volume does not need recovery:\n%s", hdr)
	}

	d = testenv.StartDaemon(t, dir, "--cache", "16MiB")
	logs := d.Stdout.String() + d.Stderr.String()
	if !strings.Contains(logs, "journal replayed") || strings.Contains(logs, "e2fsck") {
		t.Fatalf("the restart did not replay the journal, or ran e2fsck:\n%s", logs)
	}
	var ready struct {
		ReadOnly bool `json:"read_only"`
	}
	if err := json.Unmarshal(d.Must(200, "GET", "/readyz", nil), &ready); err != nil || ready.ReadOnly {
		t.Fatalf("after the replay: read-only %v (%v)", ready.ReadOnly, err)
	}
	if got := d.Must(200, "GET", "/v1/files/d/a", nil); !bytes.Equal(got[:len(synced)], synced) {
		t.Fatalf("after the replay /d/a holds %d bytes, not the synced ones first", len(got))
	}
	d.Must(201, "PUT", "/v1/files/d/c", strings.NewReader("written after the replay"))
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.Stderr.String())
	}
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck -fn after the clean stop: %v\n%s", err, out)
	}
}

// TestServeStreamsLargeFile: a 1 GiB file goes in and out through the
// daemon while its resident memory stays under the cache plus a fixed
// overhead: bodies stream, nothing holds a whole file.
func TestServeStreamsLargeFile(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	const size = 1 << 30
	const cache = 64 << 20
	// What the daemon may hold beyond the cache: the frame pool's headroom
	// (engine.FrameBytes: a quarter of the cache, at least 8 MiB), the Go
	// runtime and heap, HTTP buffers.
	const overhead = 64 << 20
	dir := t.TempDir()
	d := testenv.StartDaemon(t, dir, "--cache", "64MiB", "--create-size", "1536MiB")
	var maxRSS int64
	watch := func() {
		if r := d.RSS(); r > maxRSS {
			maxRSS = r
		}
	}
	src := &patternReader{n: size, watch: watch}
	req, _ := http.NewRequest("PUT", d.URL+"/v1/files/big", src)
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("PUT 1 GiB: %v %v", err, resp)
	}
	resp.Body.Close()
	want := src.sum.Sum(nil)
	for _, pass := range []string{"cold", "warm"} {
		resp, err := http.Get(d.URL + "/v1/files/big")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET: %v %v", err, resp)
		}
		h := sha256.New()
		n, err := io.Copy(h, &watchReader{r: resp.Body, watch: watch})
		resp.Body.Close()
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), want) {
			t.Fatalf("%s GET: %d bytes, %v, checksum equal %v", pass, n, err, bytes.Equal(h.Sum(nil), want))
		}
	}
	t.Logf("daemon RSS peak %d MiB (cache %d MiB, bound %d MiB)", maxRSS>>20, cache>>20, (cache+overhead)>>20)
	if maxRSS > cache+overhead {
		t.Errorf("RSS peaked at %d MiB: over the cache (%d MiB) plus %d MiB", maxRSS>>20, cache>>20, overhead>>20)
	}
	d.Stop(syscall.SIGTERM)
}

// patternReader yields n pseudo-random bytes, hashing them, and samples
// the daemon's memory every 16 MiB.
type patternReader struct {
	n, off int64
	sum    hashWriter
	rng    *rand.ChaCha8
	watch  func()
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.rng == nil {
		p.rng = rand.NewChaCha8([32]byte{7})
		p.sum = sha256.New()
	}
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	p.rng.Read(b)
	p.sum.Write(b)
	if p.off>>24 != (p.off+int64(len(b)))>>24 {
		p.watch()
	}
	p.off += int64(len(b))
	return len(b), nil
}

type watchReader struct {
	r     io.Reader
	n     int64
	watch func()
}

func (w *watchReader) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	if w.n>>24 != (w.n+int64(n))>>24 {
		w.watch()
	}
	w.n += int64(n)
	return n, err
}

// TestServeErrorsAreJSON: the daemon's errors, over the wire, are JSON
// with their status (the api package tests each one in depth).
func TestServeErrorsAreJSON(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("let-me-in\n"), 0o600)
	d := testenv.StartDaemon(t, dir, "--token-file", tok, "--max-body", "1KiB")
	auth := []string{"Authorization", "Bearer let-me-in"}
	for _, tc := range []struct {
		method, path string
		body         string
		hdr          []string
		status       int
		code         string
	}{
		{"GET", "/v1/files/x", "", nil, 401, "unauthorized"},
		{"GET", "/v1/files/x", "", auth, 404, "not_found"},
		{"PATCH", "/v1/files/x", "", auth, 405, "method_not_allowed"},
		{"PUT", "/v1/files/nodir/x", "x", auth, 409, "no_parent"},
		{"PUT", "/v1/files/x", strings.Repeat("x", 2000), auth, 413, "too_large"},
		{"PUT", "/v1/files/x?offset=z", "x", auth, 400, "bad_offset"},
		{"GET", "/v1/files/lost+found/../x", "", auth, 400, "invalid_path"},
	} {
		resp, b := d.Call(tc.method, tc.path, strings.NewReader(tc.body), tc.hdr...)
		var eb struct{ Error, Code string }
		if resp.StatusCode != tc.status || json.Unmarshal(b, &eb) != nil || eb.Code != tc.code || eb.Error == "" {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.code)
		}
	}
	d.Must(201, "PUT", "/v1/files/x", strings.NewReader("ok"), auth...)
	d.Must(412, "PUT", "/v1/files/x", strings.NewReader("no"), append(auth, "If-None-Match", "*")...)
	d.Must(416, "GET", "/v1/files/x", nil, append(auth, "Range", "bytes=10-20")...)
	d.Must(200, "GET", "/metrics", nil)
	if !strings.Contains(string(d.Must(200, "GET", "/metrics", nil)), `mpaged_http_requests_total{code="401",handler="files",method="get"}`) {
		t.Error("/metrics does not count the 401")
	}
}

// TestConcurrentPuts: one-shot writers of one image run one at a time
// (the second waits for the first's lock, or is refused): every put that
// exits 0 left its file whole, and e2fsck finds nothing. Before volumes
// were held exclusively, two puts at once both exited 0 and damaged the
// image.
func TestConcurrentPuts(t *testing.T) {
	img := ext2Image(t, "32M")
	bin := testenv.MpagedBinary(t)
	const writers = 4
	type result struct {
		name string
		data []byte
		err  error
		out  string
	}
	results := make(chan result, writers)
	for i := range writers {
		go func() {
			data := bytes.Repeat([]byte{byte('a' + i)}, 3<<20+i)
			cmd := exec.Command(bin, "put", "--volume", img, fmt.Sprintf("/f%d", i))
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.CombinedOutput()
			results <- result{fmt.Sprintf("/f%d", i), data, err, string(out)}
		}()
	}
	ok := 0
	for range writers {
		r := <-results
		if r.err != nil {
			if !strings.Contains(r.out, "in use") {
				t.Errorf("put %s failed, not for the lock: %v\n%s", r.name, r.err, r.out)
			}
			continue
		}
		ok++
		if code, got, errs := runCmd("cat", "--volume", img, r.name); code != 0 || got != string(r.data) {
			t.Errorf("%s: exit %d, %d bytes, want %d: %s", r.name, code, len(got), len(r.data), errs)
		}
	}
	if ok == 0 {
		t.Error("no put succeeded")
	}
	fsck(t, img)
}

// TestServeUnixSocket: --listen unix:PATH serves on a socket file (mode
// 0660), replaces a stale one, and refuses one a live daemon listens on.
func TestServeUnixSocket(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	dir := t.TempDir()
	sock := filepath.Join(dir, "mpaged.sock")
	precious := filepath.Join(dir, "precious")
	os.WriteFile(precious, []byte("keep me"), 0o600)
	if o, err := exec2(t, dir, "serve", "--listen", "unix:"+precious); err == nil || !strings.Contains(o, "not a socket") {
		t.Errorf("--listen on a regular file: %v\n%s", err, o)
	}
	if b, _ := os.ReadFile(precious); string(b) != "keep me" {
		t.Error("--listen unix: removed a regular file")
	}
	ln, err := net.Listen("unix", sock) // a stale socket: nobody will listen
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	cmd := exec.Command(testenv.MpagedBinary(t), "serve", "--listen", "unix:"+sock)
	cmd.Dir = dir
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit: %v\n%s", err, out.String())
		}
	}()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://mpaged/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on %s: %v\n%s", sock, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o660 || st.Mode().Type() != os.ModeSocket {
		t.Errorf("socket file: %v %v", st.Mode(), err)
	}
	if o, err := exec2(t, t.TempDir(), "serve", "--volume", filepath.Join(dir, "mpaged-data", "volume.img"), "--read-only", "--listen", "unix:"+sock); err == nil ||
		!strings.Contains(o, "another process is listening") {
		t.Errorf("second daemon on a live socket: %v\n%s", err, o)
	}
}

// TestServeBackgroundWriteback: data written without any fsync reaches
// the device by itself once it has been dirty for --dirty-expire: a
// second process reading the volume (no lock for readers) sees it, and
// /metrics counts the pages the flusher wrote.
func TestServeBackgroundWriteback(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	dir := t.TempDir()
	d := testenv.StartDaemon(t, dir, "--dirty-expire", "300ms", "--writeback-interval", "100ms")
	img := filepath.Join(dir, "mpaged-data", "volume.img")
	d.Must(201, "PUT", "/v1/files/f", strings.NewReader("start"))
	tail := strings.Repeat("appended without fsync; ", 1000)
	d.Must(204, "PUT", "/v1/files/f?offset=5", strings.NewReader(tail))
	want := "start" + tail
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, got, _ := runCmd("cat", "--volume", img, "/f")
		if code == 0 && got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device never saw the data: %d bytes of %d", len(got), len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := string(d.Must(200, "GET", "/metrics", nil))
	if !strings.Contains(m, "mpaged_flusher_expired_pages_total ") || strings.Contains(m, "mpaged_flusher_expired_pages_total 0\n") {
		t.Error("the flusher's pages are not counted in /metrics")
	}
	d.Stop(syscall.SIGTERM)
}
