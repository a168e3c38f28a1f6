package uring

import "errors"

var (
	// ErrClosed is returned by Submit after Close has begun.
	ErrClosed = errors.New("uring: ring closed")
	// ErrInvalid wraps a refusal of a malformed request.
	ErrInvalid = errors.New("uring: invalid request")
	// ErrNotSupported means the backend or kernel lacks a feature.
	ErrNotSupported = errors.New("uring: not supported")
	// ErrUnavailable means io_uring cannot be set up on this host
	// (io_uring_disabled, seccomp, old kernel); Open then uses the sync ring.
	ErrUnavailable = errors.New("uring: io_uring unavailable")
	// ErrShortWrite is the error of a write the device kept accepting zero
	// bytes of.
	ErrShortWrite = errors.New("uring: device accepted no bytes")
	// ErrTooManyFiles means the registered-file table is full.
	ErrTooManyFiles = errors.New("uring: registered-file table full")
)
