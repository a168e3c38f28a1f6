package engine

import (
	"fmt"

	"github.com/mpaged/mpaged/uring"
)

// BackendIouringGo names the ring over github.com/iceber/iouring-go. It is
// compiled in only with the iouringgo build tag (ring_iouringgo.go), since
// that library links only with -ldflags=-checklinkname=0.
const BackendIouringGo = "iouring-go"

// openIouringGo is set by ring_iouringgo.go when the backend is compiled in.
var openIouringGo func(uring.Options) (uring.Ring, error)

// Backends lists the ring backends this binary can open.
func Backends() []string {
	b := []string{uring.BackendNative, uring.BackendSync}
	if openIouringGo != nil {
		b = append(b, BackendIouringGo)
	}
	return b
}

// OpenRing starts the named backend: uring.BackendAuto ("") is native with
// a fallback to sync and a log line, BackendIouringGo needs the build tag.
func OpenRing(backend string, opts uring.Options) (uring.Ring, error) {
	return openRingFor(backend, -1, opts)
}

// openRingFor is OpenRing for a ring that carries fd's I/O (fd >= 0): with
// uring.BackendAuto it picks by the file (uring.OpenFor).
func openRingFor(backend string, fd int, opts uring.Options) (uring.Ring, error) {
	if backend == BackendIouringGo {
		if openIouringGo == nil {
			return nil, fmt.Errorf("%w: %s: this binary was built without the iouringgo tag (make build adds it)", ErrBackend, backend)
		}
		return openIouringGo(opts)
	}
	switch backend {
	case uring.BackendAuto, uring.BackendNative, uring.BackendSync:
	default:
		return nil, fmt.Errorf("%w: %q (want native, sync or %s)", ErrBackend, backend, BackendIouringGo)
	}
	var r uring.Ring
	var err error
	if fd >= 0 {
		r, err = uring.OpenFor(backend, fd, opts)
	} else {
		r, err = uring.Open(backend, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: ring %q: %w", backend, err)
	}
	return r, nil
}
