package dav

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/webdav"

	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/voltest"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// env is a Handler at /dav over a fresh volume.
type env struct {
	t  *testing.T
	v  *voltest.Volume
	h  *Handler
	ts *httptest.Server
	// served gets a value as each request's handler returns.
	served chan struct{}
}

func newEnv(t *testing.T, o voltest.Options) *env {
	t.Helper()
	v := voltest.New(t, o)
	e := &env{t: t, v: v, h: New(Config{Volume: v.Vol, Prefix: "/dav"}), served: make(chan struct{}, 1000)}
	e.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { e.served <- struct{}{} }()
		e.h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.ts.Close) // before the volume closes
	return e
}

// do sends a request and returns the answer with its body read.
func (e *env) do(method, path string, body io.Reader, hdr ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(b)
}

// content is the file's bytes read from the volume itself.
func (e *env) content(p string) string {
	e.t.Helper()
	b, err := e.v.Vol.FS().ReadFile(strings.TrimPrefix(p, "/"))
	if err != nil {
		e.t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func (e *env) exists(p string) bool {
	_, err := e.v.Vol.Lstat(p)
	return err == nil
}

func (e *env) noStagedFiles() {
	e.t.Helper()
	ents, _ := e.v.Vol.ReadDir(ext.StagingDir)
	if len(ents) != 0 {
		e.t.Errorf("staged files left behind: %v", ents)
	}
}

const lockBody = `<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>`

const propfindAll = `<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>`

// TestMethods runs each WebDAV method against a tree, in order (later
// steps see what earlier ones did), with the status and the volume's
// state each must leave.
func TestMethods(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{
		"f.txt": "hello", "dir/a": "aaa", "dir/sub/b": "bbbb", "empty/.keep": "",
	}})
	if err := e.v.Vol.Mkdir(ext.StagingDir, 0o700); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		method string
		path   string
		body   string
		hdr    []string
		status int
		check  func(body string) error
	}{
		{"options", "OPTIONS", "/dav/", "", nil, 200, nil},
		{"get", "GET", "/dav/f.txt", "", nil, 200, bodyIs("hello")},
		{"head", "HEAD", "/dav/f.txt", "", nil, 200, nil},
		{"range", "GET", "/dav/dir/sub/b", "", []string{"Range", "bytes=1-2"}, 206, bodyIs("bb")},
		{"get missing", "GET", "/dav/nope", "", nil, 404, nil},
		{"get collection", "GET", "/dav/dir/", "", nil, 405, nil},
		{"propfind depth 1", "PROPFIND", "/dav/", propfindAll, []string{"Depth", "1"}, 207, func(b string) error {
			for _, want := range []string{"/dav/f.txt", "/dav/dir/", "/dav/empty/", "getetag", "getcontentlength"} {
				if !strings.Contains(b, want) {
					return fmt.Errorf("listing lacks %q", want)
				}
			}
			if strings.Contains(b, "mpaged-staging") {
				return errors.New("listing shows the staging directory")
			}
			return nil
		}},
		{"propfind infinity refused", "PROPFIND", "/dav/dir/", propfindAll, []string{"Depth", "infinity"}, 403, contains("propfind-finite-depth")},
		{"propfind depth 1", "PROPFIND", "/dav/dir/", propfindAll, []string{"Depth", "1"}, 207, contains("/dav/dir/sub/")},
		{"propfind missing", "PROPFIND", "/dav/nope", propfindAll, []string{"Depth", "0"}, 404, nil},
		{"staging hidden: propfind", "PROPFIND", "/dav/.mpaged-staging/", propfindAll, []string{"Depth", "1"}, 404, nil},
		{"staging hidden: get", "GET", "/dav/.mpaged-staging/x", "", nil, 404, nil},
		{"staging hidden: put", "PUT", "/dav/.mpaged-staging/x", "evil", nil, 404, notThere(e, "/.mpaged-staging/x")},
		{"staging hidden: mkcol", "MKCOL", "/dav/.mpaged-staging/d", "", nil, 405, notThere(e, "/.mpaged-staging/d")},
		{"staging hidden: delete", "DELETE", "/dav/.mpaged-staging", "", nil, 404, isThere(e, ext.StagingDir)},
		{"staging hidden: move into", "MOVE", "/dav/f.txt", "", []string{"Destination", "/dav/.mpaged-staging/f"}, 403, isThere(e, "/f.txt")},
		{"put new", "PUT", "/dav/new.txt", "fresh", nil, 201, fileIs(e, "/new.txt", "fresh")},
		{"put replace", "PUT", "/dav/f.txt", "replaced", nil, 201, fileIs(e, "/f.txt", "replaced")},
		{"put empty", "PUT", "/dav/zero", "", nil, 201, fileIs(e, "/zero", "")},
		{"put no parent", "PUT", "/dav/nodir/x", "x", nil, 409, notThere(e, "/nodir/x")},
		{"put over collection", "PUT", "/dav/dir", "x", nil, 409, nil},
		{"mkcol", "MKCOL", "/dav/newdir", "", nil, 201, isThere(e, "/newdir")},
		{"mkcol exists", "MKCOL", "/dav/newdir", "", nil, 405, nil},
		{"mkcol over file", "MKCOL", "/dav/f.txt", "", nil, 405, nil},
		{"mkcol no parent", "MKCOL", "/dav/no/d", "", nil, 409, notThere(e, "/no")},
		{"copy", "COPY", "/dav/f.txt", "", []string{"Destination", "/dav/newdir/c.txt"}, 201, fileIs(e, "/newdir/c.txt", "replaced")},
		{"copy no overwrite", "COPY", "/dav/new.txt", "", []string{"Destination", "/dav/newdir/c.txt", "Overwrite", "F"}, 412, fileIs(e, "/newdir/c.txt", "replaced")},
		{"copy overwrite", "COPY", "/dav/new.txt", "", []string{"Destination", "/dav/newdir/c.txt"}, 204, fileIs(e, "/newdir/c.txt", "fresh")},
		{"copy tree", "COPY", "/dav/dir/", "", []string{"Destination", "/dav/dir2/"}, 201, fileIs(e, "/dir2/sub/b", "bbbb")},
		{"copy missing", "COPY", "/dav/nope", "", []string{"Destination", "/dav/x"}, 404, nil},
		{"move", "MOVE", "/dav/new.txt", "", []string{"Destination", "/dav/moved.txt"}, 201, func(string) error {
			if e.exists("/new.txt") {
				return errors.New("the source is still there")
			}
			return fileIs(e, "/moved.txt", "fresh")("")
		}},
		{"move tree", "MOVE", "/dav/dir2/", "", []string{"Destination", "/dav/newdir/dir3/"}, 201, fileIs(e, "/newdir/dir3/sub/b", "bbbb")},
		{"move into itself", "MOVE", "/dav/newdir/", "", []string{"Destination", "/dav/newdir/dir3/in/"}, 403, isThere(e, "/newdir/dir3/sub/b")},
		{"delete file", "DELETE", "/dav/moved.txt", "", nil, 204, notThere(e, "/moved.txt")},
		{"delete tree", "DELETE", "/dav/newdir/", "", nil, 204, notThere(e, "/newdir")},
		{"delete missing", "DELETE", "/dav/nope", "", nil, 404, nil},
		{"delete root", "DELETE", "/dav/", "", nil, 405, isThere(e, "/f.txt")},
		{"propfind: empty prefix declaration", "PROPFIND", "/dav/", `<D:propfind xmlns:D="DAV:"><D:prop><bar:foo xmlns:bar=""/></D:prop></D:propfind>`, nil, 400, nil},
		{"lock", "LOCK", "/dav/locked", lockBody, nil, 201, func(b string) error {
			if !e.exists("/locked") {
				return errors.New("LOCK of a new name made no file")
			}
			return contains("locktoken")(b)
		}},
		{"put on a locked file", "PUT", "/dav/locked", "x", nil, 423, fileIs(e, "/locked", "")},
		{"hostile: NUL", "GET", "/dav/a%00b", "", nil, 400, nil},
		{"hostile: dot-dot destination", "COPY", "/dav/f.txt", "", []string{"Destination", "/dav/dir/../../x"}, 400, notThere(e, "/x")},
		{"hostile: dot-dot path", "PUT", "/dav/dir/../x", "x", nil, 400, notThere(e, "/x")},
		{"hostile: empty segment", "DELETE", "/dav/dir//a", "", nil, 400, isThere(e, "/dir/a")},
	}
	for _, s := range steps {
		var body io.Reader
		if s.body != "" {
			body = strings.NewReader(s.body)
		} else if s.method == "PUT" {
			body = http.NoBody
		}
		resp, b := e.do(s.method, s.path, body, s.hdr...)
		if resp.StatusCode != s.status {
			t.Errorf("%s: %s %s: status %d, want %d (%s)", s.name, s.method, s.path, resp.StatusCode, s.status, b)
			continue
		}
		if s.check != nil {
			if err := s.check(b); err != nil {
				t.Errorf("%s: %v", s.name, err)
			}
		}
	}
	e.noStagedFiles()
}

