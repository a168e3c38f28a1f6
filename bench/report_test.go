package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strings"
	"testing"
)

// testReport has two repetitions of seqread by the engine and the
// baseline, and one runner without a baseline counterpart in rep 1.
func testReport() *Report {
	r := newReport(Config{Repetitions: 2, BlockSize: 128 << 10, CacheBytes: 8 << 20},
		&Target{Kind: TargetZram, Path: "/dev/zram9", Size: 64 << 20, DeviceSize: 64 << 20, LogicalBlock: 4096}, []string{"a note"})
	mib := int64(1 << 20)
	r.Results = []Result{
		{Workload: "seqread", Runner: "engine-native", Rep: 0, ReadOps: 800, ReadBytes: 100 * mib, Seconds: 0.1, P50: 1000, P99: 5000, P999: 9000, CPUSeconds: 0.2,
			Engine: &EngineCounters{SQEs: 100, Enters: 300, Bios: 100, BioPages: 25600, Mallocs: 8}},
		{Workload: "seqread", Runner: "fio-io_uring", Rep: 0, ReadOps: 1600, ReadBytes: 200 * mib, Seconds: 0.1, P50: 3000, P99: 6000, P999: 7000, CPUSeconds: 0.1},
		{Workload: "seqread", Runner: "fio-io_uring", Rep: 1, ReadOps: 800, ReadBytes: 100 * mib, Seconds: 0.1, P50: 5000, P99: 8000, P999: 9000, CPUSeconds: 0.1},
		{Workload: "seqread", Runner: "engine-native", Rep: 1, ReadOps: 1200, ReadBytes: 150 * mib, Seconds: 0.1, P50: 2000, P99: 7000, P999: 11000, CPUSeconds: 0.3,
			Engine: &EngineCounters{SQEs: 150, Enters: 150, Bios: 150, BioPages: 38400, Mallocs: 0}},
	}
	r.finish()
	return r
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }

func TestReportRows(t *testing.T) {
	r := testReport()
	if len(r.Rows) != 2 || r.Rows[0].Runner != "engine-native" || r.Rows[1].Runner != "fio-io_uring" {
		t.Fatalf("rows %+v", r.Rows)
	}
	eng, fio := r.Rows[0], r.Rows[1]
	if eng.Reps != 2 || !near(eng.MiBps.Min, 1000) || !near(eng.MiBps.Median, 1250) || !near(eng.MiBps.Max, 1500) {
		t.Fatalf("engine MiB/s %+v", eng.MiBps)
	}
	// Ratios pair runs of the same repetition: 1000/2000 and 1500/1000.
	if eng.Ratio == nil || !near(eng.Ratio.Min, 0.5) || !near(eng.Ratio.Max, 1.5) || !near(eng.Ratio.Median, 1.0) {
		t.Fatalf("engine ratio %+v", eng.Ratio)
	}
	if fio.Ratio == nil || !near(fio.Ratio.Median, 1) {
		t.Fatalf("baseline ratio %+v", fio.Ratio)
	}
	if eng.P50 != 1500 || eng.P99 != 6000 || eng.P999 != 10000 || !near(eng.IOPS, 10000) {
		t.Fatalf("engine medians p50 %d p99 %d p99.9 %d iops %v", eng.P50, eng.P99, eng.P999, eng.IOPS)
	}
	// CPU s/GiB: 0.2 s for 100 MiB and 0.3 s for 150 MiB are both 2.048.
	if !near(eng.CPUPerGiB, 2.048) {
		t.Fatalf("cpu/GiB %v", eng.CPUPerGiB)
	}
	if eng.SQEsPerMiB == nil || !near(*eng.SQEsPerMiB, 1) || !near(*eng.EntersPerMiB, 2) || !near(*eng.PagesPerBio, 256) ||
		!near(*eng.AllocsPerOp, 0.005) {
		t.Fatalf("engine figures sqe %v enter %v ppb %v allocs %v", *eng.SQEsPerMiB, *eng.EntersPerMiB, *eng.PagesPerBio, *eng.AllocsPerOp)
	}
	if fio.SQEsPerMiB != nil || fio.PagesPerBio != nil || fio.AllocsPerOp != nil {
		t.Fatal("fio row has engine figures")
	}
}

func TestReportTable(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"zram /dev/zram9", "region 64MiB", "note: a note", "vs fio-io_uring",
		"1250", "1000..1500", "0.50/1.00/1.50", "1.5µs", "256.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// Every gobench line has the shape benchstat parses: a name, an iteration
// count, then value-unit pairs.
func TestReportGobench(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteGobench(&b); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^BenchmarkMpaged/workload=[a-z]+/runner=[a-z0-9_-]+\t[0-9]+(\t[0-9.e+-]+ [^\t ]+)+$`)
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !strings.HasPrefix(l, "Benchmark") {
			continue
		}
		n++
		if !line.MatchString(l) {
			t.Errorf("not a benchmark line: %q", l)
		}
	}
	if n != 4 {
		t.Fatalf("%d benchmark lines, want one per run (4):\n%s", n, b.String())
	}
	if !strings.Contains(b.String(), "BenchmarkMpaged/workload=seqread/runner=engine-native\t800\t125000.0 ns/op\t1048.58 MB/s") {
		t.Fatalf("engine line wrong:\n%s", b.String())
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	r := testReport()
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 4 || len(back.Rows) != 2 || back.Rows[0].Ratio == nil || back.Target.Path != "/dev/zram9" ||
		back.Results[0].Engine == nil || back.Results[0].Engine.SQEs != 100 {
		t.Fatalf("round trip lost data: %+v", back)
	}
}

func TestReportSVG(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "<?xml") || !strings.Contains(out, "<svg") || !strings.Contains(out, "seqread: throughput") ||
		!strings.Contains(out, "engine-native") || !strings.Contains(out, "fio-io_uring") {
		t.Fatalf("SVG lacks the chart:\n%.500s", out)
	}
	if err := (&Report{}).WriteSVG(&b); err == nil {
		t.Fatal("an empty report charted")
	}
}
