// Package apitest assembles the daemon's stack in process for tests: an
// ext4 image made by mke2fs (or one the test brings), engine.Open on the
// sync ring (optionally wrapped in a fault ring), ext.Open, api.New, and an
// httptest server in front. The api package's tests and the reliability
// drills share it.
package apitest

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// Env is an API server over one volume.
type Env struct {
	T      testing.TB
	Img    string // the image file
	Eng    *engine.Engine
	Vol    *ext.Volume
	Srv    *api.Server
	TS     *httptest.Server
	Faults *faultring.Ring // set with Options.Faults
}

// Options say what volume to make and how to serve it.
type Options struct {
	Size     string            // image size for mke2fs (default 32M)
	Tree     map[string]string // files to put in the new image: path -> content
	Image    string            // serve this existing image instead of making one
	ReadOnly bool
	Cfg      api.Config // Volume is filled in
	// Faults wraps the ring in a fault ring (seeded with FaultSeed) that
	// tests add rules to through Env.Faults.
	Faults    bool
	FaultSeed uint64
	// CacheBytes is the page cache's size (default 8 MiB).
	CacheBytes int64
	// ServerLog, if set, is the HTTP server's error log: where net/http
	// reports a handler's panic (it recovers it and drops the connection).
	ServerLog *log.Logger
}

// New makes the volume and serves it; any failure fails the test.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	e, err := Open(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Open is New returning the engine's or the volume's refusal to open
// instead of failing the test (corrupt images are expected to be
// refused). Making the image still fails the test.
func Open(t testing.TB, o Options) (*Env, error) {
	t.Helper()
	e := &Env{T: t, Img: o.Image}
	if e.Img == "" {
		e.Img = MakeImage(t, o.Size, o.Tree)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 8 << 20
	}
	cfg := engine.Config{Path: e.Img, Write: !o.ReadOnly, Backend: uring.BackendSync, CacheBytes: o.CacheBytes, Logf: t.Logf}
	if o.Faults {
		cfg.WrapRing = func(r uring.Ring) uring.Ring {
			e.Faults = faultring.New(r, o.FaultSeed)
			return e.Faults
		}
	}
	var err error
	if e.Eng, err = engine.Open(cfg); err != nil {
		return nil, err
	}
	if e.Vol, err = ext.Open(ext.Config{Device: e.Eng.Device, Cache: e.Eng.Cache, DeviceSize: e.Eng.Info.Size,
		SectorSize: e.Eng.Info.SectorSize, ReadOnly: o.ReadOnly, Logf: t.Logf}); err != nil {
		e.Eng.Close()
		return nil, err
	}
	o.Cfg.Volume = e.Vol
	e.Srv = api.New(o.Cfg)
	e.TS = httptest.NewUnstartedServer(e.Srv.Handler())
	e.TS.Config.ErrorLog = o.ServerLog
	e.TS.Start()
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e, nil
}

// Close stops the server and closes the volume and the engine; it runs at
// the test's end unless called before. A volume a test corrupted may
// refuse to close cleanly: the error says why.
func (e *Env) Close() error {
	if e.TS == nil {
		return nil
	}
	e.TS.Close()
	e.TS = nil
	verr := e.Vol.Close()
	eerr := e.Eng.Close()
	if verr != nil {
		return fmt.Errorf("close volume: %w", verr)
	}
	if eerr != nil {
		return fmt.Errorf("close engine: %w", eerr)
	}
	return nil
}

// MakeImage makes a journal-less ext4 image of size (default 32M, 4 KiB
// blocks) holding tree, in a temporary directory.
func MakeImage(t testing.TB, size string, tree map[string]string) string {
	t.Helper()
	testenv.RequireTool(t, "mke2fs")
	src := t.TempDir()
	for name, content := range tree {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if size == "" {
		size = "32M"
	}
	img := filepath.Join(t.TempDir(), "vol.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-b", "4096", "-d", src, img, size)
	return img
}

// Do sends a request and returns the answer with its body read.
func (e *Env) Do(method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	e.T.Helper()
	req, err := http.NewRequest(method, e.TS.URL+path, body)
	if err != nil {
		e.T.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.TS.Client().Do(req)
	if err != nil {
		e.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.T.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, b
}

// Want checks a status and, for errors, the JSON error shape and code.
func (e *Env) Want(resp *http.Response, body []byte, status int, code string) {
	e.T.Helper()
	if resp.StatusCode != status {
		e.T.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if status < 400 {
		return
	}
	if err := CheckError(resp, body, code); err != nil {
		e.T.Errorf("%s %s: %v", resp.Request.Method, resp.Request.URL.Path, err)
	}
}

// CheckError checks an error answer's shape: JSON content, and a body of
// {"error": non-empty, "code": code} (any code when code is ""; a HEAD
// answer has no body to check).
func CheckError(resp *http.Response, body []byte, code string) error {
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("error %d with content type %q", resp.StatusCode, ct)
	}
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		return nil
	}
	var eb struct{ Error, Code string }
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" || eb.Code == "" || (code != "" && eb.Code != code) {
		return fmt.Errorf("error %d body %q (code %q), want code %q", resp.StatusCode, body, eb.Code, code)
	}
	return nil
}

// Get wants a 200 and returns the body.
func (e *Env) Get(path string) []byte {
	e.T.Helper()
	resp, b := e.Do(http.MethodGet, path, nil)
	e.Want(resp, b, http.StatusOK, "")
	return b
}
