package engine

import (
	"fmt"
	"io"
	"strings"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// Snapshot is every counter of an Engine at one moment.
type Snapshot struct {
	Engine  mpage.StatsSnapshot
	Bios    alloc.BioStats
	Ring    uring.Stats
	Frames  alloc.PoolStats
	Cache   mpage.CacheStats
	Backend string
	Info    DeviceInfo
}

// Snapshot reads the counters. It takes short locks only (the cache's and
// the pool's, to count), so a scrape never waits on I/O.
func (e *Engine) Snapshot() Snapshot {
	return Snapshot{
		Engine:  e.Stats.Snapshot(),
		Bios:    e.Device.BioStats(),
		Ring:    e.Ring.Stats(),
		Frames:  e.Frames.Stats(),
		Cache:   e.Cache.Stats(),
		Backend: e.Ring.Features().Backend,
		Info:    e.Info,
	}
}

// WriteText prints the counters, one topic a line (the CLI's --stats).
func (s Snapshot) WriteText(w io.Writer) {
	e := s.Engine
	for d := range 2 {
		op := mpage.Dir(d)
		per := 0.0
		if e.Bios[d] > 0 {
			per = float64(e.BioPages[d]) / float64(e.Bios[d])
		}
		fmt.Fprintf(w, "stats: %-5s bios %d, pages %d (%.1f per bio), bytes %d, per-block I/Os %d, map calls %d, errors %d\n",
			op, e.Bios[d], e.BioPages[d], per, e.BioBytes[d], e.BlockIOs[d], e.MapCalls[d], e.Errors[d])
	}
	for d := range 2 {
		var hist []string
		for i, n := range e.PagesPerBio[d] {
			hist = append(hist, fmt.Sprintf("<=%d:%d", mpage.PagesPerBioBuckets[i], n))
		}
		fmt.Fprintf(w, "stats: %-5s pages per bio %s\n", mpage.Dir(d), strings.Join(hist, " "))
	}
	for d := range 2 {
		var conf []string
		for r, n := range e.Confused[d] {
			if n > 0 {
				conf = append(conf, fmt.Sprintf("%s %d", mpage.Reason(r), n))
			}
		}
		if len(conf) == 0 {
			conf = []string{"none"}
		}
		fmt.Fprintf(w, "stats: %-5s confused pages %s\n", mpage.Dir(d), strings.Join(conf, ", "))
	}
	fmt.Fprintf(w, "stats: cache hits %d, misses %d, hole pages %d, readahead pages %d, evictions %d\n",
		e.CacheHits, e.CacheMisses, e.HolePages, e.ReadaheadPages, e.Evictions)
	fmt.Fprintf(w, "stats: flusher passes %d (%d congested), pages written expired %d, background %d, inode writes %d, errors %d; dirty mappings %d\n",
		e.FlusherPasses, e.FlusherCongested, e.FlusherExpiredPages, e.FlusherBackgroundPages, e.FlusherInodeWrites, e.FlusherErrors, s.Cache.DirtyMappings)
	fmt.Fprintf(w, "stats: alloc in use %d bytes, degraded %d, failed %d, reserve used %d\n",
		s.Bios.InUseBytes, s.Bios.Degraded, s.Bios.Failed, s.Bios.ReserveUsed)
	r := s.Ring
	fmt.Fprintf(w, "stats: ring %s (O_DIRECT %v): requests %d, SQEs %d, enters %d, fixed-buffer I/Os %d, bytes read %d, written %d, errors %d\n",
		s.Backend, s.Info.Direct, r.Submitted, r.SQEs, r.Enters, r.FixedBufIO, r.BytesRead, r.BytesWrite, r.Errors)
}
