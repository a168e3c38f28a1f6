package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoOverwritesOnlyItsOwn: demo runs twice on its own file, and
// refuses an ext image, a file of other bytes and a missing directory.
func TestDemoOverwritesOnlyItsOwn(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "demo.img")
	for range 2 {
		if code, out, errs := runCmd("demo", "--volume", own, "--size", "1MiB", "--ring", "sync"); code != 0 || !strings.Contains(out, "verified") {
			t.Fatalf("demo on its own file: exit %d\n%s%s", code, out, errs)
		}
	}
	img, _ := testImage(t, "ext2")
	before, _ := os.ReadFile(img)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("a user's data"), 0o644)
	for _, path := range []string{img, other, filepath.Join(dir, "no/such/dir/demo.img"), "/dev/null"} {
		code, _, errs := runCmd("demo", "--volume", path, "--size", "1MiB", "--ring", "sync")
		if code != 1 || strings.Count(errs, "\n") != 1 {
			t.Errorf("demo on %s: exit %d, stderr %q", path, code, errs)
		}
	}
	if after, _ := os.ReadFile(img); string(after) != string(before) {
		t.Error("demo changed an ext image it refused")
	}
}

// TestUsageAndHelp: flag errors exit 2 with one line; --help prints usage
// on stdout and exits 0; version works.
func TestUsageAndHelp(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		code      int
		stdoutHas string
		stderrHas string
	}{
		{[]string{"ls", "--volume"}, 2, "", "flag needs an argument"},
		{[]string{"ls", "--bogus"}, 2, "", "flag provided but not defined"},
		{[]string{"serve", "--fsck", "sometimes"}, 2, "", "--fsck"},
		{[]string{"serve", "--log-format", "xml"}, 2, "", "--log-format"},
		{[]string{"serve", "extra"}, 2, "", "unexpected arguments"},
		{[]string{"ls", "--help"}, 0, "usage: mpaged ls", ""},
		{[]string{"serve", "-h"}, 0, "-listen", ""},
		{[]string{"--help"}, 0, "serve", ""},
		{[]string{"help"}, 0, "usage: mpaged", ""},
		{[]string{}, 2, "", "usage: mpaged"},
		{[]string{"nonsense"}, 2, "", "unknown command"},
		{[]string{"version"}, 0, "mpaged ", ""},
		{[]string{"--version"}, 0, "ring backends", ""},
	} {
		code, out, errs := runCmd(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdoutHas) || !strings.Contains(errs, tc.stderrHas) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
		if code == 2 && len(tc.args) > 0 && tc.args[0] != "nonsense" && strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: usage error in %d lines:\n%s", tc.args, strings.Count(errs, "\n"), errs)
		}
		if tc.code == 0 && errs != "" {
			t.Errorf("%v: stderr %q", tc.args, errs)
		}
	}
}
