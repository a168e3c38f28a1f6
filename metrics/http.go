package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
func (m *Metrics) Instrument(route string, next http.Handler) http.Handler {
	if route == "" {
		panic("metrics: Instrument needs a route name")
	}
	byRoute := prometheus.Labels{"handler": route}
	methods := promhttp.WithExtraMethods(webDAVMethods...)
	h := promhttp.InstrumentHandlerResponseSize(m.http.respBytes.MustCurryWith(byRoute), next, methods)
	h = promhttp.InstrumentHandlerDuration(m.http.duration.MustCurryWith(byRoute), h, methods)
	h = promhttp.InstrumentHandlerCounter(m.http.requests.MustCurryWith(byRoute), h, methods)
	return promhttp.InstrumentHandlerInFlight(m.http.inFlight.WithLabelValues(route), h)
}
