package ext

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stagingLinkVolume is a writable volume whose staging directory holds
// one staged file, with symbolic links into it at several depths
// (absolute and relative targets, a chain, links to ancestors of it) and
// ordinary links beside them.
func stagingLinkVolume(t *testing.T) *testVolume {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, stagingName, "staged"), []byte("half-written"))
	writeFile(t, filepath.Join(src, "d", "f"), []byte("normal"))
	if err := os.MkdirAll(filepath.Join(src, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"l":       stagingName,                     // relative, to the directory
		"la":      StagingDir,                      // absolute, to the directory
		"chain":   "l",                             // a link to such a link
		"d/l":     "../" + stagingName + "/staged", // relative, to a file in it
		"d/e/l":   "../../" + stagingName,          // two levels up
		"d/e/abs": StagingDir + "/staged",          // absolute, to a file in it
		"up":      "/",                             // an ancestor: the root
		"d/up":    "..",                            // the root, relatively
		"ok":      "d/f",                           // ordinary links
		"okdir":   "/d",
	} {
		symlink(t, target, filepath.Join(src, filepath.FromSlash(link)))
	}
	return mustOpenImage(t, mkfs(t, "ext4", 4096, src, "16M", "-O", "^has_journal"), openOpts{rw: true})
}

// TestStagingRefusedThroughLinks: no path that follows a symbolic link
// reaches the staging directory, to read, list, write, make, remove or
// rename, while its spelled name and ordinary links still work; nothing
// under it changes.
func TestStagingRefusedThroughLinks(t *testing.T) {
	v := stagingLinkVolume(t)
	replace := func(p string) error {
		_, _, err := v.ReplaceFile(p, strings.NewReader("evil"), 0o644, nil)
		return err
	}
	stat := func(p string) error { _, err := v.Stat(p); return err }
	lstat := func(p string) error { _, err := v.Lstat(p); return err }
	read := func(p string) error {
		f, err := v.OpenFile(p)
		if err == nil {
			f.Close()
		}
		return err
	}
	create := func(p string) error {
		f, err := v.Create(p, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	}
	list := func(p string) error { _, err := v.ReadDir(p); return err }
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"stat dir link", func() error { return stat("/l") }},
		{"stat abs dir link", func() error { return stat("/la") }},
		{"stat chain", func() error { return stat("/chain/staged") }},
		{"lstat inside", func() error { return lstat("/l/staged") }},
		{"stat file link", func() error { return stat("/d/l") }},
		{"stat two up", func() error { return stat("/d/e/l/staged") }},
		{"stat abs file link", func() error { return stat("/d/e/abs") }},
		{"stat via root link", func() error { return stat("/up/" + stagingName) }},
		{"lstat via root link", func() error { return lstat("/up/" + stagingName) }},
		{"stat via relative root link", func() error { return stat("/d/up/" + stagingName + "/staged") }},
		{"lookup", func() error { _, err := v.Lookup("/la/staged"); return err }},
		{"readlink inside", func() error { _, err := v.Readlink("/l/staged"); return err }},
		{"list", func() error { return list("/l") }},
		{"list info", func() error { _, err := v.ReadDirInfo("/up/" + stagingName); return err }},
		{"read", func() error { return read("/d/l") }},
		{"read via root", func() error { return read("/up/" + stagingName + "/staged") }},
		{"write in place", func() error {
			f, err := v.OpenWrite("/d/e/abs", os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"create inside", func() error { return create("/l/new") }},
		{"create over staging", func() error { return create("/up/" + stagingName) }},
		{"replace inside", func() error { return replace("/la/new") }},
		{"replace staged", func() error { return replace("/d/up/" + stagingName + "/staged") }},
		{"mkdir inside", func() error { return v.Mkdir("/l/sub", 0o755) }},
		{"mkdir staging", func() error { return v.Mkdir("/up/"+stagingName, 0o755) }},
		{"unlink inside", func() error { return v.Unlink("/d/e/l/staged") }},
		{"rmdir staging", func() error { return v.Rmdir("/up/" + stagingName) }},
		{"unlink staging", func() error { return v.Unlink("/d/up/" + stagingName) }},
		{"rename out of", func() error { return v.Rename("/l/staged", "/stolen") }},
		{"rename into", func() error { return v.Rename("/d/f", "/la/planted") }},
		{"rename staging away", func() error { return v.Rename("/up/"+stagingName, "/moved") }},
		{"rename over staging", func() error { return v.Rename("/d/e", "/up/"+stagingName) }},
		{"io/fs open", func() error {
			f, err := v.FS().Open("up/" + stagingName)
			if err == nil {
				f.Close()
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, ErrHidden) {
				t.Errorf("got %v, want ErrHidden", err)
			}
		})
	}
	checkStagingUntouched(t, v)
	// The spelled name, the links themselves and ordinary links work.
	if fi, err := v.Lstat("/l"); err != nil || fi.Type != TypeSymlink {
		t.Errorf("Lstat of the link itself: %+v %v", fi, err)
	}
	if tgt, err := v.Readlink("/d/l"); err != nil || tgt != "../"+stagingName+"/staged" {
		t.Errorf("Readlink: %q %v", tgt, err)
	}
	for _, p := range []string{"/ok", "/okdir/f", "/up/d/f", "/d/up/d/f", StagingDir + "/staged"} {
		if err := stat(p); err != nil {
			t.Errorf("Stat %s: %v", p, err)
		}
	}
	if err := list("/up"); err != nil {
		t.Errorf("listing the root through a link: %v", err)
	}
	if _, _, err := v.ReplaceFile("/okdir/f", strings.NewReader("replaced"), 0o644, nil); err != nil {
		t.Errorf("ReplaceFile through an ordinary link: %v", err)
	}
	// ReplaceFile renames over a name, so it replaces a link, not what
	// the link points at.
	if err := replace("/d/l"); err != nil {
		t.Errorf("ReplaceFile of a link into staging: %v", err)
	} else if fi, err := v.Lstat("/d/l"); err != nil || fi.Type != TypeRegular || fi.Size != 4 {
		t.Errorf("the replaced link: %+v %v", fi, err)
	}
	if err := v.Unlink("/chain"); err != nil {
		t.Errorf("removing a link into staging (not what it points at): %v", err)
	}
	checkStagingUntouched(t, v)
	if n, err := v.CleanStaging(); err != nil || n != 1 {
		t.Errorf("CleanStaging: %d, %v (want the one staged file)", n, err)
	}
}

// checkStagingUntouched: the staging directory holds its one staged file
// with its bytes.
func checkStagingUntouched(t *testing.T, v *testVolume) {
	t.Helper()
	ents, err := v.ReadDir(StagingDir)
	if err != nil || len(ents) != 1 || ents[0].Name != "staged" {
		t.Fatalf("staging directory: %+v %v", ents, err)
	}
	f, err := v.OpenFile(StagingDir + "/staged")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	if string(buf[:n]) != "half-written" {
		t.Errorf("staged file: %q", buf[:n])
	}
}
