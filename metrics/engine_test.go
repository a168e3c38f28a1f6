package metrics

import (
	"bytes"
	"errors"
	"math"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// registryOf registers c alone.
func registryOf(c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg
}

// TestEngineMetricsAfterIO writes 512 KiB through a linear mapping, reads it
// back from the device and checks what the collector reports against what
// that I/O must have done and against the engine's own snapshot.
func TestEngineMetricsAfterIO(t *testing.T) {
	e := openEngine(t, nil)
	m := linearMapping(t, e)
	const n = 512 << 10
	writeReadBack(t, m, bytes.Repeat([]byte("metrics\n"), n/8), 1<<20)
	// Reads more than was written, so an op label swapped shows.
	if _, err := m.ReadAt(make([]byte, 64<<10), 4<<20); err != nil {
		t.Fatal(err)
	}
	settle(t, e)
	s := e.Snapshot()
	if s.Ring.BytesRead <= s.Ring.BytesWrite {
		t.Fatalf("ring read %d bytes, wrote %d: want more read", s.Ring.BytesRead, s.Ring.BytesWrite)
	}
	fams := gather(t, registryOf(NewEngineCollector(e)))

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		// Every dirty page went out in multipage Bios, exactly once.
		{"mpaged_bio_bytes_total", []string{"op=write"}, n},
		{"mpaged_ring_bytes_total", []string{"op=write"}, n},
		// A linear map never confuses a page.
		{"mpaged_block_ios_total", []string{"op=read"}, 0},
		{"mpaged_block_ios_total", []string{"op=write"}, 0},
		{"mpaged_confused_pages_total", []string{"op=read", "reason=discontiguous"}, 0},
		{"mpaged_writeback_errors_total", []string{"errno=EIO"}, 0},
		{"mpaged_io_errors_total", []string{"op=write"}, 0},
		// Nothing is left dirty or in flight.
		{"mpaged_pagecache_pages", []string{"state=dirty"}, 0},
		{"mpaged_pagecache_pages", []string{"state=writeback"}, 0},
		{"mpaged_ring_inflight", nil, 0},
		{"mpaged_alloc_inuse_bytes", nil, 0},
		{"mpaged_volume_size_bytes", nil, imageBytes},
		{"mpaged_engine_info", []string{"backend=" + s.Backend, "direct=true"}, 1},
		// The rest as the snapshot has them.
		{"mpaged_bios_submitted_total", []string{"op=read"}, float64(s.Engine.Bios[mpage.Read])},
		{"mpaged_bios_submitted_total", []string{"op=write"}, float64(s.Engine.Bios[mpage.Write])},
		{"mpaged_bio_bytes_total", []string{"op=read"}, float64(s.Engine.BioBytes[mpage.Read])},
		{"mpaged_ring_bytes_total", []string{"op=read"}, float64(s.Ring.BytesRead)},
		{"mpaged_map_calls_total", []string{"op=write"}, float64(s.Engine.MapCalls[mpage.Write])},
		{"mpaged_pagecache_misses_total", nil, float64(s.Engine.CacheMisses)},
		{"mpaged_readahead_pages_total", nil, float64(s.Engine.ReadaheadPages)},
		{"mpaged_ring_sqes_total", nil, float64(s.Ring.SQEs)},
		{"mpaged_ring_enter_total", nil, float64(s.Ring.Enters)},
		{"mpaged_ring_completions_total", nil, float64(s.Ring.Completed)},
		{"mpaged_frames_mapped_bytes", nil, float64(s.Frames.Frames * 4096)},
		{"mpaged_alloc_bios_total", nil, float64(s.Bios.Allocs)},
		{"mpaged_pagecache_limit_pages", nil, 2 << 20 / 4096},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"mpaged_bios_submitted_total", []string{"op=write"}},
		{"mpaged_bios_submitted_total", []string{"op=read"}},
		{"mpaged_bio_bytes_total", []string{"op=read"}},
		{"mpaged_pagecache_misses_total", nil},
		{"mpaged_ring_sqes_total", nil},
		{"mpaged_frames_mapped_bytes", nil},
	} {
		if got := value(t, fams, c.name, c.labels...); got <= 0 {
			t.Errorf("%s%v = %g after I/O", c.name, c.labels, got)
		}
	}
	checkHistograms(t, fams, "mpaged_")
	checkBioPages(t, fams, n/mpage.PageSize, s.Engine.Bios)
	checkLatency(t, fams, s.Ring)
}

// checkBioPages: the pages-per-Bio histograms count every Bio, all of them
// within the last bound, and their write sum is every page written.
func checkBioPages(t *testing.T, fams families, pagesWritten int, bios [2]uint64) {
	t.Helper()
	for d, op := range []string{"read", "write"} {
		h := find(t, fams, "mpaged_bio_pages", "op="+op).GetHistogram()
		b := h.GetBucket()
		if len(b) != len(mpage.PagesPerBioBuckets) || b[len(b)-1].GetUpperBound() != 256 || b[0].GetUpperBound() != 1 {
			t.Fatalf("bio_pages{%s} buckets %v", op, b)
		}
		if h.GetSampleCount() != bios[d] || b[len(b)-1].GetCumulativeCount() != bios[d] {
			t.Errorf("bio_pages{%s}: count %d, last bucket %d, want %d Bios", op, h.GetSampleCount(), b[len(b)-1].GetCumulativeCount(), bios[d])
		}
	}
	if got := find(t, fams, "mpaged_bio_pages", "op=write").GetHistogram().GetSampleSum(); got != float64(pagesWritten) {
		t.Errorf("bio_pages{write} sum %g, want %d pages", got, pagesWritten)
	}
}

