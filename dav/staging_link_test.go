package dav

import (
	"strings"
	"testing"

	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/voltest"
)

// TestStagingThroughLinks: every method that reaches the staging
// directory through a symbolic link (at any depth, absolute or relative,
// as a source or a Destination) is answered as the same method on the
// directory's own name is, nothing under it changes, listings through
// links do not show it, a tree copy does not copy from it, and ordinary
// links still work.
func TestStagingThroughLinks(t *testing.T) {
	e := newEnv(t, voltest.StagingLinks())
	s := "/dav" + ext.StagingDir
	dst := func(p string) []string { return []string{"Destination", p} }
	depth := func(d string) []string { return []string{"Depth", d} }
	const patch = `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop><Z:k>v</Z:k></D:prop></D:set></D:propertyupdate>`
	for _, tc := range []struct {
		name, method, direct string
		links                []string
		body                 string
		hdr                  []string
		linkHdr              []string // the request through a link, when its headers differ
	}{
		{"propfind dir", "PROPFIND", s + "/", []string{"/dav/l/", "/dav/la/", "/dav/chain/", "/dav/up" + ext.StagingDir + "/"}, propfindAll, depth("1"), nil},
		{"propfind file", "PROPFIND", s + "/staged", []string{"/dav/d/l", "/dav/d/e/abs", "/dav/d/up" + ext.StagingDir + "/staged"}, propfindAll, depth("0"), nil},
		{"get", "GET", s + "/staged", []string{"/dav/d/l", "/dav/d/e/abs", "/dav/chain/staged", "/dav/d/e/l/staged"}, "", nil, nil},
		{"head", "HEAD", s + "/staged", []string{"/dav/d/l", "/dav/la/staged"}, "", nil, nil},
		{"put new", "PUT", s + "/x", []string{"/dav/l/x", "/dav/up" + ext.StagingDir + "/x"}, "evil", nil, nil},
		{"put staged", "PUT", s + "/staged", []string{"/dav/d/e/l/staged", "/dav/d/up" + ext.StagingDir + "/staged"}, "evil", nil, nil},
		{"mkcol", "MKCOL", s + "/d", []string{"/dav/la/d", "/dav/up" + ext.StagingDir + "/d"}, "", nil, nil},
		{"mkcol staging", "MKCOL", s, []string{"/dav/up" + ext.StagingDir}, "", nil, nil},
		{"delete staging", "DELETE", s, []string{"/dav/up" + ext.StagingDir, "/dav/d/up" + ext.StagingDir + "/"}, "", nil, nil},
		{"delete staged", "DELETE", s + "/staged", []string{"/dav/d/e/l/staged", "/dav/l/staged"}, "", nil, nil},
		{"proppatch", "PROPPATCH", s + "/staged", []string{"/dav/d/l", "/dav/la/staged"}, patch, nil, nil},
		{"lock", "LOCK", s + "/x", []string{"/dav/l/x", "/dav/d/e/l/x"}, lockBody, nil, nil},
		{"copy source", "COPY", s + "/staged", []string{"/dav/d/l", "/dav/up" + ext.StagingDir + "/staged"}, "", dst("/dav/copied"), nil},
		{"copy destination", "COPY", "/dav/d/f", []string{"/dav/d/f"}, "", dst(s + "/c"), dst("/dav/l/c")},
		{"copy over staged", "COPY", "/dav/d/f", []string{"/dav/d/f"}, "", dst(s + "/staged"), dst("/dav/d/e/l/staged")},
		{"move source", "MOVE", s + "/staged", []string{"/dav/la/staged", "/dav/up" + ext.StagingDir + "/staged"}, "", dst("/dav/moved"), nil},
		{"move staging", "MOVE", s, []string{"/dav/up" + ext.StagingDir}, "", dst("/dav/moved"), nil},
		{"move destination", "MOVE", "/dav/d/f", []string{"/dav/d/f"}, "", dst(s + "/m"), dst("/dav/la/m")},
		{"move over staging", "MOVE", "/dav/d/e", []string{"/dav/d/e"}, "", dst(s), dst("/dav/d/up" + ext.StagingDir)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := e.do(tc.method, tc.direct, strings.NewReader(tc.body), tc.hdr...)
			want := resp.StatusCode
			if want < 400 {
				t.Fatalf("%s %s (its own name): %d, want a refusal", tc.method, tc.direct, want)
			}
			hdr := tc.hdr
			if tc.linkHdr != nil {
				hdr = tc.linkHdr
			}
			for _, p := range tc.links {
				resp, body := e.do(tc.method, p, strings.NewReader(tc.body), hdr...)
				if resp.StatusCode != want {
					t.Errorf("%s %s %v: %d, want %d as for %s", tc.method, p, hdr, resp.StatusCode, want, tc.direct)
				}
				if strings.Contains(body, voltest.StagedContent) {
					t.Errorf("%s %s shows the staged bytes", tc.method, p)
				}
			}
			e.stagingUntouched()
		})
	}
	// Listings through links do not follow them in or show the directory.
	for _, p := range []string{"/dav/", "/dav/up/", "/dav/d/up/", "/dav/d/", "/dav/d/e/"} {
		resp, body := e.do("PROPFIND", p, strings.NewReader(propfindAll), depth("1")...)
		if resp.StatusCode != 207 || strings.Contains(body, "mpaged-staging") || strings.Contains(body, "staged") {
			t.Errorf("PROPFIND %s: %d %s", p, resp.StatusCode, body)
		}
	}
	// COPY follows links (Stat): a tree holding links into staging fails
	// at them as at dangling ones (webdav stops at the first error, so a
	// partial copy stays) and copies nothing from staging.
	for _, src := range []string{"/d", "/d/e"} {
		dst := "/copy" + strings.ReplaceAll(src, "/", "_")
		resp, _ := e.do("COPY", "/dav"+src+"/", nil, "Destination", "/dav"+dst+"/", "Depth", "infinity")
		if resp.StatusCode < 400 {
			t.Errorf("COPY %s/ with links into staging: %d", src, resp.StatusCode)
		}
		for _, copied := range []string{dst + "/l", dst + "/e/l", dst + "/abs", dst + "/e/abs"} {
			if e.exists(copied) {
				t.Errorf("COPY %s/ copied %s from the staging directory", src, copied)
			}
		}
	}
	// Ordinary links, and the links themselves, still work.
	for _, p := range []string{"/dav/ok", "/dav/okdir/f", "/dav/up/d/f", "/dav/d/up/okdir/f"} {
		if resp, body := e.do("GET", p, nil); resp.StatusCode != 200 || body != "normal" {
			t.Errorf("GET %s: %d %q", p, resp.StatusCode, body)
		}
	}
	// webdav stats a DELETE's name through its link first: a link into
	// staging is answered as a dangling one (404) and stays.
	if resp, _ := e.do("DELETE", "/dav/chain", nil); resp.StatusCode != 404 || !e.exists("/chain") {
		t.Errorf("DELETE of a link into staging: %d", resp.StatusCode)
	}
	e.stagingUntouched()
}

// stagingUntouched: the staging directory holds only its staged file,
// with its bytes (voltest.StagingLinks).
func (e *env) stagingUntouched() {
	e.t.Helper()
	ents, err := e.v.Vol.ReadDir(ext.StagingDir)
	if err != nil || len(ents) != 1 || ents[0].Name != "staged" {
		e.t.Fatalf("staging directory: %+v %v", ents, err)
	}
	if got := e.content(ext.StagingDir + "/staged"); got != voltest.StagedContent {
		e.t.Fatalf("staged file: %q", got)
	}
}
