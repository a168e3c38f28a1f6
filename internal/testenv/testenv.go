// Package testenv holds what tests need from the machine: root, tools, loop
// devices, scratch files. A missing requirement skips the test with a reason
// on a developer machine and fails it under CI=true, where .ci/run has
// installed everything first.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/tool"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t with reason, or fails it under CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("required under CI=true: %s", msg)
	}
	t.Skipf("skipping: %s", msg)
}

// RequireRoot needs uid 0 (loop devices, mount).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (loop devices); run as root or in CI")
	}
}

// RequireTool needs an executable on PATH (or in /sbin, /usr/sbin) and
// returns its path.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := LookTool(name); err == nil {
		return p
	}
	Unavailable(t, "%s not installed (make deps installs it)", name)
	return ""
}

// LookTool finds name on PATH or in the sbin directories that a non-login
// PATH often lacks (tool.Look).
func LookTool(name string) (string, error) { return tool.Look(name) }

// Run runs a command and fails t with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Output(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output runs a command and returns its combined output.
func Output(name string, args ...string) (string, error) {
	p, err := LookTool(name)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	cmd := exec.Command(p, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	return buf.String(), err
}

// SparseFile creates a file of size bytes under t.TempDir.
func SparseFile(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// LoopDevice attaches a new backing file of size bytes to a loop device with
// direct I/O and returns the device path and the backing file. The device is
// detached when the test ends, pass or fail.
func LoopDevice(t testing.TB, size int64) (dev, backing string) {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "losetup")
	backing = SparseFile(t, size)
	return AttachLoop(t, backing), backing
}

// AttachLoop attaches an existing file to a loop device with direct I/O and
// detaches it when the test ends.
func AttachLoop(t testing.TB, backing string) string {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "losetup")
	out, err := Output("losetup", "--find", "--show", "--direct-io=on", backing)
	if err != nil {
		// Some hosts (or backing filesystems) refuse direct I/O on a loop
		// device; buffered loop I/O still tests the block-device path.
		out, err = Output("losetup", "--find", "--show", backing)
	}
	if err != nil {
		Unavailable(t, "losetup failed: %v: %s", err, strings.TrimSpace(out))
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() {
		if out, err := Output("losetup", "--detach", dev); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// Unmount unmounts dir, retrying while the kernel still reports it busy
// (a just-closed file or a udev probe of the new loop device holds it for a
// moment), and detaching lazily as a last resort so a test never leaves a
// mount behind.
func Unmount(dir string) error {
	var out string
	var err error
	for i := range 20 {
		if out, err = Output("umount", dir); err == nil {
			return nil
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
	if lout, lerr := Output("umount", "--lazy", dir); lerr != nil {
		return fmt.Errorf("umount %s: %v: %s; lazy: %v: %s", dir, err, strings.TrimSpace(out), lerr, strings.TrimSpace(lout))
	}
	return fmt.Errorf("umount %s: busy, detached lazily: %s", dir, strings.TrimSpace(out))
}
