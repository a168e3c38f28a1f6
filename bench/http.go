package bench

import (
	"slices"
)

// HTTPMode is what the requests of an HTTP workload ask for.
type HTTPMode uint8

const (
	// WholeGet is one GET of the whole file per run, its body checked
	// against the file's checksum.
	WholeGet HTTPMode = iota
	// RangeGet is ranged GETs of RangeSize bytes at random RangeSize-aligned
	// offsets from Concurrency keep-alive connections for the run's
	// duration, every body compared with the file's bytes there.
	RangeGet
)

func (m HTTPMode) String() string {
	if m == RangeGet {
		return "range"
	}
	return "whole"
}

// HTTPWorkload is the HTTP part of a Workload: what a run asks of the
// server that serves the bench file.
type HTTPWorkload struct {
	Mode HTTPMode `json:"mode"`
	// Warm: before the clock starts, the server's cache is given the file
	// (an untimed GET of all of it), so the timed GET is a second pass.
	// Otherwise the server starts cold: the daemon is a fresh process and
	// nginx's file is dropped from the kernel's page cache.
	Warm bool `json:"warm"`
	// Concurrency is the number of workers, each with its own connection.
	Concurrency int `json:"concurrency"`
	// RangeSize is a ranged request's length (RangeGet).
	RangeSize int `json:"range_size,omitempty"`
}

// httpWorkloadDef is an HTTP workload: its row name, the name of its
// family (what --workloads http-get selects: cold and warm), and what it
// asks.
type httpWorkloadDef struct {
	name, family string
	http         HTTPWorkload
}

// Default concurrency and request size of http-range.
const (
	httpRangeConcurrency = 64
	httpRangeSize        = 4 << 10
)

// httpWorkloadDefs run after the block workloads: those write the raw
// device, and the first HTTP run puts a file system on it.
var httpWorkloadDefs = []httpWorkloadDef{
	{"http-get-cold", "http-get", HTTPWorkload{Mode: WholeGet, Concurrency: 1}},
	{"http-get-warm", "http-get", HTTPWorkload{Mode: WholeGet, Warm: true, Concurrency: 1}},
	{"http-range", "http-range", HTTPWorkload{Mode: RangeGet, Concurrency: httpRangeConcurrency, RangeSize: httpRangeSize}},
}

// httpWorkloadNames are the names --workloads accepts for the HTTP
// workloads: the families and each row.
func httpWorkloadNames() []string {
	var out []string
	for _, d := range httpWorkloadDefs {
		if !slices.Contains(out, d.family) {
			out = append(out, d.family)
		}
		if d.name != d.family {
			out = append(out, d.name)
		}
	}
	return out
}

// isHTTPWorkload reports whether name is an HTTP workload's row.
func isHTTPWorkload(name string) bool {
	return slices.ContainsFunc(httpWorkloadDefs, func(d httpWorkloadDef) bool { return d.name == name })
}

// httpWorkloads builds the selected HTTP workloads of c (normalized).
// Whole-file GETs are one request per run (Duration 0); --depth sets the
// ranged workload's concurrency.
func (c Config) httpWorkloads() []Workload {
	var out []Workload
	for i, d := range httpWorkloadDefs {
		if len(c.Workloads) > 0 && !slices.Contains(c.Workloads, d.name) && !slices.Contains(c.Workloads, d.family) {
			continue
		}
		h := d.http
		w := Workload{Name: d.name, Pattern: Sequential, ReadPercent: 100, BlockSize: c.BlockSize,
			Region: c.Size, Seed: uint64(100 + i), HTTP: &h}
		if h.Mode == RangeGet {
			w.Pattern, w.BlockSize, w.Duration = Random, h.RangeSize, c.Duration
			if c.Depth > 0 {
				h.Concurrency = c.Depth
			}
		}
		out = append(out, w)
	}
	return out
}

// Runner names of the HTTP rows.
const (
	runnerHTTPMpaged = "http-mpaged"
	runnerHTTPNginx  = "http-nginx"
	runnerCLICat     = "cli-cat"
	// httpBaselineRunner is what the HTTP rows' ratios are to.
	httpBaselineRunner = runnerHTTPNginx
)

// httpRunner marks the runners of the HTTP workloads.
type httpRunner interface {
	Runner
	servesHTTP()
}

// appliesTo says whether r has a row for w: HTTP runners apply only to
// HTTP workloads and the others only to block workloads; within its kind
// the runner decides.
func appliesTo(r Runner, w Workload) bool {
	_, isHTTP := r.(httpRunner)
	return isHTTP == (w.HTTP != nil) && r.Applies(w)
}

// httpPlanned reports whether the run has an HTTP workload and may have an
// HTTP runner for it: the target then needs room for a file system and
// may be written (mke2fs).
func httpPlanned(cfg Config, workloads []Workload) bool {
	if !slices.ContainsFunc(workloads, func(w Workload) bool { return w.HTTP != nil }) {
		return false
	}
	if len(cfg.Runners) == 0 {
		return true
	}
	return slices.ContainsFunc(cfg.Runners, isHTTPRunnerName)
}

func isHTTPRunnerName(name string) bool {
	return name == runnerHTTPMpaged || name == runnerHTTPNginx || name == runnerCLICat
}

// isMpagedRunner reports whether a row is mpaged's (the engine in-process,
// the daemon, the CLI) rather than a tool it is measured against.
func isMpagedRunner(name string) bool {
	return name == runnerHTTPMpaged || name == runnerCLICat
}

// baselineFor is the runner a workload's ratios are to: nginx for the HTTP
// workloads, def for the others.
func baselineFor(workload, def string) string {
	if isHTTPWorkload(workload) {
		return httpBaselineRunner
	}
	return def
}

// HTTPCounters are an HTTP run's figures beyond the common ones.
type HTTPCounters struct {
	// Requests counted in the run's operations, and the connections the
	// load generator opened for them (keep-alive: one per worker).
	Requests    int64 `json:"requests"`
	Connections int64 `json:"connections"`
	// DeviceReadBytes is what the target device read during the timed
	// part (its sysfs stat counters), -1 when the target is not a block
	// device.
	DeviceReadBytes int64 `json:"device_read_bytes"`
	// ServerProcesses is how many processes CPUSeconds sums (nginx: the
	// master and its workers).
	ServerProcesses int `json:"server_processes"`
	// CacheBytes is the daemon's --cache (and cli-cat's), 0 for nginx
	// (the kernel's page cache, unbounded).
	CacheBytes int64 `json:"cache_bytes,omitempty"`
	// CachedAtStartBytes (nginx, cold) is what of the file was still in
	// the kernel's page cache when the run started: pages
	// posix_fadvise(DONTNEED) could not drop because something held them.
	CachedAtStartBytes int64 `json:"cached_at_start_bytes,omitempty"`
	// StartupSeconds (cli-cat) is the wall time of an mpaged cat of an
	// empty file in the same volume: the process start and volume open
	// that a cat's time includes and a running daemon's GET does not.
	StartupSeconds float64 `json:"startup_seconds,omitempty"`
}
