package uring_test

import (
	"testing"

	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

func TestConformanceSync(t *testing.T) {
	ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
		return uring.NewSync(opts)
	})
}
