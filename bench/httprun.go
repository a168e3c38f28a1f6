package bench

import (
	"context"
	"errors"
	"fmt"
)

// serverUnderTest is a running server the load generator measures.
type serverUnderTest struct {
	name string
	// url is the server's base URL; the file is at url/v1/files/NAME on
	// both servers (nginx aliases /v1/files/ to its mount).
	url string
	// pid is the server's process (nginx: the master; its workers are
	// its children).
	pid  int
	dev  string
	file *benchFile
	// metrics is the daemon's /metrics URL, "" for nginx.
	metrics string
}

func (s serverUnderTest) fileURL() string { return s.url + "/v1/files" + s.file.Name }

// measureServer runs w against s: for a warm run an untimed GET of the
// whole file first; then the timed part, bracketed by the server's CPU
// time (its processes, from /proc) and the device's read counter, and for
// the daemon by scrapes of its metrics (outside the CPU interval).
func measureServer(ctx context.Context, w Workload, s serverUnderTest, visit func(int64, []byte)) (Result, error) {
	if w.HTTP.Warm {
		if _, err := newLoadGen(s.fileURL(), s.file).getWhole(ctx, Hooks{}); err != nil {
			return Result{}, fmt.Errorf("%s: warming: %w", s.name, err)
		}
	}
	var before map[string]float64
	var scrapeMallocs float64
	if s.metrics != "" {
		first, err := scrapeMetrics(ctx, s.metrics)
		if err == nil {
			before, err = scrapeMetrics(ctx, s.metrics)
		}
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", s.name, err)
		}
		scrapeMallocs = metricSum(before, "go_memstats_mallocs_total") - metricSum(first, "go_memstats_mallocs_total")
	}
	var (
		cpu     serverCPU
		dev     deviceReads
		cpuErr  error
		cpuSecs float64
		procs   int
		devRead int64
	)
	hooks := Hooks{
		Begin: func() {
			cpu, cpuErr = startServerCPU(s.pid)
			dev = startDeviceReads(s.dev)
		},
		End: func() {
			devRead = dev.done()
			if cpuErr == nil {
				cpuSecs, procs, cpuErr = cpu.done()
			}
		},
		Visit: visit,
	}
	g := newLoadGen(s.fileURL(), s.file)
	var m Measurement
	var err error
	if w.HTTP.Mode == WholeGet {
		m, err = g.getWhole(ctx, hooks)
	} else {
		m, err = g.getRanges(ctx, w, hooks)
	}
	if err = errors.Join(err, cpuErr); err != nil {
		return Result{}, fmt.Errorf("%s: %w", s.name, err)
	}
	res := resultOf(w, s.name, m)
	res.CPUSeconds = cpuSecs
	res.HTTP = &HTTPCounters{Requests: m.ReadOps, Connections: g.dials.Load(), DeviceReadBytes: devRead, ServerProcesses: procs}
	if s.metrics != "" {
		after, err := scrapeMetrics(ctx, s.metrics)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", s.name, err)
		}
		res.Engine = daemonCounters(before, after, scrapeMallocs)
	}
	return res, nil
}
