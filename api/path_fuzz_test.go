package api

import (
	"strings"
	"testing"
)

// FuzzPathSegments: hasDotSegment refuses exactly the URL paths with an
// empty (but not trailing), "." or ".." segment, as a plain segment-by-
// segment reading says.
func FuzzPathSegments(f *testing.F) {
	for _, p := range []string{"/", "/v1/files/a", "/v1/files/a/", "//", "/a//b", "/.", "/..", "/a/./b", "/a/../b",
		"/a/..", "/a/.", "/...", "/a/.../b", "/.hidden", "/a./b", "/a/..b", "/v1/files/" + strings.Repeat("x/", 50)} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, "/") {
			p = "/" + p // net/http's server paths always start with a slash
		}
		segs := strings.Split(p, "/")[1:]
		want := false
		for i, s := range segs {
			if (s == "" && i != len(segs)-1) || s == "." || s == ".." {
				want = true
			}
		}
		if got := hasDotSegment(p); got != want {
			t.Fatalf("hasDotSegment(%q) = %v, segment by segment %v", p, got, want)
		}
	})
}
