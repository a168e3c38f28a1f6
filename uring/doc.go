// Package uring owns the engine's view of the device: the Ring interface, the
// Request a caller hands to it, and the backends that carry requests to the
// kernel.
//
// Backends:
//
//   - the native ring (NewNative), built on golang.org/x/sys only: raw
//     io_uring_setup/io_uring_enter, mmap'd submission and completion queues,
//     batched submission, submit and wait in one io_uring_enter, completions
//     reaped from shared memory, a preallocated slot table indexed by
//     user_data (no map lookups, no allocation per op), feature probing,
//     registered files and buffers. With many requests in the kernel it
//     waits for a batch of completions, for a bounded time, and producers
//     do not wake it meanwhile (Options.NoLazyWait). Reads of a file
//     without nonblocking I/O go straight to io-wq (IOSQE_ASYNC,
//     Options.NoAsyncPunt); a vectored request whose vecs follow each
//     other in memory goes as one plain read or write;
//   - the sync ring (NewSync), a pool of preadv/pwritev workers for hosts where
//     io_uring is unavailable (kernel.io_uring_disabled, seccomp);
//   - uring/iouringgo, the same interface over github.com/iceber/iouring-go,
//     behind the iouringgo build tag;
//   - uring/faultring, a wrapper that injects errors, short transfers and
//     delays for tests and drills.
//
// Open picks the native ring and falls back to the sync ring with a log line
// when io_uring cannot be set up. OpenFor, for a ring that carries one
// file's I/O, picks the sync ring for a file without nonblocking I/O
// (zram: its driver works in the submitter, and io_uring could only queue
// each request to an io-wq thread; the sync ring's workers measured
// faster), else as Open. On such files the native ring sends reads to
// io-wq at once (IOSQE_ASYNC) when it is asked for explicitly.
//
// # Contract every backend keeps
//
// A Request is owned by its caller. Between Submit and the call of its
// Handler the ring owns it and the caller must not touch it or the memory its
// buffers point at. Exactly one completion is delivered per accepted request;
// Submit returning an error means the request was not accepted and no
// completion will come.
//
// A completion reports the whole transfer: short transfers are resubmitted for
// the remainder, EAGAIN and EINTR are retried, so Res is less than the
// requested length only at end of file (or when a fault is injected, see
// faultring). Errors arrive as syscall.Errno values (errors.Is(err,
// syscall.EIO) works).
//
// Handlers run on the ring's completion side (the native ring's goroutine, a
// sync worker). They must not block; they may call Submit, which only
// queues, so a handler never recurses into the kernel.
//
// # Memory handed to the kernel
//
// The kernel reads and writes a request's buffers after Submit returns, until
// the completion. Buffers must therefore stay valid and unmoved until the
// Handler runs. Two ways satisfy this: page frames from package alloc, which
// are mmap'd outside the Go heap (the preferred way, and the only one valid
// for registered buffers), or Go memory kept reachable through the Request
// and pinned by the caller with runtime.Pinner for the duration of the
// request (Go's collector does not move heap objects today, but only pinning
// states the requirement). The iovec arrays the kernel reads are owned by the
// ring: the native ring keeps them in an mmap'd per-slot table.
//
// # Concurrency
//
// Submit, RegisterFile and Stats are safe for concurrent use. Close drains:
// it stops accepting requests, waits for everything accepted to complete, and
// after Options.DrainTimeout cancels what is still in flight.
package uring