func bodyIs(want string) func(string) error {
	return func(b string) error {
		if b != want {
			return fmt.Errorf("body %q, want %q", b, want)
		}
		return nil
	}
}

func contains(want string) func(string) error {
	return func(b string) error {
		if !strings.Contains(b, want) {
			return fmt.Errorf("body lacks %q: %s", want, b)
		}
		return nil
	}
}

func fileIs(e *env, p, want string) func(string) error {
	return func(string) error {
		if got := e.content(p); got != want {
			return fmt.Errorf("%s holds %q, want %q", p, got, want)
		}
		return nil
	}
}

func isThere(e *env, p string) func(string) error {
	return func(string) error {
		if !e.exists(p) {
			return fmt.Errorf("%s is gone", p)
		}
		return nil
	}
}

func notThere(e *env, p string) func(string) error {
	return func(string) error {
		if e.exists(p) {
			return fmt.Errorf("%s exists", p)
		}
		return nil
	}
}

// TestReadOnly: on a read-only volume every method that writes answers
// 403 and changes nothing; the reading methods work.
func TestReadOnly(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "data", "d/x": "x"}, ReadOnly: true})
	patch := `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:t">1</x></D:prop></D:set></D:propertyupdate>`
	for _, tc := range []struct {
		method, path, body string
		hdr                []string
		status             int
	}{
		{"PUT", "/dav/f", "new", nil, 403},
		{"PUT", "/dav/g", "new", nil, 403},
		{"DELETE", "/dav/f", "", nil, 403},
		{"MKCOL", "/dav/m", "", nil, 403},
		{"COPY", "/dav/f", "", []string{"Destination", "/dav/c"}, 403},
		{"MOVE", "/dav/f", "", []string{"Destination", "/dav/c"}, 403},
		{"PROPPATCH", "/dav/f", patch, nil, 403},
		{"LOCK", "/dav/f", lockBody, nil, 403},
		{"UNLOCK", "/dav/f", "", []string{"Lock-Token", "<opaquelocktoken:x>"}, 403},
		{"OPTIONS", "/dav/", "", nil, 200},
		{"PROPFIND", "/dav/", propfindAll, []string{"Depth", "1"}, 207},
		{"GET", "/dav/f", "", nil, 200},
		{"HEAD", "/dav/f", "", nil, 200},
	} {
		resp, b := e.do(tc.method, tc.path, strings.NewReader(tc.body), tc.hdr...)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tc.method, tc.path, resp.StatusCode, tc.status, b)
		}
	}
	if got := e.content("/f"); got != "data" {
		t.Errorf("f holds %q after refused writes", got)
	}
	for _, p := range []string{"/g", "/m", "/c"} {
		if e.exists(p) {
			t.Errorf("%s was created on a read-only volume", p)
		}
	}
	// The FileSystem refuses on its own too (a caller without the
	// Handler's check).
	ctx := context.Background()
	if _, err := e.h.FS().OpenFile(ctx, "/f", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("OpenFile for writing on a read-only volume: %v, want a permission error", err)
	}
}

