package metrics

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// EngineSource is what the engine collector reads: *engine.Engine, or
// anything else that can produce its counters. Snapshot is called once per
// scrape, from the scraping goroutine, and must not wait on I/O.
type EngineSource interface {
	Snapshot() engine.Snapshot
}

// engineCollector exports an engine's counters, read from one Snapshot per
// scrape: nothing on the I/O path knows it exists. The source can be
// attached, swapped or detached at any time; with none it exports nothing.
type engineCollector struct {
	src atomic.Pointer[sourceBox]
}

// sourceBox holds an interface value behind an atomic pointer, and the
// engine's ring backend, which is fixed for its life (read at attach time so
// that mpaged_build_info costs no snapshot).
type sourceBox struct {
	EngineSource
	backend string
}

// NewEngineCollector returns a collector of src's counters, for a registry
// other than the one Metrics keeps (a benchmark harness, a test). src may be
// nil.
func NewEngineCollector(src EngineSource) prometheus.Collector {
	c := new(engineCollector)
	c.set(src)
	return c
}

func (c *engineCollector) set(src EngineSource) {
	if src == nil {
		c.src.Store(nil)
		return
	}
	c.src.Store(&sourceBox{src, src.Snapshot().Backend})
}

// Describe sends every descriptor of the table, so the registry checks the
// names and label sets once, at registration.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range engineTable {
		ch <- m.desc
	}
}

// Collect takes one snapshot and turns it into metrics.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	box := c.src.Load()
	if box == nil {
		return
	}
	s := box.Snapshot()
	for _, m := range engineTable {
		m.collect(ch, m.desc, &s)
	}
}

// engineMetric is one row of the table: a descriptor and how to turn a
// snapshot into its samples.
type engineMetric struct {
	desc    *prometheus.Desc
	collect func(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot)
}

// number is any counter type the engine's stats structs use.
type number interface {
	~uint64 | ~int64 | ~int
}

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// scalar is a metric without labels.
func scalar[T number](vt prometheus.ValueType, name, help string, get func(*engine.Snapshot) T) engineMetric {
	return engineMetric{
		desc: prometheus.NewDesc(name, help, nil, nil),
		collect: func(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
			ch <- prometheus.MustNewConstMetric(d, vt, float64(get(s)))
		},
	}
}

// byOp is a metric with an op label ("read", "write") over a pair indexed
// by mpage.Dir.
func byOp[T number](vt prometheus.ValueType, name, help string, get func(*engine.Snapshot) [2]T) engineMetric {
	return engineMetric{
		desc: prometheus.NewDesc(name, help, []string{"op"}, nil),
		collect: func(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
			v := get(s)
			for dir := range v {
				ch <- prometheus.MustNewConstMetric(d, vt, float64(v[dir]), mpage.Dir(dir).String())
			}
		},
	}
}

// labeled is a metric whose samples collect sends itself.
func labeled(name, help string, labels []string, collect func(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot)) engineMetric {
	return engineMetric{desc: prometheus.NewDesc(name, help, labels, nil), collect: collect}
}

