package uring_test

import (
	"path/filepath"
	"testing"
)

// tempPath is a fresh file path under tb's temporary directory.
func tempPath(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), name)
}
