package uring_test

import (
	"testing"

	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// benchNative runs ringtest.BenchReads on a fresh native ring.
func benchNative(b *testing.B, opts uring.Options, blockSize, depth int) {
	r := newNative(b, opts)
	ringtest.BenchReads(b, r, blockSize, depth)
	s := r.Stats()
	b.ReportMetric(float64(s.Enters)/float64(b.N), "enters/op")
}

func BenchmarkNativeRead4KiBDepth32(b *testing.B) { benchNative(b, uring.Options{}, 4<<10, 32) }
func BenchmarkNativeRead128KiBDepth32(b *testing.B) {
	benchNative(b, uring.Options{}, 128<<10, 32)
}

// Depth 128, where the ring waits for batches of completions, and the same
// waiting for each.
func BenchmarkNativeRead4KiBDepth128(b *testing.B) { benchNative(b, uring.Options{}, 4<<10, 128) }
func BenchmarkNativeRead4KiBDepth128NoLazyWait(b *testing.B) {
	benchNative(b, uring.Options{NoLazyWait: true}, 4<<10, 128)
}

// BenchmarkNativeNopDepth32 measures the ring's own cost per request:
// submit, SQE, enter, reap, handler, with no device behind it.
func BenchmarkNativeNopDepth32(b *testing.B) {
	r := newNative(b, uring.Options{})
	const depth = 32
	h := &allocHandler{done: make(chan struct{}, 1)}
	reqs := make([]uring.Request, depth)
	ptrs := make([]*uring.Request, depth)
	for i := range reqs {
		ptrs[i] = &reqs[i]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += depth {
		n := min(depth, b.N-done)
		h.got.Store(0)
		h.want.Store(int64(n))
		for _, q := range ptrs[:n] {
			*q = uring.Request{Op: uring.OpNop, BufIndex: uring.NoBuffer, Handler: h}
		}
		if err := r.Submit(ptrs[:n]...); err != nil {
			b.Fatal(err)
		}
		<-h.done
	}
}

func benchSync(b *testing.B, blockSize, depth int) {
	r := uring.NewSync(uring.Options{Workers: depth})
	defer r.Close()
	ringtest.BenchReads(b, r, blockSize, depth)
}

func BenchmarkSyncRead4KiBDepth32(b *testing.B)   { benchSync(b, 4<<10, 32) }
func BenchmarkSyncRead128KiBDepth32(b *testing.B) { benchSync(b, 128<<10, 32) }
