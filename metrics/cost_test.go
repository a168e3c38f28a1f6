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
func ioCycle(m *mpage.Mapping) func() error {
	wbuf, rbuf := make([]byte, 64<<10), make([]byte, 64<<10)
	const woff, roff = 1 << 20, 4 << 20
	return func() error {
		if _, err := m.WriteAt(wbuf, woff); err != nil {
			return err
		}
		if err := m.WriteAndWait(woff, woff+int64(len(wbuf))-1); err != nil {
			return err
		}
		if err := m.Truncate(2 << 20); err != nil { // drops the pages at roff
			return err
		}
		m.SetSize(imageBytes)
		_, err := m.ReadAt(rbuf, roff)
		return err
	}
}

// mustCycle is ioCycle failing t, for the test's own goroutine.
func mustCycle(t testing.TB, m *mpage.Mapping) func() {
	cycle := ioCycle(m)
	return func() {
		if err := cycle(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIOPathAllocsUnchanged: registering the engine collector and scraping
// it adds no allocation to the I/O path, because nothing on that path
// calls into this package.
func TestIOPathAllocsUnchanged(t *testing.T) {
	e := openEngine(t, nil)
	cycle := mustCycle(t, linearMapping(t, e))
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
	mustCycle(b, linearMapping(b, e))()
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

// TestScrapeDuringIO scrapes while another goroutine does device I/O (run
// with -race): every scrape parses, its histograms stay cumulative, and
// counters never go backwards between scrapes.
func TestScrapeDuringIO(t *testing.T) {
	e := openEngine(t, nil)
	cycle := ioCycle(linearMapping(t, e))
	m := New(Options{Engine: e})
	const cycles = 50
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < cycles && err == nil; i++ {
			err = cycle()
		}
		done <- err
	}()
	var lastSQEs, lastBytes float64
	for scrapes := 0; ; scrapes++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("I/O: %v", err)
			}
			if scrapes == 0 {
				t.Log("the I/O ended before the first scrape")
			}
			fams := gather(t, m.Registry())
			if got := value(t, fams, "mpaged_ring_bytes_total", "op=write"); got < cycles*64<<10 {
				t.Errorf("%g bytes written after %d cycles of 64 KiB", got, cycles)
			}
			return
		default:
		}
		body, _ := scrape(t, m.Handler(), "")
		fams := parseText(t, body)
		checkHistograms(t, fams, "mpaged_")
		sqes, written := value(t, fams, "mpaged_ring_sqes_total"), value(t, fams, "mpaged_ring_bytes_total", "op=write")
		if sqes < lastSQEs || written < lastBytes {
			t.Fatalf("scrape %d: SQEs %g after %g, bytes written %g after %g", scrapes, sqes, lastSQEs, written, lastBytes)
		}
		lastSQEs, lastBytes = sqes, written
	}
}
