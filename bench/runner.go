package bench

import (
	"context"
	"time"
)

// Runner is one way of doing a workload on the target: the engine on a
// ring backend, fio with an ioengine, and (with the daemon) HTTP GETs
// against mpaged or nginx.
type Runner interface {
	// Name labels the runner's rows ("engine-native", "fio-io_uring").
	Name() string
	// Applies says whether the runner has a row for w.
	Applies(w Workload) bool
	// Setup prepares the runner once per bench run (opens the engine,
	// finds the tool). An error wrapping ErrUnavailable means this host or
	// build cannot run it.
	Setup(ctx context.Context, env *Env) error
	// Run does w once, cold, and measures it.
	Run(ctx context.Context, w Workload) (Result, error)
	// Teardown undoes Setup.
	Teardown() error
}

// Env is what runners share in one bench run.
type Env struct {
	Target *Target
	// CacheBytes is the engine's page cache.
	CacheBytes int64
	// Depth is the deepest planned workload's depth.
	Depth int
	// Write: some planned workload writes.
	Write bool
	// CPUProfile is the engine runners' profile path prefix, or "".
	CPUProfile string
	// MpagedBinary is the mpaged executable the HTTP runners start.
	MpagedBinary string
	// TempDir holds the HTTP runners' scratch directories.
	TempDir string
	Logf    func(string, ...any)

	// httpVol is the HTTP workloads' volume, made by the first HTTP run.
	httpVol *httpVolume
}

// Result is one run of one workload by one runner.
type Result struct {
	Workload string `json:"workload"`
	Runner   string `json:"runner"`
	// Rep is the repetition (0-based) and Order the runner's place in it.
	Rep   int `json:"rep"`
	Order int `json:"order"`

	ReadOps    int64   `json:"read_ops"`
	WriteOps   int64   `json:"write_ops"`
	ReadBytes  int64   `json:"read_bytes"`
	WriteBytes int64   `json:"write_bytes"`
	Seconds    float64 `json:"seconds"`
	// Latency percentiles of the workload's main direction (reads, or
	// writes for write-only workloads), per call, in nanoseconds.
	P50  int64 `json:"p50_ns"`
	P99  int64 `json:"p99_ns"`
	P999 int64 `json:"p999_ns"`
	// CPUSeconds is the user+system time of the whole process doing the
	// I/O, its kernel threads included: for the engine getrusage of the
	// bench process over the run; for fio the rusage of the fio process
	// (wait4) less what an empty fio job costs (its startup), and at least
	// fio's own usr+sys. io_uring
	// hands work the device cannot take without blocking (zram) to
	// io-wq kernel threads of the process, which fio's own usr+sys (per
	// thread) leaves out.
	CPUSeconds float64 `json:"cpu_seconds"`
	// FioOwnCPUSeconds is fio's own usr+sys figure, for reference.
	FioOwnCPUSeconds float64 `json:"fio_own_cpu_seconds,omitempty"`
	// Engine holds the engine's counters; nil for other runners.
	Engine *EngineCounters `json:"engine,omitempty"`
	// HTTP holds an HTTP run's own figures; nil for other workloads.
	HTTP *HTTPCounters `json:"http,omitempty"`
	// Profile is the CPU profile written for this run, if any.
	Profile string `json:"profile,omitempty"`
}

// EngineCounters are the engine's counters over one run.
type EngineCounters struct {
	Backend     string `json:"backend"`
	SQEs        uint64 `json:"sqes"`
	Enters      uint64 `json:"enters"`
	FixedBufIO  uint64 `json:"fixed_buf_io"`
	Bios        uint64 `json:"bios"`
	BioPages    uint64 `json:"bio_pages"`
	BlockIOs    uint64 `json:"block_ios"`
	CacheHits   uint64 `json:"cache_hits"`
	CacheMisses uint64 `json:"cache_misses"`
	// Mallocs is the heap allocations of the whole process during the
	// run (runtime.MemStats).
	Mallocs uint64 `json:"mallocs"`
}

// Ops and Bytes sum both directions.
func (r Result) Ops() int64   { return r.ReadOps + r.WriteOps }
func (r Result) Bytes() int64 { return r.ReadBytes + r.WriteBytes }

// MiBps is throughput in MiB/s.
func (r Result) MiBps() float64 { return safeDiv(float64(r.Bytes())/(1<<20), r.Seconds) }

// IOPS is operations per second.
func (r Result) IOPS() float64 { return safeDiv(float64(r.Ops()), r.Seconds) }

// CPUPerGiB is CPU seconds per GiB moved.
func (r Result) CPUPerGiB() float64 { return safeDiv(r.CPUSeconds, float64(r.Bytes())/(1<<30)) }

// Elapsed is the run's duration.
func (r Result) Elapsed() time.Duration { return time.Duration(r.Seconds * float64(time.Second)) }

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// runnerDef is a runner the harness knows by name.
type runnerDef struct {
	name string
	make func() Runner
	// optional: left out of the default set when unavailable, instead of
	// failing the run.
	optional bool
}

// runnerDefs are every runner, in the order rows are printed.
var runnerDefs = []runnerDef{
	{"engine-native", func() Runner { return newEngineRunner("engine-native", backendNative, true) }, false},
	{"engine-iouring-go", func() Runner { return newEngineRunner("engine-iouring-go", backendIouringGo, true) }, true},
	{"engine-sync", func() Runner { return newEngineRunner("engine-sync", backendSync, true) }, false},
	{"engine-native-1page", func() Runner { return newEngineRunner("engine-native-1page", backendNative, false) }, false},
	{"engine-native-readat", func() Runner { return newReadAtRunner("engine-native-readat", backendNative) }, false},
	{"fio-io_uring", func() Runner { return newFioRunner("fio-io_uring", "io_uring", 0) }, false},
	{"fio-libaio", func() Runner { return newFioRunner("fio-libaio", "libaio", 0) }, false},
	{"fio-io_uring-1m", func() Runner { return newFioRunner("fio-io_uring-1m", "io_uring", 1<<20) }, false},
	{runnerHTTPMpaged, func() Runner { return new(mpagedHTTPRunner) }, true},
	{runnerHTTPNginx, func() Runner { return new(nginxRunner) }, true},
	{runnerCLICat, func() Runner { return new(catRunner) }, true},
}

// baselineRunner is what every ratio is to.
const baselineRunner = "fio-io_uring"

func runnerNames() []string {
	var out []string
	for _, d := range runnerDefs {
		out = append(out, d.name)
	}
	return out
}
