package api_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/testenv"
)

// TestSmallRangeLikeServeContent: a GET of one small range (answered by
// the API's own path) gets exactly the status, headers and bytes that
// ServeContent gives the same range; the same request with an If-Range
// that holds (so it takes ServeContent's path) is the reference. Ranges
// the fast path leaves alone (several, spaced, past the end, too large)
// are in the table too: both answers must still agree.
func TestSmallRangeLikeServeContent(t *testing.T) {
	content := rangeFileContent()
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": content, "t.txt": content[:10000], "one": "x", "big": content + content}})
	for _, file := range []string{"f", "t.txt", "one", "big"} {
		tag := headOf(t, e, "/v1/files/"+file).Get("ETag")
		for _, rng := range []string{
			"bytes=0-4095", "bytes=4096-8191", "bytes=4090-4105", "bytes=0-0", "bytes=5-", "bytes=-5",
			"bytes=-100000000", "bytes=9990-20000", "bytes=0-65535", "bytes=0-65536", "bytes=0-",
			"bytes=0-1,5-9", "bytes= 0-1", "bytes=+1-2", "bytes=1-0", "bytes=20000000-", "bytes=-0",
			"bytes=0-1,", "bytes=00-01", "items=0-1", "bytes=1", "bytes=99999999999999999999-",
		} {
			fast, fb := e.Do(http.MethodGet, "/v1/files/"+file, nil, "Range", rng)
			ref, rb := e.Do(http.MethodGet, "/v1/files/"+file, nil, "Range", rng, "If-Range", tag)
			multipart := strings.HasPrefix(fast.Header.Get("Content-Type"), "multipart/") // a random boundary each
			if fast.StatusCode != ref.StatusCode || !multipart && string(fb) != string(rb) {
				t.Errorf("%s %s: %d with %d bytes, ServeContent %d with %d bytes", file, rng, fast.StatusCode, len(fb), ref.StatusCode, len(rb))
				continue
			}
			if fast.StatusCode == http.StatusPartialContent && !multipart {
				if got, want := headersOf(fast), headersOf(ref); got != want {
					t.Errorf("%s %s: headers\n%s\nServeContent's\n%s", file, rng, got, want)
				}
			}
		}
	}
}

func headOf(t *testing.T, e *apitest.Env, path string) http.Header {
	t.Helper()
	resp, b := e.Do(http.MethodHead, path, nil)
	e.Want(resp, b, http.StatusOK, "")
	return resp.Header
}

// headersOf lists an answer's headers but Date, sorted, one a line.
func headersOf(resp *http.Response) string {
	var lines []string
	for k, vs := range resp.Header {
		if k != "Date" {
			lines = append(lines, k+": "+strings.Join(vs, ", "))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// countingListener counts the writes made to the connections it
// accepted.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestSmallRangeOneWrite: served as the daemon serves (NewHTTPServer on
// a WrapListener), a 4 KiB or 60 KiB ranged GET is one write to the
// connection, header and body together, whatever middleware is in front
// (none, the metrics, the metrics and the access log); a whole GET of a
// larger file is not gathered (it streams), and a listener that was not
// wrapped still gets whole answers.
func TestSmallRangeOneWrite(t *testing.T) {
	content := rangeFileContent()
	infoLog := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, stack := range []struct {
		name string
		env  func() *apitest.Env
	}{
		{"bare", func() *apitest.Env { return apitest.New(t, apitest.Options{Tree: map[string]string{"f": content}}) }},
		{"metrics", func() *apitest.Env { return daemonStack(t, content, api.Config{}) }},
		{"metrics and access log", func() *apitest.Env { return daemonStack(t, content, api.Config{Logger: infoLog}) }},
	} {
		e := stack.env()
		for _, wrap := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/wrapped=%v", stack.name, wrap), func(t *testing.T) { checkWrites(t, e, content, wrap) })
		}
	}
}

// checkWrites serves e's handler through NewHTTPServer on a listener that
// counts writes (wrapped by WrapListener or not) and checks how many
// writes ranged and whole GETs of /v1/files/f (content) take.
func checkWrites(t *testing.T, e *apitest.Env, content string, wrap bool) {
	cl := &countingListener{}
	ts := httptest.NewUnstartedServer(nil)
	cl.Listener = ts.Listener
	ts.Listener = cl
	if wrap {
		ts.Listener = api.WrapListener(cl)
	}
	ts.Config = e.Srv.NewHTTPServer()
	ts.Start()
	defer ts.Close()
	c := dialRaw(t, ts.Listener.Addr().String())
	for _, tc := range []struct {
		req        string
		status     int
		body       string
		wantWrites int64 // 0: more than one
	}{
		{"GET /v1/files/f HTTP/1.1\r\nHost: x\r\nRange: bytes=8192-12287\r\n\r\n", 206, content[8192:12288], 1},
		{"GET /v1/files/f HTTP/1.1\r\nHost: x\r\nRange: bytes=4-61443\r\n\r\n", 206, content[4:61444], 1},
		{"GET /v1/files/f HTTP/1.1\r\nHost: x\r\n\r\n", 200, content, 0},
	} {
		before := cl.writes.Load()
		status, body, err := c.do([]byte(tc.req))
		if err != nil || status != tc.status || string(body) != tc.body {
			t.Fatalf("%q: %d, %d bytes, %v", tc.req, status, len(body), err)
		}
		writes := cl.writes.Load() - before
		switch {
		case !wrap && writes < 2:
			t.Errorf("%q: %d writes without the wrapped listener; the count is not counting", tc.req, writes)
		case wrap && tc.wantWrites != 0 && writes != tc.wantWrites:
			t.Errorf("%q: %d writes, want %d", tc.req, writes, tc.wantWrites)
		case wrap && tc.wantWrites == 0 && writes < 2:
			t.Errorf("%q: %d writes: a whole file was gathered", tc.req, writes)
		}
	}
}

// smallRangeAllocsMax bounds the allocations of a 4 KiB ranged GET of a
// cached file through the daemon's stack, server and (allocation-free)
// client together: 29 now, most of them net/http's request parsing and
// its header snapshot, then the path walk; 66 before the small-range
// path.
const smallRangeAllocsMax = 35

// TestSmallRangeAllocs: a 4 KiB ranged GET stays within
// smallRangeAllocsMax allocations (meaningless under -race, which drops
// pooled buffers on purpose).
func TestSmallRangeAllocs(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("allocation counts mean nothing under -race")
	}
	content := rangeFileContent()
	e := daemonStack(t, content, api.Config{})
	c := dialRaw(t, e.TS.Listener.Addr().String())
	req := rangeRequest(3)
	var bad error
	allocs := testing.AllocsPerRun(200, func() {
		status, body, err := c.do(req)
		if bad == nil && (err != nil || status != http.StatusPartialContent || string(body) != content[3*4096:4*4096]) {
			bad = fmt.Errorf("%d, %d bytes, %v", status, len(body), err)
		}
	})
	if bad != nil {
		t.Fatal(bad)
	}
	t.Logf("%.1f allocations per 4 KiB ranged GET", allocs)
	if allocs > smallRangeAllocsMax {
		t.Errorf("%.1f allocations per 4 KiB ranged GET, want at most %d", allocs, smallRangeAllocsMax)
	}
}
