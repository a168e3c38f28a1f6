package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// catRunner is `mpaged cat --volume DEV /bench-file > /dev/null` as a
// process, a fresh one per run (cold: an empty cache, the bench's --cache,
// as the cold daemon's), for the cold whole-file GET only: issue 7's
// comparison of a cold GET through the daemon with the CLI reading the
// same file in the same run. Its time is the process's whole life, start
// and volume open included; StartupSeconds says how much of it that is.
type catRunner struct{ mpagedProcess }

func (r *catRunner) Name() string    { return runnerCLICat }
func (r *catRunner) servesHTTP()     {}
func (r *catRunner) Teardown() error { return nil }

func (r *catRunner) Applies(w Workload) bool {
	return w.HTTP != nil && w.HTTP.Mode == WholeGet && !w.HTTP.Warm
}

func (r *catRunner) Setup(ctx context.Context, env *Env) error { return r.setup(ctx, env, r.Name()) }

// Run cats an empty file (the startup), then the bench file, each in a
// new process with stdout on /dev/null.
func (r *catRunner) Run(ctx context.Context, w Workload) (Result, error) {
	vol, err := r.env.httpVolume(ctx)
	if err != nil {
		return Result{}, err
	}
	startup, _, err := r.cat(ctx, vol, httpEmptyName)
	if err != nil {
		return Result{}, err
	}
	dev := startDeviceReads(vol.Dev)
	elapsed, cpu, err := r.cat(ctx, vol, vol.File.Name)
	if err != nil {
		return Result{}, err
	}
	devRead := dev.done()
	hist := newLatencyHistogram()
	_ = hist.RecordValue(min(max(int64(elapsed), 1), maxLatency))
	res := resultOf(w, r.Name(), Measurement{ReadOps: 1, ReadBytes: vol.File.Size, Elapsed: elapsed, ReadLatency: hist})
	res.CPUSeconds = cpu
	res.HTTP = &HTTPCounters{Requests: 1, DeviceReadBytes: devRead, ServerProcesses: 1,
		CacheBytes: r.env.CacheBytes, StartupSeconds: startup.Seconds()}
	return res, nil
}

// cat runs mpaged cat of name and returns its wall time (start to exit)
// and CPU time (user+system of all its threads, from wait4).
func (r *catRunner) cat(ctx context.Context, vol *httpVolume, name string) (time.Duration, float64, error) {
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer devNull.Close()
	stderr := &tailBuffer{max: 8 << 10}
	cmd := exec.CommandContext(ctx, r.bin, "cat", "--volume", vol.Dev, "--cache", strconv.FormatInt(r.env.CacheBytes, 10), name)
	cmd.Stdout, cmd.Stderr = devNull, stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %s: mpaged cat %s: %v: %s", ErrRunner, r.Name(), name, err, tail(stderr.String()))
	}
	return elapsed, processCPUOf(cmd), nil
}