// TestPutCutMidBody: a client that promises a body and hangs up part-way
// leaves the old content and no staged file; so does a body shorter than
// its Content-Length that ends cleanly at the FileSystem.
func TestPutCutMidBody(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "the old content"}})
	conn, err := net.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /dav/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
	conn.Write(make([]byte, 300_000))
	conn.Close()
	select {
	case <-e.served:
	case <-time.After(10 * time.Second):
		t.Fatal("the cut PUT did not end")
	}
	if got := e.content("/f"); got != "the old content" {
		t.Errorf("after a cut PUT: %q", got)
	}

	// At the FileSystem: the request declared 10 bytes and the copy
	// ends cleanly after 4, through ReadFrom and through plain Writes.
	for _, how := range []string{"ReadFrom", "Write"} {
		st := &reqState{putLength: 10}
		ctx := context.WithValue(context.Background(), stateKey{}, st)
		f, err := e.h.FS().OpenFile(ctx, "/f", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		if how == "ReadFrom" {
			_, werr = f.(io.ReaderFrom).ReadFrom(strings.NewReader("abcd"))
		} else {
			_, werr = f.Write([]byte("abcd"))
		}
		cerr := f.Close()
		if !errors.Is(errors.Join(werr, cerr), ErrShortBody) {
			t.Errorf("%s of a short body: write %v, close %v; want ErrShortBody", how, werr, cerr)
		}
		if statusOf(st.volumeErr()) != http.StatusBadRequest {
			t.Errorf("%s: the request notes %v, want a 400 cause", how, st.volumeErr())
		}
		if got := e.content("/f"); got != "the old content" {
			t.Errorf("%s of a short body replaced the file: %q", how, got)
		}
		e.noStagedFiles()
	}
	e.noStagedFiles()
}

