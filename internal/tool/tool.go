// Package tool finds the external programs mpaged runs (mke2fs, e2fsck,
// losetup, fio, nginx, ...): on PATH, or in the sbin directories that a
// non-login PATH (systemd units, sudo, CI shells) often lacks.
package tool

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrNotFound means the program is neither on PATH nor in an sbin
// directory.
var ErrNotFound = errors.New("tool: not found")

var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// Look returns the path of the executable name.
func Look(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotFound, name)
}
