//go:build iouringgo

package iouringgo

import (
	"errors"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// BenchmarkBackends runs one workload (ringtest.BenchReads: random reads
// at depth 32 from a 64 MiB file, O_DIRECT where allowed) against the three
// backends in one process, so BENCHMARKS.md compares them from one run. It
// lives here because only this package links with the iouring-go tag.
func BenchmarkBackends(b *testing.B) {
	backends := []struct {
		name string
		open func(uring.Options) (uring.Ring, error)
	}{
		{"native", func(o uring.Options) (uring.Ring, error) { return uring.NewNative(o) }},
		{"iouring-go", func(o uring.Options) (uring.Ring, error) { return New(o) }},
		{"sync", func(o uring.Options) (uring.Ring, error) { return uring.NewSync(o), nil }},
	}
	const depth = 32
	for _, size := range []struct {
		name  string
		bytes int
	}{{"4KiB", 4 << 10}, {"128KiB", 128 << 10}} {
		for _, be := range backends {
			b.Run(size.name+"/"+be.name, func(b *testing.B) {
				r, err := be.open(uring.Options{Entries: 2 * depth, Workers: depth})
				if errors.Is(err, uring.ErrUnavailable) {
					testenv.Unavailable(b, "%s: %v", be.name, err)
				}
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				ringtest.BenchReads(b, r, size.bytes, depth)
				st := r.Stats()
				b.ReportMetric(float64(st.Enters)/float64(b.N), "enters/op")
			})
		}
	}
}