// TestVolumeErrorStatuses: ENOSPC answers 507 and EIO 500, as on /v1,
// and neither replaces the file.
func TestVolumeErrorStatuses(t *testing.T) {
	e := newEnv(t, voltest.Options{Size: "8M", Faults: true, Tree: map[string]string{"f": "old"}})
	resp, b := e.do("PUT", "/dav/f", bytes.NewReader(make([]byte, 20<<20)))
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("PUT over the volume's size: %d %s, want 507", resp.StatusCode, b)
	}
	rule := e.v.Faults.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev, uring.OpWrite), Fault: faultring.Fault{Errno: syscall.EIO}})
	resp, b = e.do("PUT", "/dav/f", strings.NewReader("new content"))
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("PUT with the device failing writes: %d %s, want 500", resp.StatusCode, b)
	}
	e.v.Faults.Remove(rule)
	if got := e.content("/f"); got != "old" {
		t.Errorf("after ENOSPC and EIO: %q", got)
	}
	e.noStagedFiles()
	resp, b = e.do("PUT", "/dav/f", strings.NewReader("new content"))
	if resp.StatusCode != http.StatusCreated || e.content("/f") != "new content" {
		t.Errorf("PUT once the device works: %d %s", resp.StatusCode, b)
	}
}

// TestDeadProps: PROPPATCH sets and removes dead properties; they follow
// the file through MOVE, COPY and a replacing PUT, and go with DELETE.
func TestDeadProps(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "x", "d/y": "y"}})
	set := func(name, val string) string {
		return `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><t:` + name +
			` xmlns:t="urn:test">` + val + `</t:` + name + `></D:prop></D:set></D:propertyupdate>`
	}
	remove := `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:remove><D:prop><t:color xmlns:t="urn:test"/></D:prop></D:remove></D:propertyupdate>`
	propOf := func(p string) string {
		t.Helper()
		resp, b := e.do("PROPFIND", p, strings.NewReader(propfindAll), "Depth", "0")
		if resp.StatusCode != 207 {
			t.Fatalf("PROPFIND %s: %d %s", p, resp.StatusCode, b)
		}
		return b
	}
	for _, tc := range []struct {
		step   func()
		path   string
		want   string // "" : no color property
		reason string
	}{
		{func() { e.do("PROPPATCH", "/dav/f", strings.NewReader(set("color", "blue"))) }, "/dav/f", "blue", "set"},
		{func() { e.do("PROPPATCH", "/dav/d/", strings.NewReader(set("color", "red"))) }, "/dav/d/", "red", "set on a collection"},
		{func() { e.do("PUT", "/dav/f", strings.NewReader("new bytes")) }, "/dav/f", "blue", "kept by a replacing PUT"},
		{func() { e.do("MOVE", "/dav/f", nil, "Destination", "/dav/g") }, "/dav/g", "blue", "moved"},
		{func() { e.do("COPY", "/dav/g", nil, "Destination", "/dav/h") }, "/dav/h", "blue", "copied"},
		{func() { e.do("PROPPATCH", "/dav/h", strings.NewReader(remove)) }, "/dav/h", "", "removed"},
		{func() {}, "/dav/g", "blue", "the copy's removal leaves the source"},
		{func() { e.do("DELETE", "/dav/g", nil); e.do("PUT", "/dav/g", strings.NewReader("again")) }, "/dav/g", "", "a new file at a deleted name"},
	} {
		tc.step()
		b := propOf(tc.path)
		has := strings.Contains(b, "color")
		if tc.want == "" && has || tc.want != "" && !strings.Contains(b, ">"+tc.want+"<") {
			t.Errorf("%s: %s shows %s, want color %q", tc.reason, tc.path, b, tc.want)
		}
	}
}

