package metrics

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// imageBytes is the size of the test volumes.
const imageBytes = 8 << 20

// openEngine assembles an engine, latency timing on, over a new sparse
// image; wrap (may be nil) wraps its ring. It is closed when the test
// ends, after the mappings made on it.
func openEngine(t testing.TB, wrap func(uring.Ring) uring.Ring) *engine.Engine {
	t.Helper()
	e, err := engine.Open(engine.Config{Path: testenv.SparseFile(t, imageBytes), Write: true,
		CacheBytes: 2 << 20, Timing: true, WrapRing: wrap})
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	return e
}

// newMapping maps a file of size bytes on e through mapper. It is closed
// when the test ends, before the engine.
func newMapping(t testing.TB, e *engine.Engine, mapper mpage.BlockMapper, blockSize int, size int64) *mpage.Mapping {
	t.Helper()
	m, err := mpage.NewMapping(mpage.MappingConfig{Device: e.Device, Cache: e.Cache, Mapper: mapper,
		BlockSize: blockSize, Size: size, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close mapping: %v", err)
		}
	})
	return m
}

// linearMapping maps the whole image in 4 KiB blocks.
func linearMapping(t testing.TB, e *engine.Engine) *mpage.Mapping {
	return newMapping(t, e, mpage.LinearMapper{Blocks: imageBytes / 4096}, 4096, imageBytes)
}

// writeReadBack writes data at off, writes it back to the device, drops the
// mapping's pages and reads the data back from the device.
func writeReadBack(t testing.TB, m *mpage.Mapping, data []byte, off int64) {
	t.Helper()
	if _, err := m.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAndWait(0, m.Size()-1); err != nil {
		t.Fatal(err)
	}
	size := m.Size()
	if err := m.Truncate(0); err != nil { // drops every cached page
		t.Fatal(err)
	}
	m.SetSize(size)
	got := make([]byte, len(data))
	if _, err := m.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back at %d: %v, equal %v", off, err, bytes.Equal(got, data))
	}
}

// settle waits until e has no request in flight and no Bio out: a read
// returns once its own pages are uptodate, while readahead it started may
// still be reading, and a Bio goes back to its set only after the pages it
// ended woke their readers. Tests that compare counters with a snapshot,
// or expect nothing in use, settle first.
func settle(t testing.TB, e *engine.Engine) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := e.Snapshot()
		if s.Ring.InFlight == 0 && s.Bios.InUse == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not settle: %d requests in flight, %d Bios out", s.Ring.InFlight, s.Bios.InUse)
		}
		time.Sleep(time.Millisecond)
	}
}

// families are gathered metric families by name.
type families = map[string]*dto.MetricFamily

// gather collects g into families by name.
func gather(t testing.TB, g prometheus.Gatherer) families {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(families, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// find returns the metric of family name whose labels include every
// "name=value" pair of want, failing t unless there is exactly one.
func find(t testing.TB, fams families, name string, want ...string) *dto.Metric {
	t.Helper()
	mf, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
	var hits []*dto.Metric
	for _, m := range mf.GetMetric() {
		if hasLabels(m, want) {
			hits = append(hits, m)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("%s%v: %d metrics match", name, want, len(hits))
	}
	return hits[0]
}

func hasLabels(m *dto.Metric, want []string) bool {
	have := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		have = append(have, l.GetName()+"="+l.GetValue())
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// value is the value of a counter or gauge found as find finds it.
func value(t testing.TB, fams families, name string, want ...string) float64 {
	t.Helper()
	m := find(t, fams, name, want...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, want)
	return 0
}

// checkHistograms checks every histogram of the families whose name starts
// with prefix: buckets in increasing bound order, cumulative counts never
// decreasing and never above the sample count.
func checkHistograms(t testing.TB, fams families, prefix string) {
	t.Helper()
	for name, mf := range fams {
		if mf.GetType() != dto.MetricType_HISTOGRAM || !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			var bound float64
			var cum uint64
			for i, b := range h.GetBucket() {
				if i > 0 && b.GetUpperBound() <= bound {
					t.Errorf("%s %v: bucket %d bound %g not above %g", name, m.GetLabel(), i, b.GetUpperBound(), bound)
				}
				if b.GetCumulativeCount() < cum || b.GetCumulativeCount() > h.GetSampleCount() {
					t.Errorf("%s %v: bucket le=%g count %d after %d, sample count %d", name, m.GetLabel(),
						b.GetUpperBound(), b.GetCumulativeCount(), cum, h.GetSampleCount())
				}
				bound, cum = b.GetUpperBound(), b.GetCumulativeCount()
			}
		}
	}
}

// scrape GETs h's /metrics with the Accept header given and returns the
// body and its content type.
func scrape(t testing.TB, h http.Handler, accept string) (string, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v\n%s", resp.Status, err, body)
	}
	return string(body), resp.Header.Get("Content-Type")
}

// parseText parses the text exposition format.
func parseText(t testing.TB, body string) families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}
