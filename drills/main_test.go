package drills

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

var (
	longFlag    = flag.Bool("drills.long", os.Getenv("MPAGED_DRILLS") == "long", "run the long drills (make drills)")
	summaryFile = flag.String("drills.summary", "", "also write the summary table to this file")
)

// summary is where every drill records its row.
var summary Summary

// long reports whether the long version of the drills runs.
func long() bool { return *longFlag }

// pick is short in make test and long under make drills.
func pick[T any](short, longer T) T {
	if long() {
		return longer
	}
	return short
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	testenv.RemoveBuilt()
	{
		var b bytes.Buffer
		mode := "short"
		if long() {
			mode = "long"
		}
		fmt.Fprintf(&b, "\nreliability drills (%s):\n", mode)
		summary.WriteTable(&b)
		os.Stdout.Write(b.Bytes())
		if *summaryFile != "" {
			if err := os.WriteFile(*summaryFile, b.Bytes(), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "drills:", err)
				code = 1
			}
		}
	}
	os.Exit(code)
}