// TestGetStreamsLargeFile: a file larger than the engine's cache comes
// back whole and in order, ranges included, and COPY of it matches.
func TestGetStreamsLargeFile(t *testing.T) {
	e := newEnv(t, voltest.Options{Size: "64M"})
	data := make([]byte, 12<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	resp, b := e.do("PUT", "/dav/big", bytes.NewReader(data))
	if resp.StatusCode != 201 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", "/dav/big", nil)
	if resp.StatusCode != 200 || b != string(data) {
		t.Fatalf("GET: %d, %d bytes, equal %v", resp.StatusCode, len(b), b == string(data))
	}
	if resp.Header.Get("ETag") == "" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET headers: %v", resp.Header)
	}
	resp, b = e.do("GET", "/dav/big", nil, "Range", "bytes=9000000-9000099")
	if resp.StatusCode != 206 || b != string(data[9000000:9000100]) {
		t.Errorf("ranged GET: %d", resp.StatusCode)
	}
	resp, b = e.do("COPY", "/dav/big", nil, "Destination", "/dav/big2")
	if resp.StatusCode != 201 {
		t.Fatalf("COPY: %d %s", resp.StatusCode, b)
	}
	if e.content("/big2") != string(data) {
		t.Error("the copy differs")
	}
}

// discardWriter is a ResponseWriter that keeps nothing of the body.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) WriteHeader(s int) {
	if d.status == 0 {
		d.status = s
	}
}
func (d *discardWriter) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.status = 200
	}
	d.n += int64(len(p))
	return len(p), nil
}

// TestNoWholeFileBuffers: GET and COPY of a 16 MiB file allocate a small
// part of its size: they stream through the page cache in chunks.
func TestNoWholeFileBuffers(t *testing.T) {
	e := newEnv(t, voltest.Options{Size: "64M"})
	const size = 16 << 20
	resp, b := e.do("PUT", "/dav/big", io.LimitReader(rand.NewChaCha8([32]byte{7}), size))
	if resp.StatusCode != 201 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	for _, tc := range []struct {
		method string
		hdr    []string
		status int
		body   int64
	}{
		{"GET", nil, 200, size},
		{"COPY", []string{"Destination", "/dav/big2"}, 201, -1},
	} {
		req := httptest.NewRequest(tc.method, "/dav/big", nil)
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			req.Header.Set(tc.hdr[i], tc.hdr[i+1])
		}
		w := &discardWriter{h: http.Header{}}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		e.h.ServeHTTP(w, req)
		runtime.ReadMemStats(&after)
		if w.status != tc.status || tc.body >= 0 && w.n != tc.body {
			t.Fatalf("%s: status %d, %d bytes", tc.method, w.status, w.n)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d bytes allocated", tc.method, alloc)
		if alloc > size/4 {
			t.Errorf("%s of a %d-byte file allocated %d bytes", tc.method, size, alloc)
		}
	}
	if fi, err := e.v.Vol.Stat("/big2"); err != nil || fi.Size != size {
		t.Errorf("the copy: %+v %v", fi, err)
	}
}

