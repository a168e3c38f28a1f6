package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/voltest"
)

// TestStagingNotServed: /v1 answers every route that names the staging
// directory (or something in it) 404 not_found, and the same when a
// symbolic link leads there (at any depth, absolute or relative, through
// a link to the root); nothing under it changes, listings do not show it,
// ordinary links still work.
func TestStagingNotServed(t *testing.T) {
	vo := voltest.StagingLinks()
	e := apitest.New(t, apitest.Options{Tree: vo.Tree, Links: vo.Links})
	s := ext.StagingDir
	up := "/up" + s
	for _, tc := range []struct {
		method, route string
		paths         []string // the spelled name first, then links to it
		body          string
		hdr           []string
	}{
		{http.MethodGet, "/v1/files", []string{s + "/staged", "/d/l", "/d/e/abs", "/chain/staged", "/d/e/l/staged", up + "/staged"}, "", nil},
		{http.MethodGet, "/v1/files", []string{s + "/staged", "/d/l", "/la/staged"}, "", []string{"Range", "bytes=0-3"}},
		{http.MethodGet, "/v1/files", []string{s, "/l", "/la/", "/chain", up, "/d/up" + s + "/"}, "", nil},
		{http.MethodHead, "/v1/files", []string{s + "/staged", "/d/l", up + "/staged"}, "", nil},
		{http.MethodPut, "/v1/files", []string{s + "/x", "/l/x", up + "/x", "/d/e/l/x"}, "evil", nil},
		{http.MethodPut, "/v1/files", []string{s + "/staged", "/d/l", "/d/e/abs", "/la/staged"}, "evil", nil},
		{http.MethodPut, "/v1/files", []string{s + "/staged?offset=0", "/d/l?offset=0", "/l/staged?offset=0"}, "evil", nil},
		{http.MethodPut, "/v1/files", []string{s, up}, "evil", nil},
		{http.MethodDelete, "/v1/files", []string{s + "/staged", "/l/staged", "/d/e/l/staged", up + "/staged"}, "", nil},
		{http.MethodDelete, "/v1/files", []string{s, up, "/d/up" + s}, "", nil},
		{http.MethodPost, "/v1/mkdir", []string{s + "/n", "/l/n", "/la/n", up + "/n"}, "", nil},
		{http.MethodPost, "/v1/mkdir", []string{s + "/a/b?parents=1", "/l/a/b?parents=1", up + "/a/b?parents=1"}, "", nil},
		{http.MethodPost, "/v1/mkdir", []string{s, up, "/d/up" + s + "?parents=1"}, "", nil},
		{http.MethodPost, "/v1/fsync", []string{s + "/staged", "/d/l", "/d/e/abs", up + "/staged"}, "", nil},
		{http.MethodPost, "/v1/fsync", []string{s, "/l", up}, "", nil},
	} {
		for _, p := range tc.paths {
			resp, b := e.Do(tc.method, tc.route+p, strings.NewReader(tc.body), tc.hdr...)
			e.Want(resp, b, http.StatusNotFound, "not_found")
			if strings.Contains(string(b), voltest.StagedContent) {
				t.Errorf("%s %s%s shows the staged bytes", tc.method, tc.route, p)
			}
		}
		stagingUntouched(t, e)
	}
	// Listings leave it out, also of the root through a link.
	for _, p := range []string{"/v1/files/", "/v1/files/up", "/v1/files/d/up/"} {
		if b := e.Get(p); strings.Contains(string(b), "mpaged-staging") || !strings.Contains(string(b), `"okdir"`) {
			t.Errorf("listing %s: %s", p, b)
		}
	}
	for _, p := range []string{"/v1/files/ok", "/v1/files/okdir/f", "/v1/files/up/d/f", "/v1/files/d/up/ok"} {
		if b := e.Get(p); string(b) != "normal" {
			t.Errorf("GET %s: %q", p, b)
		}
	}
	resp, b := e.Do(http.MethodPut, "/v1/files/okdir/f", strings.NewReader("replaced"))
	e.Want(resp, b, http.StatusNoContent, "")
	if b := e.Get("/v1/files/d/f"); string(b) != "replaced" {
		t.Errorf("PUT through an ordinary link: %q", b)
	}
	// A link into staging is a name of its own: DELETE removes the link.
	resp, b = e.Do(http.MethodDelete, "/v1/files/chain", nil)
	e.Want(resp, b, http.StatusNoContent, "")
	stagingUntouched(t, e)
}

// stagingUntouched: the staging directory holds only its staged file,
// with its bytes (voltest.StagingLinks).
func stagingUntouched(t *testing.T, e *apitest.Env) {
	t.Helper()
	ents, err := e.Vol.ReadDir(ext.StagingDir)
	if err != nil || len(ents) != 1 || ents[0].Name != "staged" {
		t.Fatalf("staging directory: %+v %v", ents, err)
	}
	b, err := e.Vol.FS().ReadFile(ext.StagingDir[1:] + "/staged")
	if err != nil || string(b) != voltest.StagedContent {
		t.Fatalf("staged file: %q %v", b, err)
	}
}
