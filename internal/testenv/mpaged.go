package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The real mpaged binary, built once per test binary for the tests that
// run it as users do (the daemon's end-to-end tests, the bench's HTTP
// runners).
var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// MpagedBinary builds cmd/mpaged (once per test binary) and returns its
// path. A package that calls it removes the binary with RemoveBuilt from
// its TestMain.
func MpagedBinary(t testing.TB) string {
	t.Helper()
	goTool := RequireTool(t, "go")
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mpaged-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "mpaged")
		if out, err := exec.Command(goTool, "build", "-o", builtBin, "github.com/mpaged/mpaged/cmd/mpaged").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// RemoveBuilt removes what MpagedBinary built, if anything.
func RemoveBuilt() {
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
}