// TestPutThroughWrites: a caller that writes with Write (not ReadFrom)
// commits at Close, once; a second Close reports the same outcome.
func TestPutThroughWrites(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "old"}})
	ctx := context.WithValue(context.Background(), stateKey{}, &reqState{putLength: 8})
	f, err := e.h.FS().OpenFile(ctx, "/f", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"new ", "data"} {
		if _, err := f.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.content("/f"); got != "old" {
		t.Errorf("before Close: %q", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := e.content("/f"); got != "new data" {
		t.Errorf("after Close: %q", got)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != 8 {
		t.Errorf("Stat after Close: %v %v", fi, err)
	}
	e.noStagedFiles()
}

// TestOverwriteKeepsDestination: a MOVE or COPY with Overwrite: T over an
// existing file replaces it in one step (a rename) or not at all. webdav
// deletes the destination first; a MOVE whose source is gone (a client
// retrying a MOVE that went through) then lost the file it had moved, and
// a COPY that ran out of space lost the file it was to replace. Both
// failed before the FileSystem deferred that deletion.
func TestOverwriteKeepsDestination(t *testing.T) {
	big := strings.Repeat("b", 5<<20)
	e := newEnv(t, voltest.Options{Size: "8M", Tree: map[string]string{"big": big, "f": "old", "g": "gee", "h": "aitch"}})
	set := `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><t:color xmlns:t="urn:test">red</t:color></D:prop></D:set></D:propertyupdate>`
	for _, p := range []string{"/dav/f", "/dav/h"} {
		if resp, b := e.do("PROPPATCH", p, strings.NewReader(set)); resp.StatusCode != 207 {
			t.Fatalf("PROPPATCH %s: %d %s", p, resp.StatusCode, b)
		}
	}
	for _, s := range []struct {
		name        string
		method, src string
		dst         string
		status      int
		check       func(string) error
	}{
		{"copy out of space", "COPY", "/dav/big", "/dav/f", 507, fileIs(e, "/f", "old")},
		{"move of a missing source", "MOVE", "/dav/nope", "/dav/f", 404, fileIs(e, "/f", "old")},
		{"copy over a file", "COPY", "/dav/g", "/dav/h", 204, fileIs(e, "/h", "gee")},
		{"move over a file", "MOVE", "/dav/g", "/dav/f", 204, func(string) error {
			if e.exists("/g") {
				return errors.New("the source is still there")
			}
			return fileIs(e, "/f", "gee")("")
		}},
	} {
		resp, b := e.do(s.method, s.src, nil, "Destination", s.dst, "Overwrite", "T")
		if resp.StatusCode != s.status {
			t.Errorf("%s: %s %s -> %s: status %d, want %d (%s)", s.name, s.method, s.src, s.dst, resp.StatusCode, s.status, b)
			continue
		}
		if err := s.check(b); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
	// The replaced files' dead properties went with them (g had none).
	for _, p := range []string{"/dav/f", "/dav/h"} {
		if _, b := e.do("PROPFIND", p, strings.NewReader(propfindAll), "Depth", "0"); strings.Contains(b, "color") {
			t.Errorf("%s kept the dead properties of the file it replaced: %s", p, b)
		}
	}
	e.noStagedFiles()
}

// TestDestinationOutsidePrefix: a Destination must name something under
// the prefix. webdav strips the prefix as a string, so "/davx" named the
// volume's "/x" (a COPY there wrote it) before the handler checked.
func TestDestinationOutsidePrefix(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "data"}})
	for _, dst := range []string{"/davx", "/dav.old/f", "/v1/files/x", "http://elsewhere.invalid/dav/x"} {
		resp, b := e.do("COPY", "/dav/f", nil, "Destination", dst)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("COPY to %s: status %d, want 502 (%s)", dst, resp.StatusCode, b)
		}
	}
	if resp, b := e.do("COPY", "/dav/f", nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("COPY without a Destination: %d, want 400 (%s)", resp.StatusCode, b)
	}
	for _, p := range []string{"/x", "/.old", "/f.old"} {
		if e.exists(p) {
			t.Errorf("%s was written outside the Destination's prefix", p)
		}
	}
}

// TestLockBounds: a LOCK body is bounded like a PROPFIND's (its owner is
// kept with the lock), and no lock outlives maxLockTimeout: an Infinite
// or longer request gets the maximum, and says so in its answer, so a
// client that vanished does not hold a file locked until the restart.
func TestLockBounds(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "data"}})
	huge := `<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>` +
		strings.Repeat("o", maxXMLBody) + `</D:owner></D:lockinfo>`
	resp, b := e.do("LOCK", "/dav/f", strings.NewReader(huge))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("LOCK with a %d-byte body: %d, want 413 (%.200s)", len(huge), resp.StatusCode, b)
	}
	max := fmt.Sprintf("Second-%d", int(maxLockTimeout.Seconds()))
	for i, tc := range []struct{ asked, want string }{
		{"", max},
		{"Infinite", max},
		{"Second-4100000000", max},
		{"Infinite, Second-4100000000", max},
		{"Second-60", "Second-60"},
	} {
		name := fmt.Sprintf("/dav/l%d", i)
		hdr := []string{}
		if tc.asked != "" {
			hdr = []string{"Timeout", tc.asked}
		}
		resp, b := e.do("LOCK", name, strings.NewReader(lockBody), hdr...)
		if resp.StatusCode != http.StatusCreated || !strings.Contains(b, "<D:timeout>"+tc.want+"</D:timeout>") {
			t.Errorf("LOCK with Timeout %q: %d %s, want a %s lock", tc.asked, resp.StatusCode, b, tc.want)
		}
	}
}

