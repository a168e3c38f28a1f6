package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mpaged/mpaged/internal/testenv"
)

// designNames are the metric names the design fixes: dashboards, alerts
// and the deployment's rules depend on them.
var designNames = []string{
	"mpaged_build_info",
	"mpaged_bios_submitted_total",
	"mpaged_bio_pages",
	"mpaged_io_latency_seconds",
	"mpaged_confused_pages_total",
	"mpaged_alloc_degraded_total",
	"mpaged_alloc_failed_total",
	"mpaged_alloc_inuse_bytes",
	"mpaged_pagecache_pages",
	"mpaged_pagecache_limit_pages",
	"mpaged_writeback_errors_total",
	"mpaged_ring_sqes_total",
	"mpaged_ring_enter_total",
	"mpaged_ring_inflight",
	"mpaged_http_requests_total",
	"mpaged_http_request_duration_seconds",
	"mpaged_http_requests_in_flight",
	"mpaged_http_response_size_bytes",
	"mpaged_up",
	"mpaged_volume_read_only",
	"mpaged_volume_clean",
	"go_goroutines",
	"process_cpu_seconds_total",
}

// logs collects Logf lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// daemonMetrics is the daemon's wiring: Metrics over an engine that has
// done I/O, /metrics, and one instrumented API route that has served a
// request. It returns the Metrics and the mux.
func daemonMetrics(t *testing.T, opts Options) (*Metrics, *http.ServeMux) {
	t.Helper()
	e := openEngine(t, nil)
	writeReadBack(t, linearMapping(t, e), bytes.Repeat([]byte{1}, 256<<10), 0)
	opts.Engine = e
	m := New(opts)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("/v1/files/", m.Instrument("files", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "file %s\n", r.URL.Path)
	})))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/files/a", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /v1/files/a: %d", rec.Code)
	}
	return m, mux
}

// TestHandlerServesDesignNames scrapes /metrics over HTTP, in the text
// format and in OpenMetrics, and finds every design name in both.
func TestHandlerServesDesignNames(t *testing.T) {
	_, mux := daemonMetrics(t, Options{Version: "v1.2.3"})
	for _, c := range []struct {
		accept, contentType string
	}{
		{"", "text/plain; version=0.0.4"},
		{"application/openmetrics-text; version=1.0.0", "application/openmetrics-text; version=1.0.0"},
	} {
		body, ct := scrape(t, mux, c.accept)
		if !strings.HasPrefix(ct, c.contentType) {
			t.Errorf("Accept %q: content type %q, want %q", c.accept, ct, c.contentType)
		}
		for _, name := range designNames {
			if !hasSample(body, name) {
				t.Errorf("Accept %q: no %s in /metrics", c.accept, name)
			}
		}
		if c.accept != "" && !strings.HasSuffix(body, "# EOF\n") {
			t.Errorf("OpenMetrics body does not end in # EOF")
		}
	}
	body, _ := scrape(t, mux, "")
	fams := parseText(t, body)
	checkHistograms(t, fams, "mpaged_")
	if got := value(t, fams, "mpaged_build_info", "version=v1.2.3", "goversion="+runtime.Version()); got != 1 {
		t.Errorf("build info %g", got)
	}
	if got := value(t, fams, "mpaged_http_requests_total", "handler=files", "method=get", "code=200"); got != 1 {
		t.Errorf("requests to files: %g, want 1", got)
	}
}

// hasSample reports whether the exposition has a sample of the metric name:
// a line of name itself or, for a histogram, its _bucket, _count or _sum.
func hasSample(body, name string) bool {
	for line := range strings.Lines(body) {
		for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
			if rest, ok := strings.CutPrefix(line, name+suffix); ok && (rest[0] == '{' || rest[0] == ' ') {
				return true
			}
		}
	}
	return false
}

// TestPromtoolCheckMetrics runs Prometheus' own linter on the exposition.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testenv.RequireTool(t, "promtool")
	_, mux := daemonMetrics(t, Options{})
	body, _ := scrape(t, mux, "")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestRegistryLint: everything registered passes the client library's
