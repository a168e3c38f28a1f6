package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSingleRange: the forms the fast path takes, resolved as
// ServeContent resolves them, and the ones it leaves to ServeContent.
func TestSingleRange(t *testing.T) {
	for _, tc := range []struct {
		h             string
		size          int64
		start, length int64
		ok            bool
	}{
		{"bytes=0-4095", 10000, 0, 4096, true},
		{"bytes=4096-", 10000, 4096, 5904, true},
		{"bytes=-5", 10000, 9995, 5, true},
		{"bytes=-20000", 10000, 0, 10000, true},
		{"bytes=9990-20000", 10000, 9990, 10, true},
		{"bytes=9999-9999", 10000, 9999, 1, true},
		{"bytes=007-008", 10000, 7, 2, true},
		{"bytes=10000-", 10000, 0, 0, false}, // 416 (or, for an empty file, the whole)
		{"bytes=5-4", 10000, 0, 0, false},
		{"bytes=-0", 10000, 0, 0, false},
		{"bytes=-5", 0, 0, 0, false},
		{"bytes=0-1,3-4", 10000, 0, 0, false},
		{"bytes=0-1,", 10000, 0, 0, false},
		{"bytes= 0-1", 10000, 0, 0, false},
		{"bytes=+0-1", 10000, 0, 0, false},
		{"bytes=0x1-2", 10000, 0, 0, false},
		{"bytes=1", 10000, 0, 0, false},
		{"bytes=", 10000, 0, 0, false},
		{"Bytes=0-1", 10000, 0, 0, false},
		{"bytes=1234567890123456789-", 10000, 0, 0, false},
	} {
		start, length, ok := singleRange(tc.h, tc.size)
		if ok != tc.ok || ok && (start != tc.start || length != tc.length) {
			t.Errorf("%q of %d: %d+%d %v, want %d+%d %v", tc.h, tc.size, start, length, ok, tc.start, tc.length, tc.ok)
		}
	}
}

// FuzzSingleRange: whatever Range header the fast path takes, ServeContent
// answers it with 206 and the same single range.
func FuzzSingleRange(f *testing.F) {
	for _, s := range []string{"bytes=0-4095", "bytes=-5", "bytes=5-", "bytes=9990-20000", "bytes=0-1,2-3", "bytes=007-8"} {
		f.Add(s, int64(10000))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		size = min(max(size, 0), 1<<20)
		start, length, ok := singleRange(h, size)
		if !ok {
			return
		}
		if start < 0 || length <= 0 || start+length > size {
			t.Fatalf("%q of %d: range %d+%d outside the file", h, size, start, length)
		}
		req := httptest.NewRequest(http.MethodGet, "/f", nil)
		req.Header.Set("Range", h)
		rec := httptest.NewRecorder()
		http.ServeContent(rec, req, "f", time.Time{}, strings.NewReader(strings.Repeat("x", int(size))))
		want := fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size)
		if rec.Code != http.StatusPartialContent || rec.Header().Get("Content-Range") != want || int64(rec.Body.Len()) != length {
			t.Fatalf("%q of %d: we take %s; ServeContent answers %d %q with %d bytes", h, size, want, rec.Code, rec.Header().Get("Content-Range"), rec.Body.Len())
		}
	})
}
