//go:build iouringgo

package engine

import (
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/iouringgo"
)

func init() {
	openIouringGo = func(opts uring.Options) (uring.Ring, error) { return iouringgo.New(opts) }
}
