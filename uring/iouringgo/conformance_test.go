//go:build iouringgo

package iouringgo

import (
	"errors"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// TestConformance runs the shared Ring contract suite against this backend.
func TestConformance(t *testing.T) {
	ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
		r, err := New(opts)
		if errors.Is(err, uring.ErrUnavailable) {
			testenv.Unavailable(t, "io_uring: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}