// TestDeadPropBounds: dead properties live in memory, so a file's and all
// files' are bounded; a PROPPATCH past a bound is refused whole (507 in
// its multistatus) and keeps nothing of itself, and what is dropped
// (removed, deleted, replaced) makes room again. Unbounded before.
func TestDeadPropBounds(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "x", "g": "y"}})
	set := func(name string, size int) string {
		return `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><t:` + name +
			` xmlns:t="urn:test">` + strings.Repeat("v", size) + `</t:` + name + `></D:prop></D:set></D:propertyupdate>`
	}
	resp, b := e.do("PROPPATCH", "/dav/f", strings.NewReader(set("small", 10)+""))
	if resp.StatusCode != 207 || !strings.Contains(b, "200 OK") {
		t.Fatalf("a small PROPPATCH: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("PROPPATCH", "/dav/f", strings.NewReader(set("huge", maxPropBytesPerFile)))
	if resp.StatusCode != 207 || !strings.Contains(b, "507 Insufficient Storage") {
		t.Errorf("a PROPPATCH past the per-file bound: %d %.300s", resp.StatusCode, b)
	}
	if _, b := e.do("PROPFIND", "/dav/f", strings.NewReader(propfindAll), "Depth", "0"); strings.Contains(b, "huge") || !strings.Contains(b, "small") {
		t.Errorf("after the refused PROPPATCH: %.500s", b)
	}

	// The total bound, and the room dropping makes, at the store.
	k := func(i uint32) propKey { return propKey{ino: i, gen: 1} }
	patch := func(name string, size int) []webdav.Proppatch {
		return []webdav.Proppatch{{Props: []webdav.Property{{XMLName: xml.Name{Space: "urn:t", Local: name}, InnerXML: bytes.Repeat([]byte("v"), size)}}}}
	}
	s := newPropStore()
	s.perFile, s.total = 100, 250
	for _, st := range []struct {
		do     func() []webdav.Propstat
		status int
		bytes  int64
	}{
		{func() []webdav.Propstat { return s.patch(k(1), patch("a", 90)) }, 200, 96},
		{func() []webdav.Propstat { return s.patch(k(1), patch("b", 10)) }, 507, 96},
		{func() []webdav.Propstat { return s.patch(k(2), patch("a", 90)) }, 200, 192},
		{func() []webdav.Propstat { return s.patch(k(3), patch("a", 90)) }, 507, 192},
		{func() []webdav.Propstat { s.drop(k(1)); return s.patch(k(3), patch("a", 90)) }, 200, 192},
		{func() []webdav.Propstat {
			return s.patch(k(3), []webdav.Proppatch{{Remove: true, Props: patch("a", 0)[0].Props}})
		}, 200, 96},
		{func() []webdav.Propstat { s.replaced(&[]propKey{k(2)}[0], false, k(4), nil); return nil }, 0, 0},
	} {
		got := st.do()
		if st.status != 0 && (len(got) != 1 || got[0].Status != st.status) {
			t.Errorf("step with %d bytes stored: %+v, want status %d", s.bytes, got, st.status)
		}
		if s.bytes != st.bytes {
			t.Errorf("%d bytes counted, want %d", s.bytes, st.bytes)
		}
	}
}

// TestCopyIntoItself: a COPY or MOVE whose source and Destination contain
// one another (or are one name, a slash apart) is 403 and changes nothing. webdav lists a COPY's source
// after it made the destination, so a COPY into its own subtree copied the
// destination into itself again, level on level (the test hung); and it
// removes an overwritten destination tree first, so a MOVE or COPY onto
// an ancestor of its source deleted the source with it. webdav compares
// source and Destination as strings, so a MOVE of /dir/a to /dir/a/
// deleted /dir/a, then failed to rename it onto itself.
func TestCopyIntoItself(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"dir/a": "a", "dir/sub/b": "b"}})
	for _, s := range [][3]string{
		{"COPY", "/dav/dir/", "/dav/dir/in/"},
		{"COPY", "/dav/dir/", "/dav/dir/in/deeper/"},
		{"COPY", "/dav/", "/dav/x/"},
		{"COPY", "/dav/dir/sub/", "/dav/dir/"},
		{"MOVE", "/dav/dir/sub/", "/dav/dir/"},
		{"MOVE", "/dav/dir/sub/b", "/dav/dir"},
		{"MOVE", "/dav/dir/a", "/dav/dir/a/"},
		{"MOVE", "/dav/dir/sub/", "/dav/dir/sub"},
		{"COPY", "/dav/dir/a", "/dav/dir/a/"},
	} {
		resp, b := e.do(s[0], s[1], nil, "Destination", s[2], "Overwrite", "T")
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s to %s: %d, want 403 (%s)", s[0], s[1], s[2], resp.StatusCode, b)
		}
	}
	for _, p := range []string{"/dir/in", "/x"} {
		if e.exists(p) {
			t.Errorf("%s was made by a refused COPY", p)
		}
	}
	for p, want := range map[string]string{"/dir/a": "a", "/dir/sub/b": "b"} {
		if !e.exists(p) || e.content(p) != want {
			t.Errorf("%s lost to a refused COPY or MOVE", p)
		}
	}
	if resp, b := e.do("COPY", "/dav/dir/", nil, "Destination", "/dav/dir2/"); resp.StatusCode != 201 || e.content("/dir2/sub/b") != "b" {
		t.Errorf("COPY beside itself: %d %s", resp.StatusCode, b)
	}
}

