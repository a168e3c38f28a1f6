package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/bench"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/internal/testenv"
)

// TestBenchQuick is `mpaged bench --quick` as make test runs it: every
// runner this build has produces numbers for every workload it applies
// to, and the table, the JSON report and the chart are written.
func TestBenchQuick(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "fio")
	testenv.RequireTool(t, "losetup")
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.svg")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "--quick", "--json", jsonPath, "--svg", svgPath}, &stdout, &stderr); code != 0 {
		t.Fatalf("mpaged bench --quick: exit %d\n%s", code, stderr.String())
	}
	var rep bench.Report
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	runners := []string{"engine-native", "engine-sync", "engine-native-1page", "engine-native-readat", "fio-io_uring", "fio-libaio", "fio-io_uring-1m"}
	if slices.Contains(engine.Backends(), engine.BackendIouringGo) {
		runners = append(runners, "engine-iouring-go")
	}
	rows := map[string]bench.Row{}
	for _, row := range rep.Rows {
		rows[row.Workload+"/"+row.Runner] = row
	}
	for _, w := range []string{"seqread", "randread", "seqwrite", "randwrite", "mix"} {
		for _, r := range runners {
			row, ok := rows[w+"/"+r]
			sequentialOnly := r == "engine-native-1page" || r == "fio-io_uring-1m"
			randomReadsOnly := r == "engine-native-readat"
			if !ok {
				applies := (!sequentialOnly || strings.HasPrefix(w, "seq")) && (!randomReadsOnly || w == "randread" || w == "mix")
				if applies {
					t.Errorf("%s/%s: no result", w, r)
				}
				continue
			}
			if row.MiBps.Median <= 0 || row.IOPS <= 0 || row.P50 <= 0 || row.P999 < row.P50 || row.CPUPerGiB <= 0 || row.Ratio == nil {
				t.Errorf("%s/%s: empty figures %+v", w, r, row)
			}
			if strings.HasPrefix(r, "engine") && (row.SQEsPerMiB == nil || *row.SQEsPerMiB <= 0 || row.PagesPerBio == nil || *row.PagesPerBio < 1) {
				t.Errorf("%s/%s: no engine counters %+v", w, r, row)
			}
		}
	}
	if rep.Target == nil || rep.Target.Path == "" || !rep.Target.Created {
		t.Errorf("report target %+v", rep.Target)
	}
	if out := stdout.String(); !strings.Contains(out, "vs fio-io_uring") || !strings.Contains(out, "engine-native") {
		t.Errorf("no table on stdout:\n%s", out)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil || !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("randread: throughput")) {
		t.Errorf("chart not written: %v\n%.300s", err, svg)
	}
	// The target the run made is gone.
	if _, err := os.Stat(rep.Target.Path); err == nil && rep.Target.Kind == bench.TargetLoop {
		if out, _ := testenv.Output("losetup", "--list", "--noheadings", rep.Target.Path); strings.Contains(out, "mpaged-bench-") {
			t.Errorf("%s still attached: %s", rep.Target.Path, out)
		}
	}
	if rep.Target.Kind == bench.TargetZram {
		if _, err := os.Stat(filepath.Join("/sys/block", filepath.Base(rep.Target.Path))); err == nil {
			t.Errorf("%s still there", rep.Target.Path)
		}
	}
}

func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--workloads", "zigzag"},
		{"bench", "--format", "xml"},
		{"bench", "--size", "lots"},
		{"bench", "--depth", "-3"},
		{"bench", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)\n%s", args, code, stderr.String())
		}
	}
}
