package metrics

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
)

// promhttpInstrument is the chain Instrument replaced: promhttp's
// delegators for response size, duration, count and in-flight, with the
// same vectors and labels.
func promhttpInstrument(h httpMetrics, route string, next http.Handler) http.Handler {
	byRoute := prometheus.Labels{"handler": route}
	methods := promhttp.WithExtraMethods(webDAVMethods...)
	x := promhttp.InstrumentHandlerResponseSize(h.respBytes.MustCurryWith(byRoute), next, methods)
	x = promhttp.InstrumentHandlerDuration(h.duration.MustCurryWith(byRoute), x, methods)
	x = promhttp.InstrumentHandlerCounter(h.requests.MustCurryWith(byRoute), x, methods)
	return promhttp.InstrumentHandlerInFlight(h.inFlight.WithLabelValues(route), x)
}

// httpSeries is the text form of g's mpaged_http series, without what
// differs between two runs of the same requests (sums and duration
// buckets, creation times).
func httpSeries(t *testing.T, g prometheus.Gatherer) string {
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "mpaged_http") {
			continue
		}
		for _, m := range f.Metric {
			if h := m.Histogram; h != nil {
				h.SampleSum = nil
				for _, bk := range h.Bucket {
					if strings.Contains(f.GetName(), "duration") {
						bk.CumulativeCount = nil
					}
				}
				h.CreatedTimestamp = nil
			}
			if c := m.Counter; c != nil {
				c.CreatedTimestamp = nil
			}
		}
		expfmt.MetricFamilyToText(&b, f)
	}
	return b.String()
}

// TestInstrumentMatchesPromhttp: Instrument records exactly the series
// promhttp's chain did for the same requests (statuses set twice or not
// at all, an informational 1xx first, io.Copy bodies, unknown and
// mixed-case methods, WebDAV methods).
func TestInstrumentMatchesPromhttp(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			w.Write([]byte("hello"))
		case "/b":
			w.WriteHeader(103)
			w.WriteHeader(200)
			w.Write([]byte("x"))
		case "/c":
			io.Copy(w, strings.NewReader(strings.Repeat("y", 10000)))
		case "/d":
			w.WriteHeader(500)
			w.WriteHeader(200)
		case "/e":
		}
	})
	reqs := []struct{ m, p string }{{"GET", "/a"}, {"Get", "/a"}, {"PropFind", "/b"}, {"BREW", "/c"}, {"delete", "/d"}, {"HEAD", "/e"}, {"MKCOL", "/c"}}
	regOld := prometheus.NewRegistry()
	hOld := newHTTPMetrics()
	hOld.register(regOld)
	mNew := New(Options{})
	old := promhttpInstrument(hOld, "files", handler)
	nw := mNew.Instrument("files", handler)
	for _, rq := range reqs {
		for _, h := range []http.Handler{old, nw} {
			req := httptest.NewRequest("GET", rq.p, nil)
			req.Method = rq.m
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	a, b := httpSeries(t, regOld), httpSeries(t, mNew.Registry())
	if a != b {
		t.Errorf("series differ:\npromhttp\n%s\nInstrument\n%s", a, b)
	}
}
