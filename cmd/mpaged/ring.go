package main

import (
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/uring"
)

// openRing starts the backend a --ring flag names (see engine.OpenRing);
// an unknown or missing backend is a usage error.
func openRing(backend string, opts uring.Options, stderr io.Writer) (uring.Ring, error) {
	if opts.Logf == nil {
		l := log.New(stderr, "", log.LstdFlags)
		opts.Logf = l.Printf
	}
	r, err := engine.OpenRing(backend, opts)
	if errors.Is(err, engine.ErrBackend) {
		return nil, fmt.Errorf("%w: --ring: %w", errUsage, err)
	}
	return r, err
}
