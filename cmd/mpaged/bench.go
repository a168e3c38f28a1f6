package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/mpaged/mpaged/bench"
)

const benchUsage = `mpaged bench [--target zram|loop|PATH] [--quick] [--workloads LIST] [--runners LIST]
    [--size SIZE] [--bs SIZE] [--depth N] [--duration D] [--repetitions N] [--cache SIZE]
    [--format table|json|gobench] [--json FILE] [--svg FILE] [--cpuprofile PREFIX] [--destroy-data]
    [--mpaged PATH]`

// runBench binds the flags to a bench.Config and runs it; Ctrl-C stops the
// run and still removes the target it made.
func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", benchUsage)
	var cfg bench.Config
	var workloads, runners string
	fs.StringVar(&cfg.Target, "target", "", "zram, loop, or a block device or file (default zram where the kernel has it, else loop)")
	fs.Var(byteSize{&cfg.Size}, "size", "region every workload uses, the size of a target the bench creates, and of the HTTP workloads' file (default 1GiB; quick 64MiB)")
	fs.Var(byteSizeInt{&cfg.BlockSize}, "bs", "block size of the sequential workloads (default 128KiB; random ones use 4KiB)")
	fs.IntVar(&cfg.Depth, "depth", 0, "queue depth of every workload (default: 32, and 128 for randread)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "length of one run (default 500ms; quick 100ms)")
	fs.IntVar(&cfg.Repetitions, "repetitions", 0, "repetitions of each workload, runners interleaved (default 3; quick 1)")
	fs.StringVar(&workloads, "workloads", "", "comma-separated: seqread,randread,seqwrite,randwrite,mix,http-get (cold and warm; or http-get-cold, http-get-warm),http-range (default all)")
	fs.StringVar(&runners, "runners", "", "comma-separated runners (default all this build and host have): engine-native, engine-iouring-go, engine-sync, engine-native-1page, engine-native-readat, fio-io_uring, fio-libaio, fio-io_uring-1m, http-mpaged, http-nginx, cli-cat")
	fs.StringVar(&cfg.MpagedBinary, "mpaged", "", "the mpaged binary http-mpaged and cli-cat run (default: this one)")
	fs.Var(byteSize{&cfg.CacheBytes}, "cache", "engine page cache (default 64MiB; quick 8MiB)")
	fs.BoolVar(&cfg.Quick, "quick", false, "a run of a few seconds (what make test runs)")
	fs.StringVar(&cfg.JSONPath, "json", "", "write the report as JSON to FILE")
	fs.StringVar(&cfg.SVGPath, "svg", "", "write a throughput chart (SVG) to FILE")
	fs.StringVar(&cfg.Format, "format", "table", "stdout format: table, json or gobench (benchstat)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of every engine run and every daemon (http-mpaged) to PREFIX.WORKLOAD.RUNNER.REP.pprof")
	fs.BoolVar(&cfg.DestroyData, "destroy-data", false, "allow writes to a --target PATH (its data is lost)")
	operands, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(operands) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, operands)
	}
	cfg.Workloads, cfg.Runners = bench.SplitList(workloads), bench.SplitList(runners)
	if cfg.MpagedBinary == "" {
		// The runners check that it is mpaged (a test binary is not).
		cfg.MpagedBinary, _ = os.Executable()
	}
	cfg.Stdout, cfg.Stderr, cfg.Progress = stdout, stderr, stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = bench.Run(ctx, cfg)
	if errors.Is(err, bench.ErrConfig) || errors.Is(err, bench.ErrDestroyData) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

// byteSize and byteSizeInt are flags that take sizes like 64MiB.
type byteSize struct{ p *int64 }

func (b byteSize) String() string {
	if b.p == nil || *b.p == 0 {
		return ""
	}
	return humanize.IBytes(uint64(*b.p))
}

func (b byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return fmt.Errorf("want a size like 64MiB")
	}
	*b.p = int64(n)
	return nil
}

type byteSizeInt struct{ p *int }

func (b byteSizeInt) String() string {
	if b.p == nil || *b.p == 0 {
		return ""
	}
	return humanize.IBytes(uint64(*b.p))
}

func (b byteSizeInt) Set(s string) error {
	var n int64
	if err := (byteSize{&n}).Set(s); err != nil {
		return err
	}
	if n > 1<<30 {
		return fmt.Errorf("want at most 1GiB")
	}
	*b.p = int(n)
	return nil
}
