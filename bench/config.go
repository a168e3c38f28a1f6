package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Config is one `mpaged bench` invocation. Zero fields take the defaults of
// a full run, or of a quick run with Quick.
type Config struct {
	// Target is "zram", "loop", or the path of a block device or file;
	// "" is zram where the kernel has it (and we are root), else loop.
	Target string
	// Size is the region every workload uses, from offset 0, and the size
	// of a target the harness creates (plus room for a file system when
	// HTTP workloads run) and of the HTTP workloads' file. Default 1 GiB
	// (quick: 64 MiB).
	Size int64
	// BlockSize is the sequential workloads' I/O size (default 128 KiB).
	// Random workloads use 4 KiB: that is what they measure.
	BlockSize int
	// Depth overrides every workload's queue depth; 0 keeps each one's
	// default (32, and 128 for randread).
	Depth int
	// Duration is the length of one run (default 500ms, so that a full
	// run, every runner three times, takes about a minute; quick: 100ms).
	Duration time.Duration
	// Repetitions of each workload (default 3; quick: 1).
	Repetitions int
	// Workloads and Runners select by name; nil is all (Runners: all that
	// this build and host have).
	Workloads []string
	Runners   []string
	// CacheBytes is the engine's page cache (default 64 MiB; quick 8 MiB),
	// smaller than Size so that a second pass is cold too.
	CacheBytes int64
	// Quick: a run of a few seconds (make test).
	Quick bool
	// JSONPath and SVGPath, if set, receive the report and the chart.
	JSONPath, SVGPath string
	// Format is what goes to Stdout: "table" (default), "json" or
	// "gobench" (lines benchstat reads).
	Format string
	// CPUProfile, if set, is a path prefix: every engine run writes a CPU
	// profile to PREFIX.WORKLOAD.RUNNER.REP.pprof.
	CPUProfile string
	// MpagedBinary is the mpaged executable the HTTP runners start (mpaged
	// serve, mpaged cat); "" leaves http-mpaged and cli-cat out.
	MpagedBinary string
	// DestroyData allows writes to a target named by path.
	DestroyData bool
	// TempDir holds a loop target's image (default os.TempDir()).
	TempDir string
	// Stdout receives the report; Stderr notices. Progress, if a
	// terminal, shows a progress bar for runs longer than a few seconds.
	Stdout, Stderr, Progress io.Writer
}

// Defaults of a full run and of a quick one.
const (
	defaultSize        = 1 << 30
	quickSize          = 64 << 20
	defaultBlockSize   = 128 << 10
	defaultDuration    = 500 * time.Millisecond
	quickDuration      = 100 * time.Millisecond
	defaultRepetitions = 3
	quickRepetitions   = 1
	defaultCacheBytes  = 64 << 20
	quickCacheBytes    = 8 << 20
	randomBlockSize    = 4 << 10
)

// Formats for Config.Format.
const (
	FormatTable   = "table"
	FormatJSON    = "json"
	FormatGobench = "gobench"
)

// normalize fills defaults and checks ranges.
func (c Config) normalize() (Config, error) {
	pick := func(quick bool, q, d int64) int64 {
		if quick {
			return q
		}
		return d
	}
	if c.Size == 0 {
		c.Size = pick(c.Quick, quickSize, defaultSize)
	}
	if c.BlockSize == 0 {
		c.BlockSize = defaultBlockSize
	}
	if c.Duration == 0 {
		c.Duration = time.Duration(pick(c.Quick, int64(quickDuration), int64(defaultDuration)))
	}
	if c.Repetitions == 0 {
		c.Repetitions = int(pick(c.Quick, quickRepetitions, defaultRepetitions))
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = pick(c.Quick, quickCacheBytes, defaultCacheBytes)
	}
	if c.Format == "" {
		c.Format = FormatTable
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	switch {
	case c.BlockSize < randomBlockSize || c.BlockSize > 4<<20 || c.BlockSize&(c.BlockSize-1) != 0:
		return c, fmt.Errorf("%w: block size %d: want a power of two from 4 KiB to 4 MiB", ErrConfig, c.BlockSize)
	case c.Size < 4*int64(c.BlockSize) || c.Size%int64(c.BlockSize) != 0:
		return c, fmt.Errorf("%w: size %d: want a multiple of the block size (%d), at least 4 blocks", ErrConfig, c.Size, c.BlockSize)
	case c.Depth < 0 || c.Depth > 1024:
		return c, fmt.Errorf("%w: depth %d: want 1..1024 (0: each workload's own)", ErrConfig, c.Depth)
	case c.Duration < 10*time.Millisecond:
		return c, fmt.Errorf("%w: duration %v: want at least 10ms", ErrConfig, c.Duration)
	case c.Repetitions < 1 || c.Repetitions > 1000:
		return c, fmt.Errorf("%w: repetitions %d: want 1..1000", ErrConfig, c.Repetitions)
	case c.CacheBytes < 1<<20:
		return c, fmt.Errorf("%w: cache %d bytes: want at least 1 MiB", ErrConfig, c.CacheBytes)
	case !slices.Contains([]string{FormatTable, FormatJSON, FormatGobench}, c.Format):
		return c, fmt.Errorf("%w: format %q: want table, json or gobench", ErrConfig, c.Format)
	}
	if err := checkNames("workload", c.Workloads, append(workloadNames(), httpWorkloadNames()...)); err != nil {
		return c, err
	}
	if err := checkNames("runner", c.Runners, runnerNames()); err != nil {
		return c, err
	}
	return c, nil
}

func checkNames(kind string, names, known []string) error {
	for _, n := range names {
		if !slices.Contains(known, n) {
			return fmt.Errorf("%w: unknown %s %q (have %s)", ErrConfig, kind, n, strings.Join(known, ", "))
		}
	}
	return nil
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
