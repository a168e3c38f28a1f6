package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// fioRunner runs workloads with fio on the same target: O_DIRECT, the
// same region, block size (unless bs overrides it) and depth, one job.
type fioRunner struct {
	name     string
	ioengine string
	bs       int // 0: the workload's
	fio      string
	env      *Env
	// startupCPU is what an empty fio job costs, taken off every run.
	startupCPU float64
}

func newFioRunner(name, ioengine string, bs int) *fioRunner {
	return &fioRunner{name: name, ioengine: ioengine, bs: bs}
}

func (r *fioRunner) Name() string { return r.name }

// Applies: a runner with its own block size is for sequential workloads
// only (a random 4 KiB workload at 1 MiB is another workload).
func (r *fioRunner) Applies(w Workload) bool { return r.bs == 0 || w.Pattern == Sequential }

func (r *fioRunner) Setup(ctx context.Context, env *Env) error {
	r.env = env
	p, err := lookTool("fio")
	if err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	r.fio = p
	out, err := exec.CommandContext(ctx, p, "--enghelp").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s: fio --enghelp: %v", ErrUnavailable, r.name, err)
	}
	if !hasEngine(string(out), r.ioengine) {
		return fmt.Errorf("%w: %s: this fio has no %s ioengine", ErrUnavailable, r.name, r.ioengine)
	}
	return r.measureStartup(ctx)
}

// measureStartup runs an empty job (one block, one pass) and keeps what
// its process cost: fio's startup and exit, which every run pays on top
// of its I/O.
func (r *fioRunner) measureStartup(ctx context.Context) error {
	t := r.env.Target
	w := Workload{Name: "startup", Pattern: Sequential, ReadPercent: 100, BlockSize: max(t.LogicalBlock, 4096), Depth: 1}
	w.Region = int64(w.BlockSize)
	cmd := exec.CommandContext(ctx, r.fio, fioJob{Workload: w, Path: t.Path, IOEngine: r.ioengine}.args()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s: fio on %s: %v: %s", ErrUnavailable, r.name, t.Path, err, tail(string(out)))
	}
	r.startupCPU = processCPUOf(cmd)
	return nil
}

