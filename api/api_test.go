package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

func TestGetFile(t *testing.T) {
	content := strings.Repeat("0123456789", 1000) // 10000 bytes: three pages
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"dir/f.txt": content, "empty": ""}})

	resp, b := e.Do(http.MethodGet, "/v1/files/dir/f.txt", nil)
	e.Want(resp, b, http.StatusOK, "")
	if string(b) != content || resp.Header.Get("Content-Length") != "10000" || resp.Header.Get("ETag") == "" ||
		resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET: %d bytes, headers %v", len(b), resp.Header)
	}
	tag := resp.Header.Get("ETag")

	resp, b = e.Do(http.MethodHead, "/v1/files/dir/f.txt", nil)
	if resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Length") != "10000" || resp.Header.Get("ETag") != tag {
		t.Errorf("HEAD: %d, %d bytes, %v", resp.StatusCode, len(b), resp.Header)
	}
	if b := e.Get("/v1/files/empty"); len(b) != 0 {
		t.Errorf("empty file: %q", b)
	}

	for _, tc := range []struct {
		hdr    []string
		status int
		code   string
		body   string
	}{
		{[]string{"Range", "bytes=4090-4105"}, 206, "", content[4090:4106]},
		{[]string{"Range", "bytes=-5"}, 206, "", content[9995:]},
		{[]string{"Range", "bytes=20000-"}, 416, "range_not_satisfiable", ""},
		{[]string{"If-None-Match", tag}, 304, "", ""},
		{[]string{"If-None-Match", `"other"`}, 200, "", content},
		{[]string{"If-Match", `"other"`}, 412, "precondition_failed", ""},
		{[]string{"If-Match", tag}, 200, "", content},
		{[]string{"If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, 304, "", ""},
		{[]string{"Range", "bytes=0-1", "If-Range", `"stale"`}, 200, "", content},
	} {
		resp, b := e.Do(http.MethodGet, "/v1/files/dir/f.txt", nil, tc.hdr...)
		e.Want(resp, b, tc.status, tc.code)
		if tc.status < 400 && string(b) != tc.body {
			t.Errorf("%v: body %q..., want %q...", tc.hdr, b[:min(len(b), 20)], tc.body[:min(len(tc.body), 20)])
		}
		if tc.status == 416 && resp.Header.Get("Content-Range") != "bytes */10000" {
			t.Errorf("416 without Content-Range: %v", resp.Header)
		}
	}

	// Two ranges: multipart/byteranges, each part right.
	resp, b = e.Do(http.MethodGet, "/v1/files/dir/f.txt", nil, "Range", "bytes=0-2,9000-9004")
	e.Want(resp, b, http.StatusPartialContent, "")
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(bytes.NewReader(b), params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := io.ReadAll(p)
		parts = append(parts, string(pb))
	}
	if len(parts) != 2 || parts[0] != content[:3] || parts[1] != content[9000:9005] {
		t.Errorf("multi-range parts %q", parts)
	}
}

func TestListing(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"d/a": "aa", "d/b/c": "ccc"}})
	var l struct {
		Path    string
		Entries []struct {
			Name, Type string
			Size       int64
		}
		Errors []struct{ Name, Error string }
	}
	for _, p := range []string{"/v1/files/d", "/v1/files/d/"} {
		if err := json.Unmarshal(e.Get(p), &l); err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprint(l.Entries)
		if !strings.Contains(got, "{a regular 2}") || !strings.Contains(got, "{b directory") || len(l.Errors) != 0 {
			t.Errorf("%s: %+v", p, l)
		}
	}
	if err := json.Unmarshal(e.Get("/v1/files/"), &l); err != nil || l.Path != "/" {
		t.Errorf("root listing: %v %+v", err, l)
	}
}

