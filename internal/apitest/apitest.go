// Package apitest serves an internal/voltest volume through the API in
// process: api.New over the volume, an httptest server in front, and
// request helpers that check the API's JSON errors. The api package's
// tests and the reliability drills share it.
package apitest

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/internal/voltest"
)

// Env is an API server over one volume (Img, Eng, Vol and Faults come
// from the voltest.Volume).
type Env struct {
	*voltest.Volume
	T   testing.TB
	Srv *api.Server
	TS  *httptest.Server
}

// Options say what volume to make (see voltest.Options) and how to serve
// it.
type Options struct {
	Size       string
	Tree       map[string]string
	Links      map[string]string
	Image      string
	ReadOnly   bool
	Faults     bool
	FaultSeed  uint64
	CacheBytes int64
	Cfg        api.Config // Volume is filled in
	// ServerLog, if set, is the HTTP server's error log: where net/http
	// reports a handler's panic (it recovers it and drops the connection).
	ServerLog *log.Logger
}

func (o Options) volume() voltest.Options {
	return voltest.Options{Size: o.Size, Tree: o.Tree, Links: o.Links, Image: o.Image, ReadOnly: o.ReadOnly, Faults: o.Faults,
		FaultSeed: o.FaultSeed, CacheBytes: o.CacheBytes}
}

// New makes the volume and serves it; any failure fails the test.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	return serve(t, voltest.New(t, o.volume()), o)
}

// Open is New returning the volume's refusal to open (voltest.Open)
// instead of failing the test.
func Open(t testing.TB, o Options) (*Env, error) {
	t.Helper()
	v, err := voltest.Open(t, o.volume())
	if err != nil {
		return nil, err
	}
	return serve(t, v, o), nil
}

func serve(t testing.TB, v *voltest.Volume, o Options) *Env {
	e := &Env{Volume: v, T: t}
	o.Cfg.Volume = v.Vol
	e.Srv = api.New(o.Cfg)
	e.TS = httptest.NewUnstartedServer(e.Srv.Handler())
	e.TS.Config.ErrorLog = o.ServerLog
	// As the daemon serves: connections that gather a small answer into
	// one write.
	e.TS.Listener = api.WrapListener(e.TS.Listener)
	e.TS.Config.ConnContext = api.ConnContext
	e.TS.Start()
	t.Cleanup(e.closeServer) // before the volume closes (cleanups run last first)
	return e
}

func (e *Env) closeServer() {
	if e.TS != nil {
		e.TS.Close()
		e.TS = nil
	}
}

// Close stops the server, then closes the volume (see voltest's Close).
func (e *Env) Close() error {
	e.closeServer()
	return e.Volume.Close()
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
