package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mpagedHTTPRunner is the daemon: the real mpaged binary running `mpaged
// serve --read-only` on the HTTP volume as a separate process, a fresh one
// for every run. A cold run's daemon has the bench's --cache (smaller than
// the file) and an empty cache; a warm run's has room for the whole file
// and GETs it once before the clock.
type mpagedHTTPRunner struct{ mpagedProcess }

// mpagedProcess is what the runners that start the mpaged binary share:
// the environment and the binary, checked at Setup.
type mpagedProcess struct {
	env *Env
	bin string
}

// setup checks env's mpaged binary for runner name.
func (r *mpagedProcess) setup(ctx context.Context, env *Env, name string) error {
	r.env = env
	bin, err := checkMpagedBinary(ctx, env.MpagedBinary)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.bin = bin
	return nil
}

func (r *mpagedHTTPRunner) Name() string            { return runnerHTTPMpaged }
func (r *mpagedHTTPRunner) Applies(w Workload) bool { return w.HTTP != nil }
func (r *mpagedHTTPRunner) servesHTTP()             {}
func (r *mpagedHTTPRunner) Teardown() error         { return nil }

func (r *mpagedHTTPRunner) Setup(ctx context.Context, env *Env) error {
	return r.setup(ctx, env, r.Name())
}

// checkMpagedBinary makes sure bin is mpaged: `bin --version` must say so.
// (--version, not version: a Go test binary given "version" would run its
// tests, and given --version it exits on the unknown flag.)
func checkMpagedBinary(ctx context.Context, bin string) (string, error) {
	if bin == "" {
		return "", fmt.Errorf("%w: no mpaged binary to run (bench.Config.MpagedBinary, --mpaged)", ErrUnavailable)
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: mpaged binary %s: %v", ErrUnavailable, bin, err)
	}
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil || !bytes.HasPrefix(out, []byte("mpaged ")) {
		return "", fmt.Errorf("%w: %s --version did not say mpaged (%v): %.80q", ErrUnavailable, p, err, out)
	}
	return p, nil
}

// daemonCache is the daemon's cache for w: the bench's cache (smaller than
// the file: every byte of a cold GET comes from the device), or for a warm
// run the file and that much again (metadata, readahead past the end), so
// the second pass is all hits.
func daemonCache(w Workload, env *Env, file *benchFile) int64 {
	if w.HTTP.Warm {
		return file.Size + env.CacheBytes
	}
	return env.CacheBytes
}

func (r *mpagedHTTPRunner) Run(ctx context.Context, w Workload) (Result, error) {
	return r.run(ctx, w, nil)
}

// run is Run with a Visit hook (tests).
func (r *mpagedHTTPRunner) run(ctx context.Context, w Workload, visit func(int64, []byte)) (_ Result, err error) {
	vol, err := r.env.httpVolume(ctx)
	if err != nil {
		return Result{}, err
	}
	cache := daemonCache(w, r.env, &vol.File)
	var profile string
	if r.env.CPUProfile != "" {
		profile = fmt.Sprintf("%s.%s.%s.%d.pprof", r.env.CPUProfile, w.Name, r.Name(), w.Rep)
	}
	d, err := startDaemon(ctx, r.bin, vol.Dev, cache, max(64, w.HTTP.Concurrency), profile)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		// SIGTERM: a clean shutdown, which writes the profile.
		if serr := d.proc.stop(syscall.SIGTERM, 30*time.Second); serr != nil && err == nil {
			err = serr
		}
	}()
	res, err := measureServer(ctx, w, serverUnderTest{name: r.Name(), url: d.url, pid: d.proc.pid(), dev: vol.Dev,
		file: &vol.File, metrics: d.url + "/metrics"}, visit)
	if err != nil {
		return Result{}, err
	}
	res.HTTP.CacheBytes = cache
	res.Profile = profile
	return res, nil
}

// daemon is a running mpaged serve.
type daemon struct {
	proc *serverProc
	url  string // http://127.0.0.1:PORT
}

var servingRE = regexp.MustCompile(`serving .* on (http://\S+)`)

// startDaemon runs mpaged serve read-only on dev on a loopback port the
// kernel picks, and waits until it says where it serves. Request lines
// are not logged (--log-level warn), as nginx runs with access_log off.
func startDaemon(ctx context.Context, bin, dev string, cache int64, conc int, profile string) (*daemon, error) {
	args := []string{"serve", "--volume", dev, "--read-only", "--listen", "127.0.0.1:0",
		"--cache", strconv.FormatInt(cache, 10), "--max-concurrent", strconv.Itoa(conc), "--log-level", "warn"}
	if profile != "" {
		args = append(args, "--cpuprofile", profile)
	}
	pr, pw := io.Pipe()
	p, err := startServer("mpaged serve", bin, args, pw)
	if err != nil {
		return nil, err
	}
	go func() {
		<-p.done
		pw.Close()
	}()
	// The scanner reads stdout to its end, so the daemon never blocks
	// writing it; only the first "serving" line counts.
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	d := &daemon{proc: p}
	select {
	case d.url = <-found:
		return d, nil
	case <-p.done:
		return nil, p.exitError()
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(60 * time.Second):
		err = fmt.Errorf("%w: mpaged serve did not start within 60s: %s", ErrRunner, tail(p.stderr.String()))
	}
	return nil, errors.Join(err, p.stop(syscall.SIGKILL, time.Second))
}

// scrapeMetrics reads the daemon's /metrics (the text format) into series
// "name{labels}" -> value.
func scrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRunner, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %s", ErrRunner, url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads Prometheus text exposition: comments skipped, each
// sample "series value [timestamp]".
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// Label values may hold spaces: the value follows the '}'.
		cut := strings.LastIndexByte(line, '}') + 1
		rest := strings.Fields(line[cut:])
		series := line[:cut]
		if cut == 0 {
			if len(rest) < 2 {
				continue
			}
			series, rest = rest[0], rest[1:]
		}
		if len(rest) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[series] = v
	}
	return out, sc.Err()
}

// metricSum sums every series of a metric name, whatever its labels.
func metricSum(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// metricLabel is the value of label in the first series of name.
func metricLabel(m map[string]float64, name, label string) string {
	for k := range m {
		if rest, ok := strings.CutPrefix(k, name+"{"); ok {
			if _, v, ok := strings.Cut(rest, label+`="`); ok {
				v, _, _ = strings.Cut(v, `"`)
				return v
			}
		}
	}
	return ""
}

// daemonCounters turns two scrapes around a run into the engine's
// counters over it. scrapeMallocs is what one scrape allocates in the
// daemon (measured by two scrapes in a row), taken off the count.
func daemonCounters(before, after map[string]float64, scrapeMallocs float64) *EngineCounters {
	d := func(name string) uint64 { return uint64(max(metricSum(after, name)-metricSum(before, name), 0)) }
	return &EngineCounters{
		Backend:     metricLabel(after, "mpaged_engine_info", "backend"),
		SQEs:        d("mpaged_ring_sqes_total"),
		Enters:      d("mpaged_ring_enter_total"),
		FixedBufIO:  d("mpaged_ring_fixed_buffer_ios_total"),
		Bios:        d("mpaged_bios_submitted_total"),
		BioPages:    d("mpaged_bio_pages_sum"),
		BlockIOs:    d("mpaged_block_ios_total"),
		CacheHits:   d("mpaged_pagecache_hits_total"),
		CacheMisses: d("mpaged_pagecache_misses_total"),
		Mallocs: uint64(max(metricSum(after, "go_memstats_mallocs_total")-
			metricSum(before, "go_memstats_mallocs_total")-scrapeMallocs, 0)),
	}
}