func TestPutReplaceAndDelete(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "old content"}})
	resp, b := e.Do(http.MethodPut, "/v1/files/new.bin", strings.NewReader("fresh"))
	e.Want(resp, b, http.StatusCreated, "")
	if got := e.Get("/v1/files/new.bin"); string(got) != "fresh" {
		t.Errorf("new file: %q", got)
	}
	old := e.Get("/v1/files/f")
	resp0, _ := e.Do(http.MethodHead, "/v1/files/f", nil)
	big := bytes.Repeat([]byte("replacement "), 100_000) // 1.2 MB: several chunks
	resp, b = e.Do(http.MethodPut, "/v1/files/f?sync=1", bytes.NewReader(big))
	e.Want(resp, b, http.StatusNoContent, "")
	if got := e.Get("/v1/files/f"); !bytes.Equal(got, big) || bytes.Equal(got, old) {
		t.Errorf("replaced file: %d bytes", len(got))
	}
	if resp.Header.Get("ETag") == resp0.Header.Get("ETag") {
		t.Error("ETag did not change with the content")
	}
	// In place, without truncating; past the end grows the file.
	resp, b = e.Do(http.MethodPut, "/v1/files/f?offset=12", strings.NewReader("XYZ"))
	e.Want(resp, b, http.StatusNoContent, "")
	copy(big[12:], "XYZ")
	if got := e.Get("/v1/files/f"); !bytes.Equal(got, big) {
		t.Error("offset write changed more than its bytes")
	}
	resp, b = e.Do(http.MethodPut, fmt.Sprintf("/v1/files/f?offset=%d", len(big)+4), strings.NewReader("END"))
	e.Want(resp, b, http.StatusNoContent, "")
	if got := e.Get("/v1/files/f"); len(got) != len(big)+7 || string(got[len(big):]) != "\x00\x00\x00\x00END" {
		t.Errorf("append past the end: %d bytes, tail %q", len(got), got[len(big):])
	}
	// A fragment with Content-Range is refused, not made the whole file.
	before := e.Get("/v1/files/f")
	resp, b = e.Do(http.MethodPut, "/v1/files/f", strings.NewReader("ab"), "Content-Range", "bytes 4-5/10")
	e.Want(resp, b, http.StatusBadRequest, "content_range")
	if got := e.Get("/v1/files/f"); !bytes.Equal(got, before) {
		t.Errorf("a PUT with Content-Range changed the file to %d bytes", len(got))
	}
	// Conditional writes.
	cur, _ := e.Do(http.MethodHead, "/v1/files/f", nil)
	resp, b = e.Do(http.MethodPut, "/v1/files/f", strings.NewReader("x"), "If-None-Match", "*")
	e.Want(resp, b, http.StatusPreconditionFailed, "precondition_failed")
	resp, b = e.Do(http.MethodPut, "/v1/files/f", strings.NewReader("x"), "If-Match", `"stale"`)
	e.Want(resp, b, http.StatusPreconditionFailed, "precondition_failed")
	resp, b = e.Do(http.MethodPut, "/v1/files/f", strings.NewReader("matched"), "If-Match", cur.Header.Get("ETag"))
	e.Want(resp, b, http.StatusNoContent, "")
	// Delete, then it is gone; a non-empty directory is a conflict.
	resp, b = e.Do(http.MethodDelete, "/v1/files/f", nil)
	e.Want(resp, b, http.StatusNoContent, "")
	resp, b = e.Do(http.MethodGet, "/v1/files/f", nil)
	e.Want(resp, b, http.StatusNotFound, "not_found")
	noTempFiles(t, e)
}

// noTempFiles: no atomic PUT left its temporary file behind.
func noTempFiles(t *testing.T, e *apitest.Env) {
	t.Helper()
	ents, err := e.Vol.ReadDir(ext.StagingDir)
	if err != nil && !errors.Is(err, ext.ErrNotFound) || len(ents) != 0 {
		t.Errorf("staged files left: %v %v", ents, err)
	}
}

