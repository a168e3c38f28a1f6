package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Report is a bench run: where and how it ran, every run's Result, and
// per workload and runner the summary over repetitions.
type Report struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	Target  *Target   `json:"target"`
	Config  struct {
		Duration    string `json:"duration"`
		Repetitions int    `json:"repetitions"`
		BlockSize   int    `json:"block_size"`
		Depth       int    `json:"depth_override,omitempty"`
		CacheBytes  int64  `json:"cache_bytes"`
		Quick       bool   `json:"quick,omitempty"`
	} `json:"config"`
	Baseline string   `json:"baseline"`
	Notes    []string `json:"notes,omitempty"`
	Results  []Result `json:"results"`
	Rows     []Row    `json:"summary"`
	// LoadAfter is the 1-minute load average when the run ended.
	LoadAfter float64 `json:"load_after"`
}

// Machine says what the run ran on.
type Machine struct {
	Kernel    string  `json:"kernel"`
	CPU       string  `json:"cpu"`
	CPUs      int     `json:"cpus"`
	GoVersion string  `json:"go"`
	Load      float64 `json:"load_before"`
}

// Row summarises one runner on one workload over the repetitions: the
// median of each figure, the spread of throughput, and the ratio of its
// throughput to the baseline's in the same repetition.
type Row struct {
	Workload  string  `json:"workload"`
	Runner    string  `json:"runner"`
	Reps      int     `json:"reps"`
	MiBps     Spread  `json:"mib_per_s"`
	IOPS      float64 `json:"iops"`
	P50       int64   `json:"p50_ns"`
	P99       int64   `json:"p99_ns"`
	P999      int64   `json:"p999_ns"`
	CPUPerGiB float64 `json:"cpu_s_per_gib"`
	// Engine figures; nil for other runners.
	SQEsPerMiB   *float64 `json:"sqes_per_mib,omitempty"`
	EntersPerMiB *float64 `json:"enters_per_mib,omitempty"`
	PagesPerBio  *float64 `json:"pages_per_bio,omitempty"`
	AllocsPerOp  *float64 `json:"allocs_per_op,omitempty"`
	// Ratio is throughput over the baseline's, per repetition; nil without
	// a baseline run. The baseline of the HTTP workloads is nginx.
	Ratio *Spread `json:"ratio,omitempty"`
	// HTTP figures; nil for the block workloads.
	HTTP *HTTPRow `json:"http,omitempty"`
}

// Spread is the minimum, median and maximum of a figure over repetitions.
type Spread struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return Spread{Min: s[0], Median: median(s), Max: s[len(s)-1]}
}

// median of sorted or unsorted values (the mean of the middle two for an
// even count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func newReport(cfg Config, t *Target, notes []string) *Report {
	r := &Report{Started: time.Now(), Machine: machine(), Target: t, Baseline: baselineRunner}
	r.Config.Duration = cfg.Duration.String()
	r.Config.Repetitions = cfg.Repetitions
	r.Config.BlockSize = cfg.BlockSize
	r.Config.Depth = cfg.Depth
	r.Config.CacheBytes = cfg.CacheBytes
	r.Config.Quick = cfg.Quick
	r.Notes = append(append(r.Notes, t.Notes...), notes...)
	return r
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Load: loadAverage()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func loadAverage() float64 {
	var l float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(b), "%f", &l)
	}
	return l
}

// finish computes the summary rows, workloads in run order and runners in
// their definition order.
func (r *Report) finish() {
	r.LoadAfter = loadAverage()
	r.Rows = nil
	var workloads []string
	for _, res := range r.Results {
		if !slices.Contains(workloads, res.Workload) {
			workloads = append(workloads, res.Workload)
		}
	}
	for _, w := range workloads {
		for _, name := range runnerNames() {
			if row, ok := r.row(w, name); ok {
				r.Rows = append(r.Rows, row)
			}
		}
	}
}

func (r *Report) results(workload, runner string) []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Workload == workload && res.Runner == runner {
			out = append(out, res)
		}
	}
	return out
}

func (r *Report) row(workload, runner string) (Row, bool) {
	runs := r.results(workload, runner)
	if len(runs) == 0 {
		return Row{}, false
	}
	row := Row{Workload: workload, Runner: runner, Reps: len(runs)}
	col := func(f func(Result) float64) float64 {
		v := make([]float64, len(runs))
		for i, res := range runs {
			v[i] = f(res)
		}
		return median(v)
	}
	mib := make([]float64, len(runs))
	for i, res := range runs {
		mib[i] = res.MiBps()
	}
	row.MiBps = spreadOf(mib)
	row.IOPS = col(Result.IOPS)
	row.P50 = int64(col(func(r Result) float64 { return float64(r.P50) }))
	row.P99 = int64(col(func(r Result) float64 { return float64(r.P99) }))
	row.P999 = int64(col(func(r Result) float64 { return float64(r.P999) }))
	row.CPUPerGiB = col(Result.CPUPerGiB)
	if runs[0].Engine != nil {
		perMiB := func(n func(*EngineCounters) uint64) *float64 {
			v := col(func(r Result) float64 { return safeDiv(float64(n(r.Engine)), float64(r.Bytes())/(1<<20)) })
			return &v
		}
		row.SQEsPerMiB = perMiB(func(e *EngineCounters) uint64 { return e.SQEs })
		row.EntersPerMiB = perMiB(func(e *EngineCounters) uint64 { return e.Enters })
		ppb := col(func(r Result) float64 { return safeDiv(float64(r.Engine.BioPages), float64(r.Engine.Bios)) })
		apo := col(func(r Result) float64 { return safeDiv(float64(r.Engine.Mallocs), float64(r.Ops())) })
		row.PagesPerBio, row.AllocsPerOp = &ppb, &apo
	}
	row.HTTP = httpRowOf(runs)
	var ratios []float64
	for _, res := range runs {
		for _, base := range r.results(workload, baselineFor(workload, r.Baseline)) {
			if base.Rep == res.Rep && base.MiBps() > 0 {
				ratios = append(ratios, res.MiBps()/base.MiBps())
			}
		}
	}
	if len(ratios) > 0 {
		s := spreadOf(ratios)
		row.Ratio = &s
	}
	return row, true
}

