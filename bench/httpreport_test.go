package bench

import (
	"bytes"
	"strings"
	"testing"
)

// httpTestReport is testReport with HTTP runs: two repetitions of the cold
// GET by the daemon, nginx and mpaged cat, and one ranged run.
func httpTestReport() *Report {
	r := testReport()
	mib := int64(1 << 20)
	get := func(runner string, rep int, secs, cpu float64, dev int64) Result {
		return Result{Workload: "http-get-cold", Runner: runner, Rep: rep, ReadOps: 1, ReadBytes: 1024 * mib, Seconds: secs,
			P50: int64(secs * 1e9), P99: int64(secs * 1e9), P999: int64(secs * 1e9), CPUSeconds: cpu,
			HTTP: &HTTPCounters{Requests: 1, Connections: 1, DeviceReadBytes: dev, ServerProcesses: 1}}
	}
	daemon0, daemon1 := get(runnerHTTPMpaged, 0, 1.0, 0.5, 1024*mib), get(runnerHTTPMpaged, 1, 0.5, 0.5, 1024*mib)
	daemon0.Engine = &EngineCounters{SQEs: 1024, Bios: 1024, BioPages: 262144, CacheHits: 3, CacheMisses: 1, Mallocs: 5000}
	daemon1.Engine = &EngineCounters{SQEs: 1024, Bios: 1024, BioPages: 262144, CacheHits: 3, CacheMisses: 1, Mallocs: 7000}
	cat0, cat1 := get(runnerCLICat, 0, 0.8, 0.6, 1024*mib), get(runnerCLICat, 1, 0.8, 0.6, 1024*mib)
	cat0.HTTP.StartupSeconds, cat1.HTTP.StartupSeconds = 0.010, 0.012
	nginx0, nginx1 := get(runnerHTTPNginx, 0, 0.5, 0.25, 1024*mib), get(runnerHTTPNginx, 1, 1.0, 0.25, 1100*mib)
	nginx0.HTTP.ServerProcesses, nginx1.HTTP.ServerProcesses = 3, 3
	nginx1.HTTP.CachedAtStartBytes = 640 << 10
	rng := Result{Workload: "http-range", Runner: runnerHTTPMpaged, ReadOps: 1000, ReadBytes: 1000 * 4096, Seconds: 0.5,
		P50: 100e3, P99: 900e3, P999: 2e6, CPUSeconds: 0.05,
		HTTP:   &HTTPCounters{Requests: 1000, Connections: 64, DeviceReadBytes: 1000 * 4096, ServerProcesses: 1, CacheBytes: 64 * mib},
		Engine: &EngineCounters{SQEs: 1000, Bios: 1000, BioPages: 1000}}
	r.Results = append(r.Results, daemon0, nginx0, cat0, cat1, nginx1, daemon1, rng)
	r.finish()
	return r
}

func TestReportHTTPRows(t *testing.T) {
	r := httpTestReport()
	rows := map[string]Row{}
	for _, row := range r.Rows {
		rows[row.Workload+"/"+row.Runner] = row
	}
	if len(r.Rows) != 6 {
		t.Fatalf("%d rows, want 2 block and 4 HTTP: %+v", len(r.Rows), r.Rows)
	}
	d, c, n := rows["http-get-cold/http-mpaged"], rows["http-get-cold/cli-cat"], rows["http-get-cold/http-nginx"]
	// Ratios are to nginx in the same repetition: 1024/2048 and 2048/1024.
	if d.Ratio == nil || !near(d.Ratio.Min, 0.5) || !near(d.Ratio.Max, 2) || !near(d.Ratio.Median, 1.25) {
		t.Fatalf("daemon ratio %+v", d.Ratio)
	}
	if c.Ratio == nil || !near(c.Ratio.Min, 1280.0/2048) || n.Ratio == nil || !near(n.Ratio.Median, 1) {
		t.Fatalf("cat ratio %+v, nginx ratio %+v", c.Ratio, n.Ratio)
	}
	if d.HTTP == nil || !near(d.HTTP.CPUMicrosPerRequest, 0.5e6) || d.HTTP.DeviceReadPerByte == nil || !near(*d.HTTP.DeviceReadPerByte, 1) ||
		d.HTTP.CacheHitRatio == nil || !near(*d.HTTP.CacheHitRatio, 0.75) {
		t.Fatalf("daemon HTTP figures %+v", d.HTTP)
	}
	if d.PagesPerBio == nil || !near(*d.PagesPerBio, 256) || !near(*d.AllocsPerOp, 6000) {
		t.Fatalf("daemon engine figures: pages/Bio %v allocs/req %v", d.PagesPerBio, d.AllocsPerOp)
	}
	if *n.HTTP.DeviceReadPerByte <= 1 || n.HTTP.CacheHitRatio != nil || n.SQEsPerMiB != nil {
		t.Fatalf("nginx row %+v %+v", n, n.HTTP)
	}
	if c.HTTP.StartupSeconds == nil || !near(*c.HTTP.StartupSeconds, 0.011) {
		t.Fatalf("cat startup %v", c.HTTP.StartupSeconds)
	}
	if rng := rows["http-range/http-mpaged"]; rng.Ratio != nil || rng.HTTP.CacheBytes != 64<<20 || !near(rng.IOPS, 2000) {
		t.Fatalf("range row without a baseline %+v", rng)
	}
	// The block rows keep fio as their baseline.
	if eng := rows["seqread/engine-native"]; eng.HTTP != nil || eng.Ratio == nil || !near(eng.Ratio.Median, 1) {
		t.Fatalf("block row %+v", eng)
	}
	if s, ok := r.daemonVsCat(); !ok || !near(s.Min, 1024/1280.0) || !near(s.Max, 2048/1280.0) {
		t.Fatalf("daemon vs cat %+v %v", s, ok)
	}
}

func TestReportHTTPTable(t *testing.T) {
	var b bytes.Buffer
	if err := httpTestReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	block, httpPart, ok := strings.Cut(out, "vs http-nginx")
	if !ok || !strings.Contains(block, "vs fio-io_uring") || strings.Contains(block, "http-get-cold") {
		t.Fatalf("want the block table, then the HTTP table:\n%s", out)
	}
	for _, want := range []string{"http-get-cold", "cli-cat", "0.50/1.25/2.00", "500000.0", "1.04",
		"daemon GET vs mpaged cat (http-get-cold, same repetition): 0.80/1.20/1.60", "empty file took 11.0 ms",
		"the daemon's cache is 64MiB", "could not drop all of the file: 1, at most 640KiB left", "server CPU"} {
		if !strings.Contains(httpPart, want) {
			t.Errorf("HTTP table lacks %q:\n%s", want, out)
		}
	}
	// An HTTP-only run prints the HTTP table alone.
	r := httpTestReport()
	var rows []Row
	for _, row := range r.Rows {
		if row.HTTP != nil {
			rows = append(rows, row)
		}
	}
	r.Rows = rows
	b.Reset()
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "allocs/op") || !strings.Contains(b.String(), "vs http-nginx") {
		t.Fatalf("HTTP-only table:\n%s", b.String())
	}
}
