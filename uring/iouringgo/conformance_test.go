//go:build iouringgo

package iouringgo

import (
	"cmp"
	"errors"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// TestConformance runs the shared Ring contract suite against this backend.
// Around each case it checks what only this backend promises: Features
// reports the entries asked for, and the slot table never lets more
// requests into the kernel than the ring has entries (Backpressure and
// ConcurrentSubmitters hand it far more than that).
func TestConformance(t *testing.T) {
	ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
		r, err := New(opts)
		if errors.Is(err, uring.ErrUnavailable) {
			testenv.Unavailable(t, "io_uring: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		entries := r.Features().Entries
		// The suite asks for powers of two, which the kernel keeps.
		if want := cmp.Or(opts.Entries, defaultEntries); entries != want {
			t.Errorf("Features().Entries = %d, want %d", entries, want)
		}
		// Registered before the suite's own Close cleanup, so it runs
		// after the ring has drained.
		t.Cleanup(func() {
			m := r.maxInKernel()
			if m > entries {
				t.Errorf("%d requests in the kernel at once, ring has %d entries", m, entries)
			}
			if n := r.Stats().Completed; n > 0 && m == 0 {
				t.Errorf("%d requests completed but none was counted in the kernel", n)
			}
		})
		return r
	})
}