func TestMkdirFsyncSync(t *testing.T) {
	e := apitest.New(t, apitest.Options{})
	resp, b := e.Do(http.MethodPost, "/v1/mkdir/a", nil)
	e.Want(resp, b, http.StatusCreated, "")
	resp, b = e.Do(http.MethodPost, "/v1/mkdir/a", nil)
	e.Want(resp, b, http.StatusConflict, "exists")
	resp, b = e.Do(http.MethodPost, "/v1/mkdir/x/y/z", nil)
	e.Want(resp, b, http.StatusNotFound, "not_found")
	resp, b = e.Do(http.MethodPost, "/v1/mkdir/x/y/z?parents=1", nil)
	e.Want(resp, b, http.StatusCreated, "")
	resp, b = e.Do(http.MethodPost, "/v1/mkdir/x/y?parents=1", nil)
	e.Want(resp, b, http.StatusOK, "")
	resp, b = e.Do(http.MethodPut, "/v1/files/x/y/z/file", strings.NewReader("deep"))
	e.Want(resp, b, http.StatusCreated, "")
	resp, b = e.Do(http.MethodDelete, "/v1/files/x/y", nil)
	e.Want(resp, b, http.StatusConflict, "not_empty")
	for _, p := range []string{"/v1/fsync/x/y/z/file", "/v1/fsync/x", "/v1/sync"} {
		resp, b = e.Do(http.MethodPost, p, nil)
		e.Want(resp, b, http.StatusOK, "")
	}
	resp, b = e.Do(http.MethodPost, "/v1/fsync/nope", nil)
	e.Want(resp, b, http.StatusNotFound, "not_found")
}

func TestErrorStatuses(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "data", "d/x": "x"}, Cfg: api.Config{MaxBodyBytes: 1000}})
	for _, tc := range []struct {
		method, path string
		body         io.Reader
		status       int
		code         string
	}{
		{"GET", "/v1/files/nope", nil, 404, "not_found"},
		{"GET", "/v1/files/f/x", nil, 409, "not_a_directory"},
		{"GET", "/v1/files/a%00b", nil, 400, "invalid_path"},
		{"GET", "/v1/nothing", nil, 404, "not_found"},
		{"PATCH", "/v1/files/f", nil, 405, "method_not_allowed"},
		{"GET", "/v1/sync", nil, 405, "method_not_allowed"},
		{"PUT", "/v1/files/nodir/f", strings.NewReader("x"), 409, "no_parent"},
		{"PUT", "/v1/files/d", strings.NewReader("x"), 409, "is_a_directory"},
		{"PUT", "/v1/files/d/", strings.NewReader("x"), 409, "is_a_directory"},
		{"PUT", "/v1/files/f?offset=-1", strings.NewReader("x"), 400, "bad_offset"},
		{"PUT", "/v1/files/f?sync=maybe", strings.NewReader("x"), 400, "bad_parameter"},
		{"PUT", "/v1/files/big", bytes.NewReader(make([]byte, 1001)), 413, "too_large"},
		{"PUT", "/v1/files/big", io.MultiReader(bytes.NewReader(make([]byte, 1001))), 413, "too_large"}, // chunked
		{"DELETE", "/v1/files/", nil, 409, "invalid_operation"},
		{"DELETE", "/v1/files/nope", nil, 404, "not_found"},
	} {
		resp, b := e.Do(tc.method, tc.path, tc.body)
		e.Want(resp, b, tc.status, tc.code)
		if tc.status == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
	if got := e.Get("/v1/files/f"); string(got) != "data" {
		t.Errorf("f after refused writes: %q", got)
	}
	noTempFiles(t, e)

	// A PUT with no length at all (no Content-Length, not chunked).
	conn, err := net.Dial("tcp", e.TS.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1/files/f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	raw, _ := io.ReadAll(conn)
	if !bytes.HasPrefix(raw, []byte("HTTP/1.1 411")) || !bytes.Contains(raw, []byte(`"code":"length_required"`)) {
		t.Errorf("PUT without a length: %q", raw)
	}
}

func TestToken(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "secret"}, Cfg: api.Config{Token: "s3cret"}})
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret"}} {
		resp, b := e.Do(http.MethodGet, "/v1/files/f", nil, hdr...)
		e.Want(resp, b, http.StatusUnauthorized, "unauthorized")
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
	}
	resp, b := e.Do(http.MethodGet, "/v1/files/f", nil, "Authorization", "Bearer s3cret")
	e.Want(resp, b, http.StatusOK, "")
	resp, b = e.Do(http.MethodGet, "/healthz", nil) // probes need no token
	e.Want(resp, b, http.StatusOK, "")
}

