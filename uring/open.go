package uring

import (
	"errors"
	"fmt"
)

// Backend names accepted by Open (and the daemon's --ring flag).
const (
	BackendAuto   = ""
	BackendNative = "native"
	BackendSync   = "sync"
)

// Open starts the named backend. BackendAuto tries the native ring and, when
// io_uring cannot be set up on this host, says so through Options.Logf and
// uses the sync ring. The iouring-go backend lives in uring/iouringgo
// behind a build tag, so callers that offer it construct it themselves.
func Open(backend string, opts Options) (Ring, error) {
	switch backend {
	case BackendNative:
		return newNative(opts)
	case BackendSync:
		return NewSync(opts), nil
	case BackendAuto:
		r, err := newNative(opts)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		opts.logf("uring: %v; falling back to the sync (preadv/pwritev) ring", err)
		return NewSync(opts), nil
	}
	return nil, fmt.Errorf("uring: unknown backend %q (want native, sync or iouring-go)", backend)
}

// newNative is NewNative, replaceable by tests that need io_uring to be
// unavailable.
var newNative = func(opts Options) (Ring, error) {
	r, err := NewNative(opts)
	if err != nil {
		return nil, err
	}
	return r, nil
}
