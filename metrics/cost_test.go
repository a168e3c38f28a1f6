package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/mpage"
)

// ioCycle returns one round of real device I/O on m: 64 KiB written back,
// then 64 KiB elsewhere dropped from the cache and read from the device.
func ioCycle(t testing.TB, m *mpage.Mapping) func() {
	wbuf, rbuf := make([]byte, 64<<10), make([]byte, 64<<10)
	const woff, roff = 1 << 20, 4 << 20
	return func() {
		if _, err := m.WriteAt(wbuf, woff); err != nil {
			t.Fatal(err)
		}
		if err := m.WriteAndWait(woff, woff+int64(len(wbuf))-1); err != nil {
			t.Fatal(err)
		}
		if err := m.Truncate(2 << 20); err != nil { // drops the pages at roff
			t.Fatal(err)
		}
		m.SetSize(imageBytes)
		if _, err := m.ReadAt(rbuf, roff); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIOPathAllocsUnchanged: registering the engine collector and scraping
// it adds no allocation to the I/O path, because nothing on that path
// calls into this package.
func TestIOPathAllocsUnchanged(t *testing.T) {
	e := openEngine(t, nil)
	cycle := ioCycle(t, linearMapping(t, e))
	const runs = 100
	before := e.Snapshot().Ring
	bare := testing.AllocsPerRun(runs, cycle)

	m := New(Options{Engine: e})
	if n := testutil.CollectAndCount(m.engine); n == 0 {
		t.Fatal("engine collector collected nothing")
	}
	scrape(t, m.Handler(), "")
	scraped := testing.AllocsPerRun(runs, cycle)
	scrape(t, m.Handler(), "")

	t.Logf("allocs per I/O cycle: %v without the collector, %v with it", bare, scraped)
	if scraped > bare {
		t.Errorf("I/O allocates %v per cycle with the collector registered, %v without", scraped, bare)
	}
	// Every cycle reached the device both ways (AllocsPerRun runs once more
	// to warm up).
	after := e.Snapshot().Ring
	if w, r := after.BytesWrite-before.BytesWrite, after.BytesRead-before.BytesRead; w < 2*runs*64<<10 || r < 2*runs*64<<10 {
		t.Errorf("%d cycles moved %d bytes written and %d read: not real I/O", 2*runs, w, r)
	}
}

// benchEngine is an engine whose counters and histograms have data in
// them.
func benchEngine(b *testing.B) *engine.Engine {
	e := openEngine(b, nil)
	cycle := ioCycle(b, linearMapping(b, e))
	cycle()
	return e
}

// BenchmarkEngineCollect is the engine collector's cost per scrape: one
// Snapshot and a constant metric per series (73 in all when written).
func BenchmarkEngineCollect(b *testing.B) {
	c := NewEngineCollector(benchEngine(b))
	reg := registryOf(c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScrape is a whole GET /metrics: every collector, encoded in the
// text format, uncompressed.
func BenchmarkScrape(b *testing.B) {
	h := New(Options{Engine: benchEngine(b)}).Handler()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET /metrics: %d", rec.Code)
		}
	}
}