func TestReadOnlyAndShutdown(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "data"}, ReadOnly: true})
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/v1/files/f"}, {"DELETE", "/v1/files/f"}, {"POST", "/v1/mkdir/d"},
	} {
		resp, b := e.Do(tc.method, tc.path, strings.NewReader("x"))
		e.Want(resp, b, http.StatusServiceUnavailable, "read_only")
	}
	resp, b := e.Do(http.MethodGet, "/readyz", nil)
	e.Want(resp, b, http.StatusOK, "")
	if !strings.Contains(string(b), `"read_only":true`) {
		t.Errorf("readyz on a read-only volume: %s", b)
	}
	e.Srv.SetShuttingDown()
	resp, b = e.Do(http.MethodGet, "/readyz", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "shutting down") {
		t.Errorf("readyz while shutting down: %d %s", resp.StatusCode, b)
	}
	resp, b = e.Do(http.MethodGet, "/v1/files/f", nil)
	e.Want(resp, b, http.StatusServiceUnavailable, "shutting_down")
	resp, b = e.Do(http.MethodGet, "/healthz", nil)
	e.Want(resp, b, http.StatusOK, "")
}

// TestPutKeepsOldContent: a body cut off mid-way and a full volume both
// leave the old bytes, and no temporary file.
func TestPutKeepsOldContent(t *testing.T) {
	e := apitest.New(t, apitest.Options{Size: "8M", Tree: map[string]string{"f": "the old content"}})
	// The client promises 1 MB and hangs up after 300 KB.
	conn, err := net.Dial("tcp", e.TS.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /v1/files/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
	conn.Write(make([]byte, 300_000))
	conn.Close()
	// The volume holds 8 MB: a 20 MB body cannot fit.
	resp, b := e.Do(http.MethodPut, "/v1/files/f", bytes.NewReader(make([]byte, 20<<20)))
	e.Want(resp, b, http.StatusInsufficientStorage, "ENOSPC")
	waitFor(t, "the cut-off PUT to clean up", func() bool {
		ents, _ := e.Vol.ReadDir(ext.StagingDir)
		return len(ents) == 0
	})
	if got := e.Get("/v1/files/f"); string(got) != "the old content" {
		t.Errorf("after a cut-off PUT and ENOSPC: %q", got)
	}
	// The space is free again: a fitting PUT works.
	resp, b = e.Do(http.MethodPut, "/v1/files/f", bytes.NewReader(make([]byte, 2<<20)))
	e.Want(resp, b, http.StatusNoContent, "")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFsyncReportsWriteErrors: a write-back that fails makes fsync answer
// 500 EIO (507 for ENOSPC) until a later write-back succeeds; the data is
// kept and reaches the device once the fault clears.
func TestFsyncReportsWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		errno  syscall.Errno
		status int
		code   string
	}{
		{syscall.EIO, 500, "EIO"},
		{syscall.ENOSPC, 507, "ENOSPC"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			e := apitest.New(t, apitest.Options{Faults: true, FaultSeed: 1, Tree: map[string]string{"f": strings.Repeat("a", 8192)}})
			resp, b := e.Do(http.MethodPut, "/v1/files/f?offset=4096", strings.NewReader("new bytes"))
			e.Want(resp, b, http.StatusNoContent, "")
			rule := e.Faults.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev, uring.OpWrite), Fault: faultring.Fault{Errno: tc.errno}})
			for range 2 {
				resp, b = e.Do(http.MethodPost, "/v1/fsync/f", nil)
				e.Want(resp, b, tc.status, tc.code)
			}
			e.Faults.Remove(rule)
			resp, b = e.Do(http.MethodPost, "/v1/fsync/f", nil)
			e.Want(resp, b, http.StatusOK, "")
			want := strings.Repeat("a", 4096) + "new bytes" + strings.Repeat("a", 8192-4096-9)
			if got := e.Get("/v1/files/f"); string(got) != want {
				t.Errorf("after recovery: %q...", got[4090:4110])
			}
		})
	}
}

