package uring

import (
	"testing"
	"time"
)

func TestLatencyBuckets(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {time.Nanosecond, 0}, {time.Microsecond, 0},
		{time.Microsecond + 1, 1}, {2 * time.Microsecond, 1},
		{3 * time.Microsecond, 2}, {4 * time.Microsecond, 2}, {5 * time.Microsecond, 3},
		{time.Millisecond, 10}, // 1000µs <= 1024µs
		{LatencyBound(LatencyBuckets - 1), LatencyBuckets - 1},
		{LatencyBound(LatencyBuckets-1) + 1, LatencyBuckets},
		{time.Hour, LatencyBuckets},
	} {
		var h LatencyHist
		h.Observe(tc.d)
		s := h.Snapshot()
		if s.Counts[tc.want] != 1 || s.Count() != 1 {
			t.Errorf("%v: counts %v, want bucket %d", tc.d, s.Counts, tc.want)
		}
		if tc.d <= LatencyBound(LatencyBuckets-1) && tc.d > LatencyBound(tc.want) {
			t.Errorf("%v above its bucket's bound %v", tc.d, LatencyBound(tc.want))
		}
		if s.Sum != tc.d {
			t.Errorf("%v: sum %v", tc.d, s.Sum)
		}
	}
}

func TestLatencyObserveAllocs(t *testing.T) {
	var h LatencyHist
	if n := testing.AllocsPerRun(100, func() { h.Observe(37 * time.Microsecond) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}