// linter, the Go and process collectors included.
func TestRegistryLint(t *testing.T) {
	m, _ := daemonMetrics(t, Options{})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestBuildInfoBackend: the backend label says "none" or the configured
// backend until an engine is attached, then the engine's backend; the
// engine's metrics come and go with SetEngine.
func TestBuildInfoBackend(t *testing.T) {
	e := openEngine(t, nil)
	backend := e.Snapshot().Backend
	for _, c := range []struct {
		name       string
		opts       Options
		attach     bool
		want       string
		engineSeen bool
	}{
		{"no engine", Options{}, false, "none", false},
		{"configured", Options{Backend: "auto"}, false, "auto", false},
		{"in options", Options{Backend: "auto", Engine: e}, false, backend, true},
		{"attached later", Options{Backend: "auto"}, true, backend, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := New(c.opts)
			if c.attach {
				m.SetEngine(e)
			}
			fams := gather(t, m.Registry())
			if got := value(t, fams, "mpaged_build_info", "backend="+c.want); got != 1 {
				t.Errorf("build info backend %s: %g", c.want, got)
			}
			if _, ok := fams["mpaged_ring_sqes_total"]; ok != c.engineSeen {
				t.Errorf("engine metrics exported: %v, want %v", ok, c.engineSeen)
			}
			m.SetEngine(nil)
			fams = gather(t, m.Registry())
			if _, ok := fams["mpaged_ring_sqes_total"]; ok {
				t.Error("engine metrics exported after SetEngine(nil)")
			}
		})
	}
}

// TestStateGauges: each setter moves its gauge both ways.
func TestStateGauges(t *testing.T) {
	m := New(Options{})
	for _, c := range []struct {
		name string
		set  func(bool)
	}{
		{"mpaged_up", m.SetReady},
		{"mpaged_volume_read_only", m.SetReadOnly},
		{"mpaged_volume_clean", m.SetClean},
	} {
		if got := value(t, gather(t, m.Registry()), c.name); got != 0 {
			t.Errorf("%s starts at %g, want 0", c.name, got)
		}
		for _, v := range []bool{true, false, true} {
			c.set(v)
			if got, want := value(t, gather(t, m.Registry()), c.name), boolValue(v); got != want {
				t.Errorf("%s after set(%v) = %g", c.name, v, got)
			}
		}
	}
}

// failingCollector fails every collection.
type failingCollector struct{ desc *prometheus.Desc }

func (f failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("disk on fire"))
}

// TestHandlerLogsErrors: a failing collector costs its own metrics, not the
// scrape; the error reaches Logf and the handler's error counter.
func TestHandlerLogsErrors(t *testing.T) {
	var l logs
	m := New(Options{Logf: l.Printf})
	m.Registry().MustRegister(failingCollector{prometheus.NewDesc("test_failing", "Fails.", nil, nil)})
	m.SetReady(true)
	body, _ := scrape(t, m.Handler(), "")
	fams := parseText(t, body)
	if got := value(t, fams, "mpaged_up"); got != 1 {
		t.Errorf("mpaged_up %g in a scrape with a failing collector", got)
	}
	if !strings.Contains(l.String(), "disk on fire") {
		t.Errorf("error not logged: %q", l.String())
	}
	// The error counter moves after a scrape: the next one shows it.
	body, _ = scrape(t, m.Handler(), "")
	if got := value(t, parseText(t, body), "promhttp_metric_handler_errors_total", "cause=gathering"); got != 1 {
		t.Errorf("handler gathering errors %g, want 1", got)
	}
}

// TestNewRegistersNothingGlobally: two daemons' registries are separate and
// the default registry gains nothing.
func TestNewRegistersNothingGlobally(t *testing.T) {
	before := gather(t, prometheus.DefaultGatherer)
	a, b := New(Options{}), New(Options{})
	a.SetReady(true)
	if got := value(t, gather(t, b.Registry()), "mpaged_up"); got != 0 {
		t.Errorf("b's mpaged_up %g after a.SetReady(true)", got)
	}
	after := gather(t, prometheus.DefaultGatherer)
	for name := range after {
		if _, ok := before[name]; !ok || strings.HasPrefix(name, "mpaged_") {
			t.Errorf("default registry gained %s", name)
		}
	}
}