// TestPutContentRange: a PUT with Content-Range (a client resuming or
// patching part of a file) is 400, as RFC 9110 9.3.4 requires of a server
// without partial PUT; webdav ignored the header and replaced the whole
// file with the fragment before the handler refused it.
func TestPutContentRange(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "0123456789"}})
	resp, b := e.do("PUT", "/dav/f", strings.NewReader("ab"), "Content-Range", "bytes 4-5/10")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT with Content-Range: %d, want 400 (%s)", resp.StatusCode, b)
	}
	if got := e.content("/f"); got != "0123456789" {
		t.Errorf("after a PUT with Content-Range the file holds %q", got)
	}
	e.noStagedFiles()
}

// TestPropfindDepthInfinity: a PROPFIND of the whole tree (Depth:
// infinity, or no Depth) is refused with 403 and the RFC 4918
// propfind-finite-depth precondition; depths 0 and 1 answer 207.
func TestPropfindDepthInfinity(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"d/f": "x"}})
	for _, tc := range []struct {
		depth string // "" sends no Depth header
		want  int
	}{
		{"infinity", http.StatusForbidden},
		{"Infinity", http.StatusForbidden},
		{"", http.StatusForbidden},
		{"0", http.StatusMultiStatus},
		{"1", http.StatusMultiStatus},
	} {
		var hdr []string
		if tc.depth != "" {
			hdr = []string{"Depth", tc.depth}
		}
		resp, b := e.do("PROPFIND", "/dav/d/", nil, hdr...)
		if resp.StatusCode != tc.want {
			t.Errorf("PROPFIND Depth %q: %d, want %d (%s)", tc.depth, resp.StatusCode, tc.want, b)
		}
		if tc.want == http.StatusForbidden && !strings.Contains(string(b), "propfind-finite-depth") {
			t.Errorf("PROPFIND Depth %q: body does not name propfind-finite-depth: %s", tc.depth, b)
		}
	}
}

// TestRemoveAllLeavesReplacedFile: FS.RemoveAll, asked by a COPY or MOVE
// to clear its destination, keeps a regular file that the rename will
// replace, also when the MOVE's source vanished after the handler looked
// (the rename then fails and the file stays); it removes what a rename
// cannot replace (a directory, another link of the source's inode) and
// anything asked outside a COPY or MOVE.
func TestRemoveAllLeavesReplacedFile(t *testing.T) {
	e := newEnv(t, voltest.Options{Tree: map[string]string{"f": "x", "src": "s", "d/y": "y"}})
	for _, tc := range []struct {
		verb, src, dst string
		kept           bool
	}{
		{"MOVE", "/gone", "/f", true},
		{"COPY", "/src", "/f", true},
		{"MOVE", "/src", "/f", true},
		{"DELETE", "", "", false},
		{"MOVE", "/d", "/f", false},
		{"COPY", "/src", "/d", false},
	} {
		name := tc.dst
		if name == "" {
			name = "/f"
		}
		st := &reqState{verb: tc.verb, src: tc.src, dst: tc.dst}
		if err := e.h.FS().RemoveAll(context.WithValue(context.Background(), stateKey{}, st), name); err != nil {
			t.Fatalf("%s %s -> %s: RemoveAll: %v", tc.verb, tc.src, tc.dst, err)
		}
		if e.exists(name) != tc.kept {
			t.Errorf("%s %s -> %s: %s still there: %v, want %v", tc.verb, tc.src, tc.dst, name, e.exists(name), tc.kept)
		}
		if !tc.kept && name == "/f" { // put it back for the next case
			if _, _, err := e.v.Vol.ReplaceFile(name, strings.NewReader("x"), 0o644, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}
