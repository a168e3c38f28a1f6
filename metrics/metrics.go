package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure New. The zero value is usable.
type Options struct {
	// Version is the daemon's version for mpaged_build_info; empty takes
	// the main module's version from the build, or "unknown".
	Version string
	// Backend is the ring backend for mpaged_build_info while no engine is
	// attached (the configured one, "auto" for the default); once an
	// engine is attached, the backend it really runs on is reported.
	// Empty means "none".
	Backend string
	// Engine, if set, is attached at once (see SetEngine).
	Engine EngineSource
	// Logf receives errors met while gathering or serving metrics. Nil
	// drops them.
	Logf func(format string, args ...any)
}

// Metrics is the daemon's registry and the instruments it sets from
// outside: the engine collector, the HTTP middleware and the state gauges.
type Metrics struct {
	reg     *prometheus.Registry
	engine  *engineCollector
	handler http.Handler
	http    httpMetrics

	ready    prometheus.Gauge
	readOnly prometheus.Gauge
	clean    prometheus.Gauge
}

// New builds a registry with the Go and process collectors, the build-info
// gauge, the engine collector (exporting nothing until an engine is
// attached), the HTTP instruments and the state gauges.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), engine: new(engineCollector)}
	m.engine.set(opts.Engine)
	m.ready = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mpaged_up",
		Help: "1 while the daemon is ready: its volume open and its API serving; 0 while it starts or drains."})
	m.readOnly = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mpaged_volume_read_only",
		Help: "1 when the volume is served read-only."})
	m.clean = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mpaged_volume_clean",
		Help: "1 when the file system was found clean (no recorded errors, cleanly unmounted) when it was opened."})
	m.http = newHTTPMetrics()
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo(opts, m.engine),
		m.engine,
		m.ready, m.readOnly, m.clean,
	)
	m.http.register(m.reg)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: logfLogger(opts.Logf),
		// A collector that fails costs its own metrics, not the scrape.
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          m.reg,
		EnableOpenMetrics: true,
	})
	return m
}

// Handler serves the registry (GET /metrics): the text format, or
// OpenMetrics when the scraper asks for it, compressed when it accepts
// that. Errors are logged through Options.Logf and counted in
// promhttp_metric_handler_errors_total.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry is the registry behind Handler, for collectors the caller adds.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetEngine attaches the engine whose counters are exported, replacing any
// before it; nil detaches it (its metrics disappear from the next scrape).
func (m *Metrics) SetEngine(src EngineSource) { m.engine.set(src) }

// SetReady sets mpaged_up.
func (m *Metrics) SetReady(ready bool) { m.ready.Set(boolValue(ready)) }

// SetReadOnly sets mpaged_volume_read_only.
func (m *Metrics) SetReadOnly(readOnly bool) { m.readOnly.Set(boolValue(readOnly)) }

// SetClean sets mpaged_volume_clean.
func (m *Metrics) SetClean(clean bool) { m.clean.Set(boolValue(clean)) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// logfLogger adapts Options.Logf to promhttp's Logger.
type logfLogger func(format string, args ...any)

func (l logfLogger) Println(v ...any) {
	if l != nil {
		l("metrics: %s", fmt.Sprint(v...))
	}
}

// buildInfo exports mpaged_build_info. The backend label follows the
// attached engine, so it is read at scrape time.
type buildInfo struct {
	desc             *prometheus.Desc
	version, backend string
	engine           *engineCollector
}

func newBuildInfo(opts Options, e *engineCollector) *buildInfo {
	version := opts.Version
	if version == "" {
		version = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			version = bi.Main.Version
		}
	}
	backend := opts.Backend
	if backend == "" {
		backend = "none"
	}
	return &buildInfo{
		desc: prometheus.NewDesc("mpaged_build_info",
			"The daemon's version, the Go version it was built with and its ring backend; always 1.",
			[]string{"version", "goversion", "backend"}, nil),
		version: version, backend: backend, engine: e,
	}
}

func (b *buildInfo) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *buildInfo) Collect(ch chan<- prometheus.Metric) {
	backend := b.backend
	if box := b.engine.src.Load(); box != nil && box.backend != "" {
		backend = box.backend
	}
	ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, 1, b.version, runtime.Version(), backend)
}
