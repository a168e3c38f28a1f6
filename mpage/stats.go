package mpage

import (
	"math/bits"
	"sync/atomic"
)

// Dir is the direction of an I/O, for stats indexed by op.
type Dir uint8

const (
	Read Dir = iota
	Write
	numDirs
)

func (d Dir) String() string {
	if d == Write {
		return "write"
	}
	return "read"
}

// Reason says why a page could not go into a multipage Bio and took the
// per-block path.
type Reason uint8

const (
	// ReasonBuffers: the page already has per-block state.
	ReasonBuffers Reason = iota
	// ReasonHole: data after a hole inside the page.
	ReasonHole
	// ReasonDiscontiguous: the page's blocks are not contiguous on disk.
	ReasonDiscontiguous
	// ReasonMapperUptodate: the mapper filled the block itself.
	ReasonMapperUptodate
	// ReasonAllocFailed: no Bio could be had from the BioSet.
	ReasonAllocFailed
	// ReasonMapError: the mapper returned an error.
	ReasonMapError
	// ReasonEOF: a write page wholly past i_size.
	ReasonEOF
	// ReasonNotDirty: a write page with per-block state whose mapped
	// blocks are not all dirty.
	ReasonNotDirty
	numReasons
)

var reasonNames = [numReasons]string{"buffers", "hole", "discontiguous", "mapper_uptodate", "alloc_failed", "map_error", "eof", "not_dirty"}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// NumReasons is the number of Reason values.
const NumReasons = int(numReasons)

// PagesPerBioBuckets are the upper bounds of the pages-per-Bio histogram
// buckets: 1, 2, 4, ... 256.
var PagesPerBioBuckets = [...]int{1, 2, 4, 8, 16, 32, 64, 128, 256}

// Stats are the engine's counters, plain atomics that collectors read at
// scrape time. One Stats is shared by everything on a Device.
type Stats struct {
	Bios        [numDirs]atomic.Uint64 // multipage Bios submitted
	BioPages    [numDirs]atomic.Uint64 // pages in those Bios
	BioBytes    [numDirs]atomic.Uint64 // bytes those Bios moved, counted at completion
	BlockIOs    [numDirs]atomic.Uint64 // per-block I/Os (the fallback path)
	Errors      [numDirs]atomic.Uint64 // failed I/Os (Bios and blocks)
	Confused    [numDirs][numReasons]atomic.Uint64
	PagesPerBio [numDirs][len(PagesPerBioBuckets)]atomic.Uint64
	HolePages   atomic.Uint64 // read pages zeroed with no I/O
	MapCalls    [numDirs]atomic.Uint64
	// Pages: pages in caches; Evictions; Readahead pages started.
	Evictions      atomic.Uint64
	ReadaheadPages atomic.Uint64
	CacheHits      atomic.Uint64
	CacheMisses    atomic.Uint64
	ThrottleWaits  atomic.Uint64
	WriteRetries   atomic.Uint64 // pages redirtied after a failed write
	WritebackErrno [2]atomic.Uint64

	// The background Flusher: passes run, pages it sent by why (dirty
	// longer than ExpireAge, or the cache past its background threshold),
	// inodes its InodeWriter calls wrote, mappings it found failing
	// (a write error or a failed inode write; each backs the mapping off),
	// and passes cut short by a congested device.
	FlusherPasses          atomic.Uint64
	FlusherExpiredPages    atomic.Uint64
	FlusherBackgroundPages atomic.Uint64
	FlusherInodeWrites     atomic.Uint64
	FlusherErrors          atomic.Uint64
	FlusherCongested       atomic.Uint64
}

// Errno indexes of WritebackErrno.
const (
	ErrnoEIO    = 0
	ErrnoENOSPC = 1
)

// bioSubmitted counts a multipage Bio as it goes to the ring; its bytes
// are counted when it completes (BioBytes is what the device moved).
func (s *Stats) bioSubmitted(d Dir, pages int) {
	s.Bios[d].Add(1)
	s.BioPages[d].Add(uint64(pages))
	// Bucket i holds Bios of at most 1<<i pages.
	b := 0
	if pages > 1 {
		b = bits.Len(uint(pages - 1))
	}
	if b >= len(PagesPerBioBuckets) {
		b = len(PagesPerBioBuckets) - 1
	}
	s.PagesPerBio[d][b].Add(1)
}

// StatsSnapshot is a plain copy of Stats, for printing and tests.
type StatsSnapshot struct {
	Bios, BioPages, BioBytes, BlockIOs, Errors, MapCalls [2]uint64
	Confused                                             [2][NumReasons]uint64
	PagesPerBio                                          [2][len(PagesPerBioBuckets)]uint64
	HolePages, Evictions, ReadaheadPages                 uint64
	CacheHits, CacheMisses, ThrottleWaits, WriteRetries  uint64
	WritebackErrno                                       [2]uint64
	FlusherPasses, FlusherExpiredPages                   uint64
	FlusherBackgroundPages, FlusherInodeWrites           uint64
	FlusherErrors, FlusherCongested                      uint64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	var out StatsSnapshot
	for d := range numDirs {
		out.Bios[d] = s.Bios[d].Load()
		out.BioPages[d] = s.BioPages[d].Load()
		out.BioBytes[d] = s.BioBytes[d].Load()
		out.BlockIOs[d] = s.BlockIOs[d].Load()
		out.Errors[d] = s.Errors[d].Load()
		out.MapCalls[d] = s.MapCalls[d].Load()
		for r := range numReasons {
			out.Confused[d][r] = s.Confused[d][r].Load()
		}
		for b := range PagesPerBioBuckets {
			out.PagesPerBio[d][b] = s.PagesPerBio[d][b].Load()
		}
	}
	out.HolePages = s.HolePages.Load()
	out.Evictions = s.Evictions.Load()
	out.ReadaheadPages = s.ReadaheadPages.Load()
	out.CacheHits = s.CacheHits.Load()
	out.CacheMisses = s.CacheMisses.Load()
	out.ThrottleWaits = s.ThrottleWaits.Load()
	out.WriteRetries = s.WriteRetries.Load()
	out.WritebackErrno[0] = s.WritebackErrno[0].Load()
	out.WritebackErrno[1] = s.WritebackErrno[1].Load()
	out.FlusherPasses = s.FlusherPasses.Load()
	out.FlusherExpiredPages = s.FlusherExpiredPages.Load()
	out.FlusherBackgroundPages = s.FlusherBackgroundPages.Load()
	out.FlusherInodeWrites = s.FlusherInodeWrites.Load()
	out.FlusherErrors = s.FlusherErrors.Load()
	out.FlusherCongested = s.FlusherCongested.Load()
	return out
}

// ConfusedTotal sums confused pages of a direction.
func (s StatsSnapshot) ConfusedTotal(d Dir) uint64 {
	var n uint64
	for _, v := range s.Confused[d] {
		n += v
	}
	return n
}
