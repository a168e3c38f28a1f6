package uring

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Op classes of the latency histograms.
const (
	LatencyRead  = 0 // reads, vectored or not
	LatencyWrite = 1 // writes, vectored or not
	LatencyOther = 2 // fsync, nop
	// NumLatencyOps is the number of op classes.
	NumLatencyOps = 3
)

// LatencyOpNames name the op classes (metric labels).
var LatencyOpNames = [NumLatencyOps]string{"read", "write", "other"}

func latencyClass(op Op) int {
	switch {
	case op.IsRead():
		return LatencyRead
	case op.IsWrite():
		return LatencyWrite
	}
	return LatencyOther
}

// LatencyBuckets is the number of finite buckets: bucket i counts
// latencies of at most 1µs<<i, so the last finite bound is 1µs<<23
// (about 8.4 s); longer ones fall in the overflow bucket.
const LatencyBuckets = 24

// LatencyBound is the upper bound of bucket i.
func LatencyBound(i int) time.Duration { return time.Microsecond << i }

// LatencyHist is a fixed-bucket histogram of latencies updated with
// atomics only: observing costs a few adds and never allocates or locks,
// so it can sit on a completion path.
type LatencyHist struct {
	buckets  [LatencyBuckets + 1]atomic.Uint64 // last: over the largest bound
	sumNanos atomic.Uint64
}

// Observe counts one latency.
func (h *LatencyHist) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	// Bucket i holds ceil(d/1µs) in (1<<(i-1), 1<<i].
	i := 0
	if us := uint64((d + time.Microsecond - 1) / time.Microsecond); us > 1 {
		i = bits.Len64(us - 1)
	}
	h.buckets[min(i, LatencyBuckets)].Add(1)
	h.sumNanos.Add(uint64(d))
}

// LatencySnapshot is a copy of a LatencyHist: Counts[i] is the number of
// latencies in bucket i (not cumulative), Counts[LatencyBuckets] those
// over the last bound.
type LatencySnapshot struct {
	Counts [LatencyBuckets + 1]uint64
	Sum    time.Duration
}

// Snapshot copies the histogram.
func (h *LatencyHist) Snapshot() LatencySnapshot {
	var s LatencySnapshot
	for i := range h.buckets {
		s.Counts[i] = h.buckets[i].Load()
	}
	s.Sum = time.Duration(h.sumNanos.Load())
	return s
}

// Count is the number of latencies observed.
func (s LatencySnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}