// TestConcurrencyLimit: past MaxConcurrent a request waits its turn, and
// is refused with 503 once QueueTimeout passes.
func TestConcurrencyLimit(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "x"}, Cfg: api.Config{MaxConcurrent: 1, QueueTimeout: 250 * time.Millisecond}})
	holdOnlySlot(t, e, "/v1/files/slow", nil, http.MethodGet, "/v1/files/f")
}

// holdOnlySlot sends a PUT of "ab" to putPath (with auth headers) whose
// body stalls after "a", so it holds the only request slot; a probe is
// then refused 503 busy (waitBusy); the PUT finishes and holds "ab".
func holdOnlySlot(t *testing.T, e *apitest.Env, putPath string, auth []string, probeMethod, probePath string, probeHdr ...string) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() }) // a failed check must not leave the PUT waiting for its body
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequest(http.MethodPut, e.TS.URL+putPath, pr)
		req.ContentLength = 2
		for i := 0; i+1 < len(auth); i += 2 {
			req.Header.Set(auth[i], auth[i+1])
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("a")) // the slow PUT is on its way to the only slot
	waitBusy(t, e, probeMethod, probePath, probeHdr...)
	pw.Write([]byte("b"))
	pw.Close()
	wg.Wait()
	if _, got := e.Do(http.MethodGet, putPath, nil, auth...); string(got) != "ab" {
		t.Errorf("slow PUT: %q", got)
	}
}

