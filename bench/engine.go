package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// engineRunner runs workloads through the engine's page cache on a raw
// volume: ReadAt (readahead, ReadPages) and WriteAt (WritePages on
// writeback, then a sync); random reads through an mpage.Reader from one
// goroutine, or with readAt through ReadAt from Depth goroutines.
type engineRunner struct {
	name      string
	backend   string
	multipage bool
	readAt    bool
	env       *Env
}

func newEngineRunner(name, backend string, multipage bool) *engineRunner {
	return &engineRunner{name: name, backend: backend, multipage: multipage}
}

// newReadAtRunner is the engine with random reads made by Depth
// goroutines, each with one ReadAt in flight (phase 1's way).
func newReadAtRunner(name, backend string) *engineRunner {
	return &engineRunner{name: name, backend: backend, multipage: true, readAt: true}
}

func (r *engineRunner) Name() string { return r.name }

// Applies: every workload; with multipage off only the sequential ones,
// where coalescing can happen at all; with readAt only the random ones
// with reads, where it reads differently.
func (r *engineRunner) Applies(w Workload) bool {
	switch {
	case r.readAt:
		return w.Pattern == Random && w.Reads()
	case !r.multipage:
		return w.Pattern == Sequential
	}
	return true
}

// fileOnly hides a PageFile's page cache: the workload then reads with
// ReadAt.
type fileOnly struct{ File }

// Setup checks that the engine opens on the target with this backend; each
// run opens its own (see run).
func (r *engineRunner) Setup(_ context.Context, env *Env) error {
	r.env = env
	if err := backendAvailable(r.backend); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	st, err := r.open()
	if err != nil {
		return err
	}
	return st.close()
}

// open assembles the engine for one run. Every run has its own, opened
// before and closed after the clock: a cold cache, and the device held
// exclusively (engine.Open's O_EXCL) only while the run writes it.
func (r *engineRunner) open() (*stack, error) {
	vecs := 0
	if !r.multipage {
		vecs = 1
	}
	st, err := openStack(r.env.Target, stackOptions{Backend: r.backend, CacheBytes: r.env.CacheBytes, MaxBioVecs: vecs,
		Depth: r.env.Depth, Write: r.env.Write, Logf: r.env.Logf})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.name, err)
	}
	return st, nil
}

func (r *engineRunner) Teardown() error { return nil }

// engineSnapshot is every counter a run's result is a difference of.
type engineSnapshot struct {
	ring  uring.Stats
	eng   mpage.StatsSnapshot
	cpu   time.Duration
	alloc uint64
}

func snapshotOf(st *stack) engineSnapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return engineSnapshot{ring: st.eng.Ring.Stats(), eng: st.eng.Stats.Snapshot(), cpu: processCPU(), alloc: ms.Mallocs}
}

// Run opens the engine (a cold cache), runs w on the raw volume's file
// between two snapshots of the counters, and closes it.
func (r *engineRunner) Run(ctx context.Context, w Workload) (Result, error) {
	return r.run(ctx, w, nil)
}

// run is Run with a Visit hook (tests).
func (r *engineRunner) run(ctx context.Context, w Workload, visit func(int64, []byte)) (_ Result, err error) {
	st, err := r.open()
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if cerr := st.close(); cerr != nil && err == nil {
			err = fmt.Errorf("%w: %s: close: %v", ErrRunner, r.name, cerr)
		}
	}()
	var f File = st.vol.File()
	if r.readAt {
		f = fileOnly{f}
	}
	var before, after engineSnapshot
	var profile string
	var stopProfile func() error
	var perr error
	hooks := Hooks{
		Begin: func() {
			if r.env.CPUProfile != "" {
				profile = fmt.Sprintf("%s.%s.%s.%d.pprof", r.env.CPUProfile, w.Name, r.name, w.Rep)
				stopProfile, perr = startProfile(profile)
			}
			before = snapshotOf(st)
		},
		End: func() {
			after = snapshotOf(st)
			if stopProfile != nil {
				perr = stopProfile()
			}
		},
		Visit: visit,
	}
	m, err := w.Run(ctx, f, hooks)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", r.name, err)
	}
	if perr != nil {
		return Result{}, fmt.Errorf("%s: cpu profile: %w", r.name, perr)
	}
	res := resultOf(w, r.name, m)
	res.CPUSeconds = (after.cpu - before.cpu).Seconds()
	res.Profile = profile
	res.Engine = engineCounters(st.eng.Ring.Features().Backend, before, after)
	return res, nil
}

func engineCounters(backend string, b, a engineSnapshot) *EngineCounters {
	c := &EngineCounters{
		Backend:     backend,
		SQEs:        a.ring.SQEs - b.ring.SQEs,
		Enters:      a.ring.Enters - b.ring.Enters,
		FixedBufIO:  a.ring.FixedBufIO - b.ring.FixedBufIO,
		CacheHits:   a.eng.CacheHits - b.eng.CacheHits,
		CacheMisses: a.eng.CacheMisses - b.eng.CacheMisses,
		Mallocs:     a.alloc - b.alloc,
	}
	for d := range 2 {
		c.Bios += a.eng.Bios[d] - b.eng.Bios[d]
		c.BioPages += a.eng.BioPages[d] - b.eng.BioPages[d]
		c.BlockIOs += a.eng.BlockIOs[d] - b.eng.BlockIOs[d]
	}
	return c
}

// resultOf fills a Result's common fields from a Measurement.
func resultOf(w Workload, runner string, m Measurement) Result {
	h := m.ReadLatency
	if !w.Reads() {
		h = m.WriteLatency
	}
	return Result{
		Workload: w.Name, Runner: runner,
		ReadOps: m.ReadOps, WriteOps: m.WriteOps, ReadBytes: m.ReadBytes, WriteBytes: m.WriteBytes,
		Seconds: m.Elapsed.Seconds(),
		P50:     quantile(h, 50), P99: quantile(h, 99), P999: quantile(h, 99.9),
	}
}

func quantile(h *hdrhistogram.Histogram, q float64) int64 {
	if h == nil || h.TotalCount() == 0 {
		return 0
	}
	return h.ValueAtQuantile(q)
}

// processCPU is the process's user+system time so far (every thread, the
// ring's kernel-side work done in its context included).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startProfile starts a CPU profile into path; stop ends and flushes it.
func startProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
