package tool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLook(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "mpaged-test-tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if p, err := Look("mpaged-test-tool"); err != nil || p != exe {
		t.Errorf("on PATH: %q %v", p, err)
	}
	if _, err := Look("mpaged-no-such-tool"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	old := sbinDirs
	sbinDirs = []string{dir}
	defer func() { sbinDirs = old }()
	t.Setenv("PATH", "")
	if p, err := Look("mpaged-test-tool"); err != nil || p != exe {
		t.Errorf("in an sbin directory off PATH: %q %v", p, err)
	}
}
