package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/mpaged/mpaged/engine"
)

// version is set at build time (-ldflags "-X main.version=v1.2.3"); a
// plain build names the VCS revision instead.
var version = "dev"

// versionString is the version, with the commit when the binary knows it.
func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			v += " (" + rev + dirty + ")"
		}
	}
	return v
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: version takes no arguments", errUsage)
	}
	fmt.Fprintf(stdout, "mpaged %s, %s %s/%s, ring backends: %v\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH, engine.Backends())
	return nil
}
