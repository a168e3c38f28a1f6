package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// webDAVMethods are counted under their own method label; any other method
// outside the standard ones is "unknown", so the label stays bounded.
var webDAVMethods = []string{"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"}

// httpDurationBuckets span a cached small read (well under a millisecond)
// to a large upload over a slow link.
var httpDurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// httpSizeBuckets: 256 B to 1 GiB by factors of 4.
var httpSizeBuckets = prometheus.ExponentialBuckets(256, 4, 12)

// httpMetrics are the API's request instruments, partitioned by a fixed
// route name.
type httpMetrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	respBytes *prometheus.HistogramVec
	inFlight  *prometheus.GaugeVec
}

func newHTTPMetrics() httpMetrics {
	return httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mpaged_http_requests_total",
			Help: "HTTP requests answered, by route, method and status code."}, []string{"handler", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mpaged_http_request_duration_seconds",
			Help: "Time from a request's arrival to the end of its response, by route and method.", Buckets: httpDurationBuckets},
			[]string{"handler", "method"}),
		respBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mpaged_http_response_size_bytes",
			Help: "Bytes of response bodies written, by route and method.", Buckets: httpSizeBuckets},
			[]string{"handler", "method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mpaged_http_requests_in_flight",
			Help: "HTTP requests being served now, by route."}, []string{"handler"}),
	}
}

func (h httpMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(h.requests, h.duration, h.respBytes, h.inFlight)
}

// Instrument wraps next, counting its requests under route, a fixed name of
// the route (such as "files" or "dav"), never a URL path: every label of
// these metrics has a bounded set of values. Calling it again with the same
// route shares the series. It panics on an empty route (a programming
// error, like a bad regexp in MustCompile).
//
// It records what promhttp's InstrumentHandlerInFlight, Counter, Duration
// and ResponseSize would, with the same labels (the method lower-cased,
// WebDAV's included, any other "unknown"; the code as a number, 200 for
// an answer that never set one; the body bytes written), but looks each
// series up once per route, method and code rather than building label
// maps and three response wrappers per request: on a 4 KiB ranged GET
// those were a fifth of the request's allocations.
func (m *Metrics) Instrument(route string, next http.Handler) http.Handler {
	if route == "" {
		panic("metrics: Instrument needs a route name")
	}
	byRoute := prometheus.Labels{"handler": route}
	ri := &routeInstruments{
		next:      next,
		inFlight:  m.http.inFlight.WithLabelValues(route),
		requests:  m.http.requests.MustCurryWith(byRoute),
		duration:  m.http.duration.MustCurryWith(byRoute),
		respBytes: m.http.respBytes.MustCurryWith(byRoute),
	}
	return ri
}

// methodLabels are the method label's values, in the order of methodIndex.
var methodLabels = [...]string{"get", "put", "head", "post", "delete", "connect", "options", "notify", "trace", "patch",
	"propfind", "proppatch", "mkcol", "copy", "move", "lock", "unlock", "unknown"}

const unknownMethod = len(methodLabels) - 1

// methodIndex is the method label of a request's method as an index into
// methodLabels: promhttp's sanitizeMethod with webDAVMethods as the extra
// methods (the standard ones in upper or lower case, the extra ones in
// any case).
func methodIndex(m string) int {
	for i, l := range methodLabels[:10] {
		if m == l || m == upperMethods[i] {
			return i
		}
	}
	for i, extra := range webDAVMethods {
		if strings.EqualFold(m, extra) {
			return 10 + i
		}
	}
	return unknownMethod
}

var upperMethods = [...]string{"GET", "PUT", "HEAD", "POST", "DELETE", "CONNECT", "OPTIONS", "NOTIFY", "TRACE", "PATCH"}

// routeInstruments are one route's series, looked up on a method's first
// request (series appear when first used, as promhttp's do).
type routeInstruments struct {
	next      http.Handler
	inFlight  prometheus.Gauge
	requests  *prometheus.CounterVec
	duration  prometheus.ObserverVec
	respBytes prometheus.ObserverVec
	mu        sync.Mutex // serializes adding series; readers take none
	methods   [len(methodLabels)]atomic.Pointer[methodSeries]
}

// methodSeries are the series of one route and method. codes only grows,
// copied on write, so a request reads it without a lock.
type methodSeries struct {
	duration, respBytes prometheus.Observer
	codes               atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

func (ri *routeInstruments) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri.inFlight.Inc()
	defer ri.inFlight.Dec()
	mi := methodIndex(r.Method)
	ms := ri.series(mi)
	cw := countingWriter{ResponseWriter: w}
	ri.next.ServeHTTP(&cw, r)
	ri.counter(ms, mi, cw.status).Inc()
	ms.duration.Observe(time.Since(start).Seconds())
	ms.respBytes.Observe(float64(cw.written))
}

func (ri *routeInstruments) series(mi int) *methodSeries {
	if ms := ri.methods[mi].Load(); ms != nil {
		return ms
	}
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if ms := ri.methods[mi].Load(); ms != nil {
		return ms
	}
	ms := &methodSeries{duration: ri.duration.WithLabelValues(methodLabels[mi]), respBytes: ri.respBytes.WithLabelValues(methodLabels[mi])}
	ms.codes.Store(new([]codeCounter))
	ri.methods[mi].Store(ms)
	return ms
}

// counter is the requests counter of ms's method (methodLabels[mi]) and
// a status (0 counts as 200, as promhttp does).
func (ri *routeInstruments) counter(ms *methodSeries, mi, status int) prometheus.Counter {
	if status == 0 {
		status = http.StatusOK
	}
	for _, cc := range *ms.codes.Load() {
		if cc.code == status {
			return cc.c
		}
	}
	ri.mu.Lock()
	defer ri.mu.Unlock()
	old := *ms.codes.Load()
	for _, cc := range old {
		if cc.code == status {
			return cc.c
		}
	}
	c := ri.requests.WithLabelValues(methodLabels[mi], strconv.Itoa(status))
	codes := append(slices.Clip(old), codeCounter{status, c})
	ms.codes.Store(&codes)
	return c
}

// countingWriter records the status and the body bytes of an answer as
// promhttp's delegator does: the last status written (200 if the body
// came first), the bytes Write took.
type countingWriter struct {
	http.ResponseWriter
	status  int
	written int64
}

func (cw *countingWriter) WriteHeader(code int) {
	cw.status = code
	cw.ResponseWriter.WriteHeader(code)
}

func (cw *countingWriter) Write(b []byte) (int, error) {
	if cw.status == 0 {
		cw.WriteHeader(http.StatusOK)
	}
	n, err := cw.ResponseWriter.Write(b)
	cw.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the writer beneath (flushes,
// deadlines, hijacking).
func (cw *countingWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }
