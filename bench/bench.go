package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"time"

	"golang.org/x/term"
)

// Run runs the benchmark cfg describes: it makes or opens the target, sets
// up the runners, runs the schedule, writes the report, and removes what it
// made, also when it fails or ctx is cancelled (Ctrl-C).
func Run(ctx context.Context, cfg Config) (_ *Report, err error) {
	cfg, err = cfg.normalize()
	if err != nil {
		return nil, err
	}
	logger := log.New(cfg.Stderr, "mpaged bench: ", 0)
	workloads := cfg.workloads()
	env := &Env{CacheBytes: cfg.CacheBytes, CPUProfile: cfg.CPUProfile, MpagedBinary: cfg.MpagedBinary,
		TempDir: cfg.TempDir, Logf: logger.Printf}
	for _, w := range workloads {
		env.Depth = max(env.Depth, w.Depth)
		env.Write = env.Write || w.Writes()
	}
	tc := TargetConfig{Spec: cfg.Target, Size: cfg.Size, Write: env.Write, DestroyData: cfg.DestroyData, TempDir: cfg.TempDir}
	if httpPlanned(cfg, workloads) {
		// The HTTP workloads put a file system on the target (mke2fs).
		tc.DeviceSize, tc.Write = cfg.Size+httpOverhead(cfg.Size), true
	}
	env.Target, err = OpenTarget(ctx, tc)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := env.Target.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("bench: target cleanup: %w", cerr))
		}
	}()
	region := env.Target.Size / int64(cfg.BlockSize) * int64(cfg.BlockSize)
	for i := range workloads {
		workloads[i].Region = region
	}
	runners, notes, err := setupRunners(ctx, cfg, env)
	defer func() {
		for _, r := range runners {
			if terr := r.Teardown(); terr != nil {
				err = errors.Join(err, fmt.Errorf("bench: %s teardown: %w", r.Name(), terr))
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	rep := newReport(cfg, env.Target, notes)
	if err := runSchedule(ctx, cfg, workloads, runners, rep); err != nil {
		return rep, err
	}
	rep.finish()
	return rep, writeOutputs(cfg, rep)
}

// setupRunners builds and sets up the selected runners. A runner the host
// or build cannot run is an error when it was asked for by name, and a note
// otherwise (iouring-go without the tag).
func setupRunners(ctx context.Context, cfg Config, env *Env) ([]Runner, []string, error) {
	var runners []Runner
	var notes []string
	for _, d := range runnerDefs {
		named := slices.Contains(cfg.Runners, d.name)
		if len(cfg.Runners) > 0 && !named {
			continue
		}
		r := d.make()
		err := r.Setup(ctx, env)
		switch {
		case err == nil:
			runners = append(runners, r)
		case errors.Is(err, ErrUnavailable) && d.optional && !named:
			notes = append(notes, fmt.Sprintf("runner %s skipped: %v", d.name, err))
			_ = r.Teardown()
		default:
			_ = r.Teardown()
			return runners, notes, err
		}
	}
	if len(runners) == 0 {
		return nil, notes, fmt.Errorf("%w: no runner selected", ErrConfig)
	}
	return runners, notes, nil
}

// plannedRun is one entry of the schedule.
type plannedRun struct {
	w      Workload
	runner Runner
	order  int
}

// schedule lists the runs: workloads in order, each repeated, and within a
// repetition every runner that applies, in an order that alternates
// (see runOrder).
func schedule(cfg Config, workloads []Workload, runners []Runner) []plannedRun {
	var plan []plannedRun
	for _, w := range workloads {
		var apply []Runner
		for _, r := range runners {
			if appliesTo(r, w) {
				apply = append(apply, r)
			}
		}
		for rep := range cfg.Repetitions {
			w := w
			w.Rep = rep
			for pos, i := range runOrder(len(apply), rep) {
				plan = append(plan, plannedRun{w: w, runner: apply[i], order: pos})
			}
		}
	}
	return plan
}

// runOrder is the order of n runners in repetition rep: forward in even
// repetitions and backward in odd ones (A B C, C B A), rotated every two
// repetitions so each runner in turn goes first (B C A, A C B, ...).
func runOrder(n, rep int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = (i + rep/2) % n
	}
	if rep%2 == 1 {
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			order[i], order[j] = order[j], order[i]
		}
	}
	return order
}

func runSchedule(ctx context.Context, cfg Config, workloads []Workload, runners []Runner, rep *Report) error {
	plan := schedule(cfg, workloads, runners)
	bar := newProgress(cfg.Progress, len(plan), time.Duration(len(plan))*cfg.Duration)
	defer bar.finish()
	for _, p := range plan {
		if err := ctx.Err(); err != nil {
			return err
		}
		bar.describe(fmt.Sprintf("%s %s %d/%d", p.w.Name, p.runner.Name(), p.w.Rep+1, cfg.Repetitions))
		res, err := p.runner.Run(ctx, p.w)
		if err != nil {
			return fmt.Errorf("bench: %s rep %d: %w", p.w.Name, p.w.Rep+1, err)
		}
		res.Rep, res.Order = p.w.Rep, p.order
		rep.Results = append(rep.Results, res)
		bar.step()
	}
	return nil
}

// isTerminal reports whether w is a terminal (progress bars only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
