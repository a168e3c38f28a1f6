package api_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/internal/apitest"
)

// TestDavRoute: /dav/ is WebDAV under the /v1 rules: the token, the
// route's metrics label, the body limit, the concurrency limit, a
// read-only reason; and its ETags are /v1's.
func TestDavRoute(t *testing.T) {
	var mu sync.Mutex
	routes := map[string]int{}
	instrument := func(route string, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			routes[route]++
			mu.Unlock()
			h.ServeHTTP(w, r)
		})
	}
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f.txt": "hello"}, Cfg: api.Config{Token: "tok", MaxBodyBytes: 1000,
		MaxConcurrent: 1, QueueTimeout: 250 * time.Millisecond, Instrument: instrument}})
	auth := []string{"Authorization", "Bearer tok"}

	resp, b := e.Do("PROPFIND", "/dav/", nil, "Depth", "1")
	e.Want(resp, b, http.StatusUnauthorized, "unauthorized")
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	resp, b = e.Do("PROPFIND", "/dav/", nil, append(auth, "Depth", "1")...)
	if resp.StatusCode != http.StatusMultiStatus || !strings.Contains(string(b), "/dav/f.txt") {
		t.Fatalf("PROPFIND: %d %s", resp.StatusCode, b)
	}
	resp, b = e.Do("PUT", "/dav/big", strings.NewReader(strings.Repeat("x", 1001)), auth...)
	e.Want(resp, b, http.StatusRequestEntityTooLarge, "too_large")
	resp, b = e.Do("PUT", "/dav/f.txt", strings.NewReader("changed"), auth...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	davResp, _ := e.Do("GET", "/dav/f.txt", nil, auth...)
	v1Resp, body := e.Do("GET", "/v1/files/f.txt", nil, auth...)
	if string(body) != "changed" || davResp.Header.Get("ETag") == "" || davResp.Header.Get("ETag") != v1Resp.Header.Get("ETag") {
		t.Errorf("GET after a WebDAV PUT: %q; ETag /dav %q, /v1 %q", body, davResp.Header.Get("ETag"), v1Resp.Header.Get("ETag"))
	}
	mu.Lock()
	if routes["dav"] < 5 {
		t.Errorf("requests counted under the dav route: %v", routes)
	}
	mu.Unlock()

	// A PUT that holds the only slot makes a PROPFIND wait, then 503.
	holdOnlySlot(t, e, "/dav/slow", auth, "PROPFIND", "/dav/", append(auth, "Depth", "0")...)
}

// TestDavReadOnlyReason: a writable volume the daemon serves read-only
// refuses WebDAV writes (403) and still serves reads.
func TestDavReadOnlyReason(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "data"}, Cfg: api.Config{ReadOnlyReason: "e2fsck failed"}})
	resp, b := e.Do("PUT", "/dav/f", strings.NewReader("x"))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "e2fsck failed") {
		t.Errorf("PUT: %d %s", resp.StatusCode, b)
	}
	resp, b = e.Do("MKCOL", "/dav/d", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("MKCOL: %d %s", resp.StatusCode, b)
	}
	if got := e.Get("/dav/f"); string(got) != "data" {
		t.Errorf("GET: %q", got)
	}
}

// TestDavStalledBody: a WebDAV PUT whose body stalls past the idle timeout
// is cut off with 408, as on /v1, and replaces nothing.
func TestDavStalledBody(t *testing.T) {
	e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": "old"}, Cfg: api.Config{IdleTimeout: 200 * time.Millisecond}})
	conn, err := net.Dial("tcp", e.TS.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /dav/f HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled PUT: %d, want 408", resp.StatusCode)
	}
	if got := e.Get("/v1/files/f"); string(got) != "old" {
		t.Errorf("after a stalled PUT: %q", got)
	}
	noTempFiles(t, e)
}