// waitBusy repeats a request until it is refused 503 "busy" (within 10
// s): a slow request is to hold the only slot, but its client's first
// body byte being taken says only that the client sent it, not that the
// server has admitted the request, so a probe may get in first and be
// answered. QueueTimeout must outlast a probe, or the slow request, queued
// behind one, is refused instead.
func waitBusy(t *testing.T, e *apitest.Env, method, path string, hdr ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, b := e.Do(method, path, nil, hdr...)
		if resp.StatusCode == http.StatusServiceUnavailable {
			e.Want(resp, b, http.StatusServiceUnavailable, "busy")
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: still answered %d after 10 s, want 503 busy", method, path, resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReviewFindings: hostile and racing clients, each case a way the API
// once misbehaved.
func TestReviewFindings(t *testing.T) {
	e := apitest.New(t, apitest.Options{Faults: true, FaultSeed: 1, Tree: map[string]string{"f": "orig", "d/x": "x"},
		Cfg: api.Config{IdleTimeout: 300 * time.Millisecond, MinRate: 64 << 10}})
	t.Run("dot segments are refused, not redirected", func(t *testing.T) {
		for _, p := range []string{"/v1/files/d/../f", "/v1/files/./f", "/v1/files//f", "/v1/files/d/.."} {
			resp, b := e.Do(http.MethodPut, p, strings.NewReader("overwritten?"))
			e.Want(resp, b, http.StatusBadRequest, "invalid_path")
		}
		if got := e.Get("/v1/files/f"); string(got) != "orig" {
			t.Errorf("f: %q", got)
		}
	})
	t.Run("conditional PUTs race: one wins", func(t *testing.T) {
		cur, _ := e.Do(http.MethodHead, "/v1/files/f", nil)
		tag := cur.Header.Get("ETag")
		var pws [2]*io.PipeWriter
		codes := make(chan int, 2)
		for i := range pws {
			pr, pw := io.Pipe()
			pws[i] = pw
			go func() {
				req, _ := http.NewRequest(http.MethodPut, e.TS.URL+"/v1/files/f", pr)
				req.ContentLength = 1
				req.Header.Set("If-Match", tag)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					codes <- 0
					return
				}
				resp.Body.Close()
				codes <- resp.StatusCode
			}()
		}
		time.Sleep(50 * time.Millisecond) // both past the early check, waiting for their bodies
		pws[0].Write([]byte("A"))
		pws[0].Close()
		first := <-codes
		pws[1].Write([]byte("B"))
		pws[1].Close()
		second := <-codes
		if first != http.StatusNoContent || second != http.StatusPreconditionFailed {
			t.Errorf("two PUTs with one If-Match: %d then %d, want 204 then 412", first, second)
		}
		if got := e.Get("/v1/files/f"); string(got) != "A" {
			t.Errorf("f: %q", got)
		}
	})
	t.Run("a body on a non-PUT route does not hold the connection", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.TS.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "POST /v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
		raw, _ := io.ReadAll(conn)
		if !bytes.HasPrefix(raw, []byte("HTTP/1.1 200")) {
			t.Errorf("answer: %q", raw)
		}
	})
	t.Run("a trickling client is cut off", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for range 20 {
				if _, err := pw.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPut, e.TS.URL+"/v1/files/slow", pr)
		req.ContentLength = 20
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e.Want(resp, b, http.StatusRequestTimeout, "too_slow")
		}
		pr.Close()
		resp2, _ := e.Do(http.MethodGet, "/v1/files/slow", nil)
		if resp2.StatusCode != http.StatusNotFound {
			t.Errorf("the trickled file exists: %d", resp2.StatusCode)
		}
	})
	t.Run("a device EINVAL is an I/O error, not a conflict", func(t *testing.T) {
		resp, b := e.Do(http.MethodPut, "/v1/files/d/x?offset=0", strings.NewReader("y"))
		e.Want(resp, b, http.StatusNoContent, "")
		rule := e.Faults.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev, uring.OpWrite), Fault: faultring.Fault{Errno: syscall.EINVAL}})
		defer e.Faults.Remove(rule)
		resp, b = e.Do(http.MethodPost, "/v1/fsync/d/x", nil)
		e.Want(resp, b, http.StatusInternalServerError, "internal")
	})
	t.Run("listings carry an escaped href", func(t *testing.T) {
		resp, b := e.Do(http.MethodPut, "/v1/files/d/a%20b%3Fc", strings.NewReader("q"))
		e.Want(resp, b, http.StatusCreated, "")
		if !strings.Contains(string(e.Get("/v1/files/d")), `"href":"a%20b%3Fc"`) {
			t.Errorf("listing: %s", e.Get("/v1/files/d"))
		}
	})
}

