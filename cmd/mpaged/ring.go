package main

import (
	"fmt"
	"io"
	"log"

	"github.com/mpaged/mpaged/uring"
)

// backendIouringGo names the iouring-go ring, compiled in only with the
// iouringgo tag (see ring_iouringgo.go).
const backendIouringGo = "iouring-go"

// openIouringGo is set by ring_iouringgo.go when the backend is compiled in.
var openIouringGo func(uring.Options) (uring.Ring, error)

// openRing starts the backend a --ring flag names; "" picks native and falls
// back to sync with a log line.
func openRing(backend string, opts uring.Options, stderr io.Writer) (uring.Ring, error) {
	if opts.Logf == nil {
		l := log.New(stderr, "", log.LstdFlags)
		opts.Logf = l.Printf
	}
	if backend == backendIouringGo {
		if openIouringGo == nil {
			return nil, fmt.Errorf("%w: --ring iouring-go: this binary was built without the iouringgo tag (make build adds it)", errUsage)
		}
		return openIouringGo(opts)
	}
	r, err := uring.Open(backend, opts)
	if err != nil {
		return nil, fmt.Errorf("--ring %q: %w", backend, err)
	}
	return r, nil
}
