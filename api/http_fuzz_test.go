package api_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/internal/voltest"
)

// FuzzHTTP sends requests built from a fuzzed method, target, one header
// and a body to the API over a small volume: a request net/http would
// refuse to parse is skipped (the server answers it 400 itself); every
// other is answered without a panic, with no 5xx but 507 (a full volume
// is the input's doing), and every error is the API's JSON shape. The
// volume passes e2fsck -fn when the fuzzing ends.
func FuzzHTTP(f *testing.F) {
	testenv.RequireTool(f, "e2fsck")
	img := voltest.MakeImage(f, "8M", map[string]string{"f": strings.Repeat("0123456789", 1000), "d/x": "x"})
	f.Cleanup(func() { // runs after the volume is closed (cleanups run last first)
		if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
			f.Errorf("e2fsck -fn after fuzzing: %v\n%s", err, out)
		}
	})
	e := apitest.New(f, apitest.Options{Image: img, Cfg: api.Config{MaxBodyBytes: 1 << 20}})
	h := e.Srv.Handler()
	for _, s := range []struct{ method, target, hk, hv, body string }{
		{"GET", "/v1/files/f", "Range", "bytes=0-10,20-30", ""},
		{"GET", "/v1/files/d/", "If-None-Match", "*", ""},
		{"HEAD", "/v1/files/f", "If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT", ""},
		{"PUT", "/v1/files/d/new?sync=1", "If-None-Match", "*", "body"},
		{"PUT", "/v1/files/f?offset=4090", "Content-Type", "text/plain", "xyz"},
		{"DELETE", "/v1/files/d/x", "X-A", "b", ""},
		{"POST", "/v1/mkdir/a/b?parents=1", "X-A", "b", ""},
		{"POST", "/v1/fsync/f", "X-A", "b", ""},
		{"POST", "/v1/sync", "Content-Length", "3", "abc"},
		{"GET", "/v1/files/%2e%2e/f", "X-A", "b", ""},
		{"GET", "/readyz", "X-A", "b", ""},
	} {
		f.Add(s.method, s.target, s.hk, s.hv, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target, hk, hv string, body []byte) {
		raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: mpaged\r\n%s: %s\r\nContent-Length: %d\r\n\r\n", method, target, hk, hv, len(body))
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + string(body))))
		if err != nil {
			return
		}
		rec := &cappedRecorder{ResponseRecorder: httptest.NewRecorder()}
		h.ServeHTTP(rec, req)
		resp := rec.Result()
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusInsufficientStorage {
			t.Fatalf("%q: %d %s", raw, resp.StatusCode, rec.Body.Bytes())
		}
		if resp.StatusCode >= 400 && req.Method != http.MethodHead {
			if err := apitest.CheckError(resp, bytes.Clone(rec.Body.Bytes()), ""); err != nil {
				t.Fatalf("%q: %v", raw, err)
			}
		}
	})
}

// cappedRecorder keeps the first fuzzBodyCap bytes of a body and then
// fails the write, as a client that hangs up would: a PUT at a large
// offset makes a sparse file of terabytes, which a later GET would
// otherwise stream into memory for hours.
type cappedRecorder struct {
	*httptest.ResponseRecorder
}

const fuzzBodyCap = 1 << 20

func (c *cappedRecorder) Write(p []byte) (int, error) {
	if c.Body.Len()+len(p) > fuzzBodyCap {
		return 0, errors.New("fuzz: body over the cap (the client hung up)")
	}
	return c.ResponseRecorder.Write(p)
}