// writeOutputs prints the report in cfg.Format and writes the JSON and SVG
// files asked for.
func writeOutputs(cfg Config, r *Report) error {
	var err error
	switch cfg.Format {
	case FormatJSON:
		err = r.WriteJSON(cfg.Stdout)
	case FormatGobench:
		err = r.WriteGobench(cfg.Stdout)
	default:
		err = r.WriteTable(cfg.Stdout)
	}
	if err != nil {
		return fmt.Errorf("bench: report: %w", err)
	}
	if cfg.JSONPath != "" {
		if err := writeFile(cfg.JSONPath, r.WriteJSON); err != nil {
			return err
		}
	}
	if cfg.SVGPath != "" {
		if err := writeFile(cfg.SVGPath, r.WriteSVG); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes the whole report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes a header and one line per row.
func (r *Report) WriteTable(w io.Writer) error {
	t := r.Target
	fmt.Fprintf(w, "target: %s %s, region %s (device %s, %d-byte logical blocks)\n",
		t.Kind, t.Path, sizeString(t.Size), sizeString(t.DeviceSize), t.LogicalBlock)
	fmt.Fprintf(w, "runs: %d repetitions of %s, sequential block %s, engine cache %s; ratios to %s in the same repetition (min/median/max)\n",
		r.Config.Repetitions, r.Config.Duration, sizeString(int64(r.Config.BlockSize)), sizeString(r.Config.CacheBytes), r.Baseline)
	fmt.Fprintf(w, "machine: %s, %d CPUs, Linux %s, %s, load %.2f before, %.2f after\n",
		r.Machine.CPU, r.Machine.CPUs, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.Load, r.LoadAfter)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if !r.hasBlockRows() {
		return r.WriteHTTPTable(w)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\trunner\tMiB/s\tmin..max\tIOPS\tp50\tp99\tp99.9\tCPU s/GiB\tSQE/MiB\tenter/MiB\tpages/Bio\tallocs/op\tvs "+r.Baseline+"\t")
	for _, row := range r.Rows {
		if row.HTTP != nil {
			continue // WriteHTTPTable's
		}
		ratio := "-"
		if row.Ratio != nil {
			ratio = fmt.Sprintf("%.2f/%.2f/%.2f", row.Ratio.Min, row.Ratio.Median, row.Ratio.Max)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f..%.0f\t%.0f\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%s\t\n",
			row.Workload, row.Runner, row.MiBps.Median, row.MiBps.Min, row.MiBps.Max, row.IOPS,
			usString(row.P50), usString(row.P99), usString(row.P999), row.CPUPerGiB,
			optString(row.SQEsPerMiB, "%.2f"), optString(row.EntersPerMiB, "%.2f"),
			optString(row.PagesPerBio, "%.1f"), optString(row.AllocsPerOp, "%.3f"), ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return r.WriteHTTPTable(w)
}

func usString(ns int64) string { return fmt.Sprintf("%.1fµs", float64(ns)/1e3) }

func optString(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// WriteGobench writes one Go benchmark line per run, so benchstat can
// compare two commits (`benchstat old.txt new.txt`) or runners
// (`benchstat -col /runner run.txt`). N is the run's operations.
func (r *Report) WriteGobench(w io.Writer) error {
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/mpaged/mpaged/bench\ncpu: %s\n", runtime.GOOS, runtime.GOARCH, r.Machine.CPU)
	fmt.Fprintf(w, "target: %s\n", r.Target.Kind)
	for _, res := range r.Results {
		ops := res.Ops()
		if ops == 0 {
			continue
		}
		fmt.Fprintf(w, "BenchmarkMpaged/workload=%s/runner=%s\t%d\t%.1f ns/op\t%.2f MB/s\t%d p50-ns\t%d p99-ns\t%d p99.9-ns\t%.4f cpu-s/GiB",
			res.Workload, res.Runner, ops, res.Seconds*1e9/float64(ops), float64(res.Bytes())/res.Seconds/1e6,
			res.P50, res.P99, res.P999, res.CPUPerGiB())
		if e := res.Engine; e != nil {
			mib := float64(res.Bytes()) / (1 << 20)
			fmt.Fprintf(w, "\t%.3f SQEs/MiB\t%.3f enters/MiB\t%.2f pages/bio\t%.4f allocs/op",
				safeDiv(float64(e.SQEs), mib), safeDiv(float64(e.Enters), mib),
				safeDiv(float64(e.BioPages), float64(e.Bios)), safeDiv(float64(e.Mallocs), float64(ops)))
		}
		fmt.Fprintln(w)
	}
	return nil
}
