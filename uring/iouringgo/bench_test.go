//go:build iouringgo

package iouringgo

import (
	"sync/atomic"
	"testing"

	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

const benchDepth = 32

func BenchmarkIouringgoRead4KiBDepth32(b *testing.B)   { benchRead(b, 4<<10) }
func BenchmarkIouringgoRead128KiBDepth32(b *testing.B) { benchRead(b, 128<<10) }

// benchRead keeps benchDepth page-vectored readv requests (one 4 KiB vec per
// page, like a Bio) in flight over ringtest's 64 MiB bench file (O_DIRECT
// when the filesystem allows it), reissuing each from its handler at the
// next offset.
func benchRead(b *testing.B, size int) {
	f, direct := ringtest.OpenReadMaybeDirect(b, ringtest.BenchFilePath(b))
	defer f.Close()
	mode := "buffered"
	if direct {
		mode = "O_DIRECT"
	}
	r := newRing(b, uring.Options{Entries: 2 * benchDepth})
	h := ringtest.Register(b, r, int(f.Fd()))
	blocks := int64(ringtest.BenchFileSize / size)

	var issued, completed atomic.Int64
	var failed atomic.Pointer[uring.Request]
	done := make(chan struct{})
	n := int64(b.N)
	handler := uring.HandlerFunc(func(q *uring.Request) {
		if q.Err != nil || q.Res != size {
			failed.CompareAndSwap(nil, q)
		}
		if completed.Add(1) == n {
			close(done)
			return
		}
		if next := issued.Add(1) - 1; next < n {
			q.Offset = (next % blocks) * int64(size)
			q.Res, q.Err = 0, nil
			if err := r.Submit(q); err != nil {
				b.Error(err)
			}
		}
	})
	mem := ringtest.Aligned(b, benchDepth*size)
	reqs := make([]uring.Request, benchDepth)
	for i := range reqs {
		reqs[i] = uring.Request{Op: uring.OpReadv, File: h, Vecs: ringtest.SplitVecs(mem[i*size:(i+1)*size], 4096), Handler: handler, BufIndex: uring.NoBuffer}
	}

	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range reqs {
		next := issued.Add(1) - 1
		if next >= n {
			break
		}
		reqs[i].Offset = (next % blocks) * int64(size)
		if err := r.Submit(&reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	if q := failed.Load(); q != nil {
		b.Fatalf("read at %d: res %d err %v", q.Offset, q.Res, q.Err)
	}
	st := r.Stats()
	b.ReportMetric(float64(st.SQEs)/float64(st.Enters), "sqes/enter")
	b.Logf("%s, %d requests, %d enters", mode, st.Completed, st.Enters)
}