// TestGetReadErrorIsJSON: a GET whose first read from the volume fails is
// answered 500 with a JSON EIO error (whole, ranged or HEAD-then-GET),
// not a 200 whose body is cut short; the bytes are right once the fault
// clears. (Before the status was held back, the open succeeded from
// cached metadata, ServeContent sent 200 and the body was cut at byte 0.)
func TestGetReadErrorIsJSON(t *testing.T) {
	content := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	e := apitest.New(t, apitest.Options{Faults: true, FaultSeed: 1, Tree: map[string]string{"a": content, "b": content}})
	e.Get("/v1/files/a") // the inode table block is cached now: b opens without I/O
	for _, hdr := range [][]string{nil, {"Range", "bytes=5000-9000"}} {
		rule := e.Faults.Add(faultring.Rule{Ops: faultring.Ops(uring.OpRead, uring.OpReadv), Fault: faultring.Fault{Errno: syscall.EIO}})
		resp, b := e.Do(http.MethodGet, "/v1/files/b", nil, hdr...)
		e.Faults.Remove(rule)
		e.Want(resp, b, http.StatusInternalServerError, "EIO")
		if rule.Fired() == 0 {
			t.Errorf("%v: no read was faulted", hdr)
		}
		if resp.Header.Get("Content-Range") != "" || resp.Header.Get("Accept-Ranges") != "" {
			t.Errorf("%v: error with range headers %v", hdr, resp.Header)
		}
	}
	resp, b := e.Do(http.MethodGet, "/v1/files/b", nil, "Range", "bytes=5000-9000")
	e.Want(resp, b, http.StatusPartialContent, "")
	if string(b) != content[5000:9001] {
		t.Errorf("ranged GET after the fault: %q", b[:16])
	}
	if got := e.Get("/v1/files/b"); string(got) != content {
		t.Errorf("GET after the fault: %d bytes", len(got))
	}
	resp, _ = e.Do(http.MethodHead, "/v1/files/b", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "65536" {
		t.Errorf("HEAD: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestRoutePaths: the volume path is the decoded URL path after the
// route's prefix, escaped slashes and letters included, as the mux's
// path values gave it before the routes became prefix patterns (the same
// table answered the same on main).
func TestRoutePaths(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "data", "d/x": "x", "a b": "ab"}})
	for _, tc := range []struct {
		method, path string
		status       int
		body         string // a substring of the answer
	}{
		{"GET", "/v1/files/d%2Fx", 200, "x"},
		{"GET", "/v1/%66iles/f", 200, "data"},
		{"GET", "/v1/files/a%20b", 200, "ab"},
		{"GET", "/v1/files/%64/x", 200, "x"},
		{"GET", "/v1/files%2Ff", 404, "no such route"},
		{"GET", "/v1/files", 200, `"path":"/"`},
		{"GET", "/v1/files/d%2F", 200, `"path":"/d/"`},
		{"POST", "/v1/fsync/f", 200, `"path":"/f"`},
		{"POST", "/v1/mkdir/", 400, "invalid_path"},
		{"POST", "/v1/mkdir/d%2Fy", 201, `"path":"/d/y"`},
	} {
		resp, b := e.Do(tc.method, tc.path, nil)
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.body)
		}
	}
}

// TestKeepAliveAfterIdle: a write deadline set for one answer (a body's
// idle deadline, the small-range path's gathered write) does not outlive
// it. A client that reuses its connection after a pause longer than the
// idle timeout gets its next answer, whichever path answers it; JSON
// answers set no deadline of their own, so this holds only while
// net/http clears the deadline after each request and batchConn passes
// that through.
func TestKeepAliveAfterIdle(t *testing.T) {
	const idle = 200 * time.Millisecond
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": strings.Repeat("x", 8192)},
		Cfg: api.Config{IdleTimeout: idle}})
	conn, err := net.Dial("tcp", e.TS.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i, tc := range []struct {
		req  string
		want int
	}{
		{"GET /v1/files/f HTTP/1.1\r\nHost: t\r\n\r\n", http.StatusOK},
		{"GET /v1/files/f HTTP/1.1\r\nHost: t\r\nRange: bytes=0-4095\r\n\r\n", http.StatusPartialContent},
		{"GET /v1/files/missing HTTP/1.1\r\nHost: t\r\n\r\n", http.StatusNotFound},
		{"HEAD /v1/files/f HTTP/1.1\r\nHost: t\r\n\r\n", http.StatusOK},
		{"GET /v1/files/missing HTTP/1.1\r\nHost: t\r\n\r\n", http.StatusNotFound},
	} {
		if i > 0 {
			time.Sleep(3 * idle) // past any deadline the last answer set
		}
		if _, err := io.WriteString(conn, tc.req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(tc.req)[0]})
		if err != nil {
			t.Fatalf("request %d (%q): no answer: %v", i, strings.Fields(tc.req)[:2], err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.want {
			t.Fatalf("request %d: %d (body: %v), want %d", i, resp.StatusCode, err, tc.want)
		}
	}
}
