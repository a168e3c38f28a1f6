package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestInstrument serves requests through two instrumented routes and
// checks what each metric counted: the route name (never the URL path) as
// handler, methods (WebDAV's included, others "unknown"), status codes,
// response bytes and requests in flight.
func TestInstrument(t *testing.T) {
	m := New(Options{})
	var inFlightSeen []float64
	api := func(w http.ResponseWriter, r *http.Request) {
		inFlightSeen = append(inFlightSeen, testutil.ToFloat64(m.http.inFlight.WithLabelValues("files")))
		switch r.Method {
		case http.MethodPut:
			w.WriteHeader(http.StatusCreated)
		case "PROPFIND":
			w.WriteHeader(http.StatusMultiStatus)
		case "BREW":
			w.WriteHeader(http.StatusTeapot)
		}
		io.WriteString(w, strings.Repeat("x", len(r.URL.Path)))
	}
	files := m.Instrument("files", http.HandlerFunc(api))
	dav := m.Instrument("dav", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	}))
	for _, r := range []struct {
		h            http.Handler
		method, path string
	}{
		{files, "GET", "/v1/files/a"},
		{files, "GET", "/v1/files/bb/ccc"},
		{files, "PUT", "/v1/files/d"},
		{files, "PROPFIND", "/dav/e"},
		{files, "BREW", "/coffee"},
		{dav, "GET", "/dav/missing"},
	} {
		r.h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(r.method, r.path, nil))
	}

	fams := gather(t, m.Registry())
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"handler=files", "method=get", "code=200"}, 2},
		{[]string{"handler=files", "method=put", "code=201"}, 1},
		{[]string{"handler=files", "method=propfind", "code=207"}, 1},
		{[]string{"handler=files", "method=unknown", "code=418"}, 1},
		{[]string{"handler=dav", "method=get", "code=404"}, 1},
	} {
		if got := value(t, fams, "mpaged_http_requests_total", c.labels...); got != c.want {
			t.Errorf("requests%v = %g, want %g", c.labels, got, c.want)
		}
	}
	if n := len(fams["mpaged_http_requests_total"].GetMetric()); n != 5 {
		t.Errorf("%d request series, want 5 (one per route, method and code)", n)
	}
	for _, c := range []struct {
		labels []string
		count  uint64
		bytes  float64
	}{
		{[]string{"handler=files", "method=get"}, 2, float64(len("/v1/files/a") + len("/v1/files/bb/ccc"))},
		{[]string{"handler=files", "method=put"}, 1, float64(len("/v1/files/d"))},
		{[]string{"handler=dav", "method=get"}, 1, float64(len("not found\n"))},
	} {
		if h := find(t, fams, "mpaged_http_request_duration_seconds", c.labels...).GetHistogram(); h.GetSampleCount() != c.count || h.GetSampleSum() <= 0 {
			t.Errorf("duration%v: count %d sum %g, want %d and > 0", c.labels, h.GetSampleCount(), h.GetSampleSum(), c.count)
		}
		if h := find(t, fams, "mpaged_http_response_size_bytes", c.labels...).GetHistogram(); h.GetSampleCount() != c.count || h.GetSampleSum() != c.bytes {
			t.Errorf("response size%v: count %d sum %g, want %d and %g", c.labels, h.GetSampleCount(), h.GetSampleSum(), c.count, c.bytes)
		}
	}
	checkHistograms(t, fams, "mpaged_http_")
	for i, v := range inFlightSeen {
		if v != 1 {
			t.Errorf("request %d saw %g in flight, want 1", i, v)
		}
	}
	for _, route := range []string{"files", "dav"} {
		if got := value(t, fams, "mpaged_http_requests_in_flight", "handler="+route); got != 0 {
			t.Errorf("%s in flight after the requests: %g", route, got)
		}
	}
}

func TestInstrumentNeedsRoute(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Instrument with no route name did not panic")
		}
	}()
	New(Options{}).Instrument("", http.NotFoundHandler())
}

// TestMethodLabel: the method label is promhttp's: standard methods in
// upper or lower case, WebDAV's in any case, anything else "unknown".
func TestMethodLabel(t *testing.T) {
	for _, tc := range []struct{ method, label string }{
		{"GET", "get"}, {"get", "get"}, {"Get", "unknown"}, {"PATCH", "patch"}, {"NOTIFY", "notify"},
		{"PROPFIND", "propfind"}, {"PropFind", "propfind"}, {"unlock", "unlock"}, {"BREW", "unknown"}, {"", "unknown"},
	} {
		if got := methodLabels[methodIndex(tc.method)]; got != tc.label {
			t.Errorf("%q: label %q, want %q", tc.method, got, tc.label)
		}
	}
}

// nopWriter is a ResponseWriter that keeps nothing.
type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header         { return w.h }
func (w nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w nopWriter) WriteHeader(int)             {}

// TestInstrumentAllocs: once a route, method and code have been seen, a
// request costs the middleware one allocation (its response writer), and
// the series still count it.
func TestInstrumentAllocs(t *testing.T) {
	m := New(Options{})
	body := make([]byte, 4096)
	h := m.Instrument("files", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body)
	}))
	req := httptest.NewRequest(http.MethodGet, "/v1/files/f", nil)
	w := nopWriter{h: http.Header{}}
	const runs = 100
	allocs := testing.AllocsPerRun(runs, func() { h.ServeHTTP(w, req) })
	if allocs > 1 {
		t.Errorf("%v allocations per instrumented request, want at most 1", allocs)
	}
	fams := gather(t, m.Registry())
	if got := value(t, fams, "mpaged_http_requests_total", "handler=files", "method=get", "code=206"); got != runs+1 {
		t.Errorf("%g requests counted, want %d", got, runs+1)
	}
	if h := find(t, fams, "mpaged_http_response_size_bytes", "handler=files", "method=get").GetHistogram(); h.GetSampleSum() != 4096*(runs+1) {
		t.Errorf("response bytes %g, want %d", h.GetSampleSum(), 4096*(runs+1))
	}
}