// checkLatency: with timing on every completion is in exactly one op
// class, reads and writes both happened, and the sums are the ring's.
func checkLatency(t *testing.T, fams families, rs uring.Stats) {
	t.Helper()
	var total uint64
	for op, name := range uring.LatencyOpNames {
		h := find(t, fams, "mpaged_io_latency_seconds", "op="+name).GetHistogram()
		if got := len(h.GetBucket()); got != uring.LatencyBuckets {
			t.Errorf("latency{%s}: %d buckets, want %d", name, got, uring.LatencyBuckets)
		}
		if h.GetSampleCount() != rs.Latency[op].Count() || math.Abs(h.GetSampleSum()-rs.Latency[op].Sum.Seconds()) > 1e-9 {
			t.Errorf("latency{%s}: count %d sum %g, ring has %d and %v", name, h.GetSampleCount(), h.GetSampleSum(),
				rs.Latency[op].Count(), rs.Latency[op].Sum)
		}
		if op != uring.LatencyOther && (h.GetSampleCount() == 0 || h.GetSampleSum() <= 0) {
			t.Errorf("latency{%s}: nothing observed after I/O", name)
		}
		total += h.GetSampleCount()
	}
	if total != rs.Completed {
		t.Errorf("latency counts add up to %d, ring completed %d", total, rs.Completed)
	}
}

// TestFallbackAndErrorMetrics drives the per-block path and failed writes
// through a real engine and checks the labeled counters that count them.
func TestFallbackAndErrorMetrics(t *testing.T) {
	var fr *faultring.Ring
	e := openEngine(t, func(r uring.Ring) uring.Ring { fr = faultring.New(r, 1); return fr })

	// Page 1's four 1 KiB blocks are in three places on the device: the
	// page is confused and read block by block.
	mapper, err := mpagetest.NewScriptedMapper("map 0-3 at 1000\nmap 4-5 at 2000\nmap 6-7 at 3000\n")
	if err != nil {
		t.Fatal(err)
	}
	confused := newMapping(t, e, mapper, 1024, 2*mpage.PageSize)
	if _, err := confused.ReadAt(make([]byte, 2*mpage.PageSize), 0); err != nil {
		t.Fatal(err)
	}

	// One failed write per errno class, each retried by the next writeback.
	linear := linearMapping(t, e)
	for i, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC, syscall.EDQUOT} {
		off := int64(i) * mpage.PageSize
		if _, err := linear.WriteAt(bytes.Repeat([]byte{byte(i)}, mpage.PageSize), off); err != nil {
			t.Fatal(err)
		}
		fr.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Count: 1, Fault: faultring.Fault{Errno: errno}})
		if err := linear.WriteAndWait(off, off+mpage.PageSize-1); !errors.Is(err, errno) {
			t.Fatalf("writeback with %v injected: %v", errno, err)
		}
		if err := linear.WriteAndWait(off, off+mpage.PageSize-1); err != nil {
			t.Fatalf("retry after %v: %v", errno, err)
		}
	}

	fams := gather(t, registryOf(NewEngineCollector(e)))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mpaged_confused_pages_total", []string{"op=read", "reason=discontiguous"}, 1},
		{"mpaged_confused_pages_total", []string{"op=read", "reason=hole"}, 0},
		{"mpaged_confused_pages_total", []string{"op=write", "reason=discontiguous"}, 0},
		{"mpaged_block_ios_total", []string{"op=read"}, 4},
		{"mpaged_bios_submitted_total", []string{"op=read"}, 1}, // page 0, one Bio
		{"mpaged_writeback_errors_total", []string{"errno=EIO"}, 1},
		{"mpaged_writeback_errors_total", []string{"errno=ENOSPC"}, 2}, // EDQUOT counts as ENOSPC
		{"mpaged_write_retries_total", nil, 3},
		{"mpaged_io_errors_total", []string{"op=write"}, 3},
		{"mpaged_io_errors_total", []string{"op=read"}, 0},
		{"mpaged_pagecache_pages", []string{"state=dirty"}, 0},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if n := len(fams["mpaged_confused_pages_total"].GetMetric()); n != 2*mpage.NumReasons {
		t.Errorf("confused pages: %d series, want one per op and reason (%d)", n, 2*mpage.NumReasons)
	}
}

// TestEngineCollectorLint: the collector's names, types, units and help
// pass the client library's linter.
func TestEngineCollectorLint(t *testing.T) {
	e := openEngine(t, nil)
	writeReadBack(t, linearMapping(t, e), bytes.Repeat([]byte{7}, 64<<10), 0)
	problems, err := testutil.CollectAndLint(NewEngineCollector(e))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(NewEngineCollector(e)); n < len(engineTable) {
		t.Errorf("collected %d metrics from %d table rows", n, len(engineTable))
	}
}

// TestEngineCollectorDescribesWhatItCollects: every metric collected has a
// descriptor in the table (a registry rejects undescribed metrics), and no
// two rows share a name.
func TestEngineCollectorDescribesWhatItCollects(t *testing.T) {
	e := openEngine(t, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewEngineCollector(e))
	fams := gather(t, reg)
	if len(fams) != len(engineTable) {
		t.Errorf("%d families from %d table rows", len(fams), len(engineTable))
	}
	names := map[string]bool{}
	for _, row := range engineTable {
		n := row.desc.String()
		if names[n] {
			t.Errorf("descriptor twice: %s", n)
		}
		names[n] = true
	}
}

// TestEngineCollectorWithoutSource exports nothing rather than zeros.
func TestEngineCollectorWithoutSource(t *testing.T) {
	if n := testutil.CollectAndCount(NewEngineCollector(nil)); n != 0 {
		t.Errorf("%d metrics without an engine", n)
	}
}