// processCPUOf is a finished command's user+system time, its threads
// included.
func processCPUOf(cmd *exec.Cmd) float64 {
	if cmd.ProcessState == nil {
		return 0
	}
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

func hasEngine(enghelp, engine string) bool {
	for _, l := range strings.Split(enghelp, "\n") {
		if strings.TrimSpace(l) == engine {
			return true
		}
	}
	return false
}

func (r *fioRunner) Teardown() error { return nil }

// fioJob is what one fio invocation does.
type fioJob struct {
	Workload Workload
	Path     string
	IOEngine string
	BS       int
	// Verify, if set, is a verify_pattern (fio's syntax): writes fill
	// blocks with it, and Verify reads check every byte against it.
	Verify string
	// VerifyOnly reads the region and checks it against Verify instead
	// of running the workload.
	VerifyOnly bool
}

// args are fio's command line for the job.
func (j fioJob) args() []string {
	w := j.Workload
	bs := w.BlockSize
	if j.BS > 0 {
		bs = j.BS
	}
	a := []string{
		"--name=" + w.Name, "--filename=" + fioEscape(j.Path),
		"--ioengine=" + j.IOEngine, "--direct=1", "--numjobs=1",
		"--rw=" + fioRW(w), "--bs=" + strconv.Itoa(bs), "--iodepth=" + strconv.Itoa(max(w.Depth, 1)),
		"--offset=0", "--size=" + strconv.FormatInt(w.Region, 10),
		"--output-format=json", "--lat_percentiles=1", "--percentile_list=50:99:99.9",
	}
	if w.Pattern == Random && w.Reads() && w.Writes() {
		a = append(a, "--rwmixread="+strconv.Itoa(w.ReadPercent))
	}
	if j.IOEngine == "io_uring" {
		// fio at its best: registered buffers and files, as the engine
		// uses them.
		a = append(a, "--fixedbufs=1", "--registerfiles=1")
	}
	if w.Duration > 0 && !j.VerifyOnly {
		a = append(a, "--time_based", "--runtime="+strconv.FormatInt(w.Duration.Milliseconds(), 10)+"ms")
	}
	if w.Writes() && !j.VerifyOnly {
		// The engine's write runs end with a sync inside the clock; so
		// do fio's.
		a = append(a, "--end_fsync=1")
	}
	if j.Verify != "" {
		// No verify state file: fio would leave one in the working
		// directory.
		a = append(a, "--verify=pattern", "--verify_pattern="+j.Verify, "--verify_fatal=1", "--verify_state_save=0")
		if j.VerifyOnly {
			a = append(a, "--verify_only=1")
		} else {
			a = append(a, "--do_verify=0")
		}
	}
	return a
}

func fioRW(w Workload) string {
	switch {
	case w.Pattern == Sequential && w.ReadPercent == 100:
		return "read"
	case w.Pattern == Sequential && w.ReadPercent == 0:
		return "write"
	case w.Pattern == Sequential:
		return "rw"
	case w.ReadPercent == 100:
		return "randread"
	case w.ReadPercent == 0:
		return "randwrite"
	}
	return "randrw"
}

// fioEscape escapes the colons fio would split a filename list on.
func fioEscape(path string) string { return strings.ReplaceAll(path, ":", `\:`) }

func (r *fioRunner) Run(ctx context.Context, w Workload) (Result, error) {
	return r.runJob(ctx, fioJob{Workload: w, Path: r.env.Target.Path, IOEngine: r.ioengine, BS: r.bs})
}

// runJob runs fio and reads its JSON report.
func (r *fioRunner) runJob(ctx context.Context, j fioJob) (Result, error) {
	cmd := exec.CommandContext(ctx, r.fio, j.args()...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s: fio %s: %v: %s", ErrRunner, r.name, strings.Join(j.args(), " "), err, tail(stderr.String()))
	}
	res, err := parseFio(stdout.Bytes(), j.Workload)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s: %v: %s", ErrRunner, r.name, err, tail(stderr.String()))
	}
	res.Runner = r.name
	// The process less an empty job's startup, but never under fio's own
	// figure, which is part of it (the startup cost varies a little, and
	// short runs would show the noise).
	res.FioOwnCPUSeconds = res.CPUSeconds
	res.CPUSeconds = max(processCPUOf(cmd)-r.startupCPU, res.FioOwnCPUSeconds)
	return res, nil
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// fioReport is the part of fio's JSON output the harness reads.
type fioReport struct {
	Jobs []struct {
		Error      int     `json:"error"`
		JobRuntime int64   `json:"job_runtime"` // ms
		UsrCPU     float64 `json:"usr_cpu"`     // percent of job_runtime
		SysCPU     float64 `json:"sys_cpu"`
		Read       fioDir  `json:"read"`
		Write      fioDir  `json:"write"`
	} `json:"jobs"`
}

type fioDir struct {
	IOBytes  int64  `json:"io_bytes"`
	TotalIOs int64  `json:"total_ios"`
	Lat      fioLat `json:"lat_ns"`
	Clat     fioLat `json:"clat_ns"`
}

type fioLat struct {
	N          int64            `json:"N"`
	Percentile map[string]int64 `json:"percentile"`
}

// percentile returns the total latency percentile (lat_ns, which
// --lat_percentiles asks for), else the completion latency's.
func (d fioDir) percentile(p string) int64 {
	if v, ok := d.Lat.Percentile[p]; ok {
		return v
	}
	return d.Clat.Percentile[p]
}

// parseFio turns fio's JSON report of one job into a Result (fio may print
// notices before the JSON).
func parseFio(out []byte, w Workload) (Result, error) {
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var rep fioReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return Result{}, fmt.Errorf("fio JSON: %w", err)
	}
	if len(rep.Jobs) != 1 {
		return Result{}, fmt.Errorf("fio JSON: %d jobs, want 1", len(rep.Jobs))
	}
	job := rep.Jobs[0]
	if job.Error != 0 {
		return Result{}, fmt.Errorf("fio job error %d", job.Error)
	}
	main := job.Read
	if !w.Reads() {
		main = job.Write
	}
	secs := float64(job.JobRuntime) / 1000
	res := Result{
		Workload: w.Name,
		ReadOps:  job.Read.TotalIOs, WriteOps: job.Write.TotalIOs,
		ReadBytes: job.Read.IOBytes, WriteBytes: job.Write.IOBytes,
		Seconds: secs,
		P50:     main.percentile("50.000000"),
		P99:     main.percentile("99.000000"),
		P999:    main.percentile("99.900000"),
		// fio's own figure; runJob replaces it with the process's.
		CPUSeconds: (job.UsrCPU + job.SysCPU) / 100 * secs,
	}
	if res.Ops() == 0 || secs == 0 {
		return Result{}, fmt.Errorf("fio did no I/O")
	}
	return res, nil
}
