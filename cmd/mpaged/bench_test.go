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
// to, the HTTP ones included (the daemon as the real binary, nginx, mpaged
// cat), and the table, the JSON report and the chart are written.
func TestBenchQuick(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "fio")
	testenv.RequireTool(t, "losetup")
	testenv.RequireTool(t, "nginx")
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.svg")
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--quick", "--json", jsonPath, "--svg", svgPath, "--mpaged", testenv.MpagedBinary(t)}
	if code := run(args, &stdout, &stderr); code != 0 {
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
	checkHTTPRows(t, rows)
	if rep.Target == nil || rep.Target.Path == "" || !rep.Target.Created {
		t.Errorf("report target %+v", rep.Target)
	}
	if out := stdout.String(); !strings.Contains(out, "vs fio-io_uring") || !strings.Contains(out, "engine-native") ||
		!strings.Contains(out, "vs http-nginx") || !strings.Contains(out, "daemon GET vs mpaged cat") {
		t.Errorf("no tables on stdout:\n%s", out)
	}
	for _, n := range rep.Notes {
		if strings.Contains(n, "http-") || strings.Contains(n, "cli-cat") {
			t.Errorf("an HTTP runner was skipped: %s", n)
		}
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

// checkHTTPRows: each HTTP workload has its runners' rows, with figures,
// ratios to nginx, and the device reads a cold or warm run implies.
func checkHTTPRows(t *testing.T, rows map[string]bench.Row) {
	t.Helper()
	for w, runners := range map[string][]string{
		"http-get-cold": {"http-mpaged", "http-nginx", "cli-cat"},
		"http-get-warm": {"http-mpaged", "http-nginx"},
		"http-range":    {"http-mpaged", "http-nginx"},
	} {
		for _, r := range runners {
			row, ok := rows[w+"/"+r]
			if !ok {
				t.Errorf("%s/%s: no result", w, r)
				continue
			}
			if row.MiBps.Median <= 0 || row.IOPS <= 0 || row.P50 <= 0 || row.P999 < row.P50 || row.Ratio == nil || row.HTTP == nil {
				t.Errorf("%s/%s: empty figures %+v", w, r, row)
				continue
			}
			if r == "http-mpaged" && (row.PagesPerBio == nil || row.HTTP.CacheBytes <= 0) {
				t.Errorf("%s/%s: no daemon counters %+v %+v", w, r, row, row.HTTP)
			}
			// Cold: nearly every byte came from the device. Not exactly
			// every byte: fadvise(DONTNEED) may leave a few of the
			// kernel's pages cached (seen: 0.98 for nginx under load).
			if dev := row.HTTP.DeviceReadPerByte; dev != nil && (w == "http-get-cold" && *dev < 0.9 || w == "http-get-warm" && *dev > 0.1) {
				t.Errorf("%s/%s: the device read %.2f bytes per byte served", w, r, *dev)
			}
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
