package uring

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
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

// OpenFor is Open for a ring that will carry the I/O of one file, fd: with
// BackendAuto it picks by the file. A block device that cannot do
// nonblocking I/O (LacksNowait: zram, brd and other drivers that do the
// work in whoever submits) gets the sync ring: io_uring can only hand its requests to io-wq
// threads, which the sync ring's own workers do for less (random 4 KiB
// reads at depth 128 on zram through the engine: 1832 MiB/s on the sync
// ring, 1275 on the native one, fio io_uring 1948 in the same runs). Any
// other file gets what Open(BackendAuto) gives, the native ring (on a loop
// device: 570 MiB/s native, 127 sync). Other backends are Open's.
func OpenFor(backend string, fd int, opts Options) (Ring, error) {
	if backend == BackendAuto && isBlockDevice(fd) && LacksNowait(fd) {
		opts.logf("uring: fd %d cannot do nonblocking I/O (its driver works in the submitter): using the sync (preadv/pwritev) ring", fd)
		return NewSync(opts), nil
	}
	return Open(backend, opts)
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

// isBlockDevice: only block drivers are known to do their work in the
// submitter (zram, brd); other files without nonblocking I/O (tmpfs,
// FUSE) keep the native ring, whose io-wq has no 16-worker cap.
func isBlockDevice(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK
}