// engineTable is everything the engine collector exports. A new counter in
// mpage.Stats (and so in engine.Snapshot) is one more scalar or byOp line.
// Names follow Prometheus conventions: base units (bytes, seconds),
// counters end in _total, and every label has a fixed, small set of values.
var engineTable = []engineMetric{
	// Multipage I/O (mpage.Stats).
	byOp(counter, "mpaged_bios_submitted_total", "Multipage Bios submitted to the ring, one vectored request each, by op.",
		func(s *engine.Snapshot) [2]uint64 { return s.Engine.Bios }),
	labeled("mpaged_bio_pages", "Pages per multipage Bio, by op; the sum is all pages sent in multipage Bios.", []string{"op"}, collectBioPages),
	byOp(counter, "mpaged_bio_bytes_total", "Bytes moved by multipage Bios, counted at completion, by op.",
		func(s *engine.Snapshot) [2]uint64 { return s.Engine.BioBytes }),
	byOp(counter, "mpaged_block_ios_total", "Per-block I/Os issued for confused pages by the fallback path, by op.",
		func(s *engine.Snapshot) [2]uint64 { return s.Engine.BlockIOs }),
	byOp(counter, "mpaged_io_errors_total", "Failed I/Os, multipage Bios and per-block I/Os alike, by op.",
		func(s *engine.Snapshot) [2]uint64 { return s.Engine.Errors }),
	byOp(counter, "mpaged_map_calls_total", "Calls into the file system's block mapper, by op.",
		func(s *engine.Snapshot) [2]uint64 { return s.Engine.MapCalls }),
	labeled("mpaged_confused_pages_total", "Pages that could not join a multipage Bio and took the per-block path, by op and reason.",
		[]string{"op", "reason"}, collectConfused),
	scalar(counter, "mpaged_hole_pages_total", "Read pages zero-filled without I/O because all their blocks are holes.",
		func(s *engine.Snapshot) uint64 { return s.Engine.HolePages }),
	scalar(counter, "mpaged_readahead_pages_total", "Pages whose read readahead started ahead of the reader.",
		func(s *engine.Snapshot) uint64 { return s.Engine.ReadaheadPages }),
	scalar(counter, "mpaged_write_retries_total", "Pages dirtied again after a failed write, for the next writeback to retry.",
		func(s *engine.Snapshot) uint64 { return s.Engine.WriteRetries }),
	labeled("mpaged_writeback_errors_total", "Failed page writes by error: ENOSPC (also EDQUOT) or EIO (any other failure).",
		[]string{"errno"}, collectWritebackErrors),

	// Page cache (mpage.Stats, mpage.CacheStats).
	scalar(counter, "mpaged_pagecache_hits_total", "Page lookups by readers that found the page in the cache.",
		func(s *engine.Snapshot) uint64 { return s.Engine.CacheHits }),
	scalar(counter, "mpaged_pagecache_misses_total", "Page lookups by readers that did not find the page in the cache.",
		func(s *engine.Snapshot) uint64 { return s.Engine.CacheMisses }),
	scalar(counter, "mpaged_pagecache_evictions_total", "Clean pages evicted from the page cache to make room.",
		func(s *engine.Snapshot) uint64 { return s.Engine.Evictions }),
	scalar(counter, "mpaged_dirty_throttle_waits_total", "Times a writer slept because dirty and writeback pages were over the dirty limit.",
		func(s *engine.Snapshot) uint64 { return s.Engine.ThrottleWaits }),
	scalar(gauge, "mpaged_pagecache_dirty_files", "Files (mappings) with dirty pages, waiting for background writeback or a sync.",
		func(s *engine.Snapshot) int { return s.Cache.DirtyMappings }),

	// Background writeback (mpage.Flusher).
	scalar(counter, "mpaged_flusher_passes_total", "Background writeback passes run.",
		func(s *engine.Snapshot) uint64 { return s.Engine.FlusherPasses }),
	scalar(counter, "mpaged_flusher_expired_pages_total", "Pages background writeback wrote because they had been dirty longer than the expiry age.",
		func(s *engine.Snapshot) uint64 { return s.Engine.FlusherExpiredPages }),
	scalar(counter, "mpaged_flusher_background_pages_total", "Pages background writeback wrote because dirty pages were over the background threshold.",
		func(s *engine.Snapshot) uint64 { return s.Engine.FlusherBackgroundPages }),
	scalar(counter, "mpaged_flusher_inode_writes_total", "Inodes background writeback committed after writing their files' pages.",
		func(s *engine.Snapshot) uint64 { return s.Engine.FlusherInodeWrites }),
	scalar(counter, "mpaged_flusher_errors_total", "Background writeback attempts that failed (the pages stay dirty and are retried).",
		func(s *engine.Snapshot) uint64 { return s.Engine.FlusherErrors }),
	scalar(counter, "mpaged_flusher_congested_total", "Background writeback passes cut short because the device was congested.",
		func(s *engine.Snapshot) uint64 { return s.Engine.FlusherCongested }),
	labeled("mpaged_pagecache_pages", "Pages in the page cache by state: dirty, under writeback, and clean (the rest); a page redirtied during its writeback counts as dirty and as writeback.",
		[]string{"state"}, collectCachePages),
	scalar(gauge, "mpaged_pagecache_limit_pages", "Pages the page cache holds at most before it evicts.",
		func(s *engine.Snapshot) int { return s.Cache.Limit }),
	scalar(gauge, "mpaged_pagecache_dirty_limit_pages", "Dirty and writeback pages above which writers are throttled.",
		func(s *engine.Snapshot) int64 { return s.Cache.DirtyLimit }),

	// Bio allocation (alloc.BioStats).
	scalar(counter, "mpaged_alloc_bios_total", "Bios handed out by the BioSet, reserve Bios included.",
		func(s *engine.Snapshot) int64 { return s.Bios.Allocs }),
	scalar(counter, "mpaged_alloc_degraded_total", "Bio allocations that got fewer vecs than asked because the byte budget was short.",
		func(s *engine.Snapshot) int64 { return s.Bios.Degraded }),
	scalar(counter, "mpaged_alloc_failed_total", "Bio allocations that got no Bio; their pages took the per-block path.",
		func(s *engine.Snapshot) int64 { return s.Bios.Failed }),
	scalar(counter, "mpaged_alloc_reserve_used_total", "Bio allocations served from the writeback reserve.",
		func(s *engine.Snapshot) int64 { return s.Bios.ReserveUsed }),
	scalar(counter, "mpaged_alloc_waits_total", "Times a Bio allocation blocked waiting for budget.",
		func(s *engine.Snapshot) int64 { return s.Bios.Waits }),
	scalar(gauge, "mpaged_alloc_inuse_bytes", "Bytes of Bios now out, as charged to the BioSet's budget (reserve Bios are not charged).",
		func(s *engine.Snapshot) int64 { return s.Bios.InUseBytes }),
	scalar(gauge, "mpaged_alloc_inuse_bios", "Bios now out, reserve Bios included.",
		func(s *engine.Snapshot) int64 { return s.Bios.InUse }),
	scalar(gauge, "mpaged_alloc_reserve_inuse_bios", "Reserve Bios now out.",
		func(s *engine.Snapshot) int64 { return s.Bios.ReserveOut }),
	scalar(gauge, "mpaged_alloc_budget_bytes", "The BioSet's effective byte budget: the configured one, scaled down under memory pressure.",
		func(s *engine.Snapshot) int64 { return s.Bios.BudgetBytes }),

	// Page frames (alloc.PoolStats).
	scalar(gauge, "mpaged_frames_mapped_bytes", "Bytes of page frames mapped by the frame pool.",
		func(s *engine.Snapshot) int64 { return s.Frames.Frames * alloc.PageSize }),
	scalar(gauge, "mpaged_frames_inuse_bytes", "Bytes of page frames handed out by the frame pool.",
		func(s *engine.Snapshot) int64 { return s.Frames.InUse * alloc.PageSize }),
	scalar(gauge, "mpaged_frames_arenas", "Arenas the frame pool has mapped; each is one registered buffer of the ring.",
		func(s *engine.Snapshot) int64 { return s.Frames.Arenas }),

	// The ring (uring.Stats).
	scalar(counter, "mpaged_ring_requests_total", "Requests the ring accepted.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Submitted }),
	scalar(counter, "mpaged_ring_completions_total", "Completions the ring delivered.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Completed }),
	scalar(counter, "mpaged_ring_sqes_total", "Submission queue entries written for requests, resubmissions included.",
		func(s *engine.Snapshot) uint64 { return s.Ring.SQEs }),
	scalar(counter, "mpaged_ring_enter_total", "io_uring_enter system calls (for the sync backend: I/O system calls).",
		func(s *engine.Snapshot) uint64 { return s.Ring.Enters }),
	scalar(counter, "mpaged_ring_fixed_buffer_ios_total", "Requests issued with a fixed-buffer opcode on registered frames.",
		func(s *engine.Snapshot) uint64 { return s.Ring.FixedBufIO }),
	scalar(counter, "mpaged_ring_resubmits_total", "Short transfers the ring resumed with a new request.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Resubmits }),
	scalar(counter, "mpaged_ring_retries_total", "Requests retried after EAGAIN or EINTR.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Retries }),
	scalar(counter, "mpaged_ring_errors_total", "Completions that carried an error.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Errors }),
	scalar(counter, "mpaged_ring_cq_overflows_total", "Times the kernel reported a completion queue overflow.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Overflows }),
	scalar(counter, "mpaged_ring_cancelled_total", "Requests cancelled when the ring closed.",
		func(s *engine.Snapshot) uint64 { return s.Ring.Cancelled }),
	byOp(counter, "mpaged_ring_bytes_total", "Bytes the ring's requests transferred, by op.",
		func(s *engine.Snapshot) [2]uint64 {
			return [2]uint64{mpage.Read: s.Ring.BytesRead, mpage.Write: s.Ring.BytesWrite}
		}),
	scalar(gauge, "mpaged_ring_inflight", "Requests accepted by the ring and not yet completed.",
		func(s *engine.Snapshot) int64 { return s.Ring.InFlight }),
	labeled("mpaged_io_latency_seconds", "Ring request latency from submission to completion, by op (read, write, other); observed only when the engine runs with timing on.",
		[]string{"op"}, collectLatency),

	// The volume (engine.DeviceInfo).
	labeled("mpaged_engine_info", "The engine's ring backend and whether the volume is opened with O_DIRECT; always 1.",
		[]string{"backend", "direct"}, collectEngineInfo),
	scalar(gauge, "mpaged_volume_size_bytes", "Size of the volume in bytes.",
		func(s *engine.Snapshot) int64 { return s.Info.Size }),
	scalar(gauge, "mpaged_volume_sector_size_bytes", "Smallest unit direct I/O may address on the volume.",
		func(s *engine.Snapshot) int { return s.Info.SectorSize }),
}

// collectBioPages turns the per-op pages-per-Bio buckets (bucket i: at
// most PagesPerBioBuckets[i] pages) into cumulative histograms. The count
// is the buckets' total rather than Bios, which is read separately and may
// have moved on; Bios never exceed the last bound (MaxVecs pages).
func collectBioPages(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
	for dir := range s.Engine.PagesPerBio {
		buckets := make(map[float64]uint64, len(mpage.PagesPerBioBuckets))
		var cum uint64
		for i, n := range s.Engine.PagesPerBio[dir] {
			cum += n
			buckets[float64(mpage.PagesPerBioBuckets[i])] = cum
		}
		ch <- prometheus.MustNewConstHistogram(d, cum, float64(s.Engine.BioPages[dir]), buckets, mpage.Dir(dir).String())
	}
}

// collectLatency turns the ring's per-class buckets (not cumulative, the
// last one past every bound) into cumulative histograms in seconds.
func collectLatency(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
	for op, h := range s.Ring.Latency {
		buckets := make(map[float64]uint64, uring.LatencyBuckets)
		var cum uint64
		for i := range uring.LatencyBuckets {
			cum += h.Counts[i]
			buckets[uring.LatencyBound(i).Seconds()] = cum
		}
		count := cum + h.Counts[uring.LatencyBuckets]
		ch <- prometheus.MustNewConstHistogram(d, count, h.Sum.Seconds(), buckets, uring.LatencyOpNames[op])
	}
}

func collectConfused(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
	for dir := range s.Engine.Confused {
		for r, n := range s.Engine.Confused[dir] {
			ch <- prometheus.MustNewConstMetric(d, counter, float64(n), mpage.Dir(dir).String(), mpage.Reason(r).String())
		}
	}
}

// writebackErrnoNames label mpage.Stats.WritebackErrno's indexes.
var writebackErrnoNames = [...]string{mpage.ErrnoEIO: "EIO", mpage.ErrnoENOSPC: "ENOSPC"}

func collectWritebackErrors(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
	for i, n := range s.Engine.WritebackErrno {
		ch <- prometheus.MustNewConstMetric(d, counter, float64(n), writebackErrnoNames[i])
	}
}

// collectCachePages splits the cache's pages by state. The counts are read
// at slightly different moments, so clean is clamped at zero.
func collectCachePages(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
	c := s.Cache
	clean := max(int64(c.Pages)-c.Dirty-c.Writeback, 0)
	ch <- prometheus.MustNewConstMetric(d, gauge, float64(clean), "clean")
	ch <- prometheus.MustNewConstMetric(d, gauge, float64(c.Dirty), "dirty")
	ch <- prometheus.MustNewConstMetric(d, gauge, float64(c.Writeback), "writeback")
}

func collectEngineInfo(ch chan<- prometheus.Metric, d *prometheus.Desc, s *engine.Snapshot) {
	ch <- prometheus.MustNewConstMetric(d, gauge, 1, s.Backend, strconv.FormatBool(s.Info.Direct))
}
