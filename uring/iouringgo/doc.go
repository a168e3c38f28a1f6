//go:build iouringgo

// Package iouringgo is a uring.Ring carried by github.com/iceber/iouring-go,
// the io_uring library the project was asked to support. It is the reference
// backend: the engine runs on the native ring (package uring), and this one
// exists to compare against it and to cross-check the Ring contract on a
// second, independent io_uring implementation.
//
// # Why it sits behind a build tag
//
// iouring-go reaches into package syscall with go:linkname (for sockaddr
// conversion). Since Go 1.23 the linker refuses such pulls unless the binary
// is linked with -checklinkname=0, so every file of this package carries the
// build constraint iouringgo and a plain go build, go vet or go test of the
// module never compiles or links it. Build and test it with
//
//	go test -tags iouringgo -ldflags=-checklinkname=0 -race ./uring/iouringgo/
//	go vet -tags iouringgo ./uring/iouringgo/
//
// (vet does not link, so it needs no ldflags). The mpage package must not
// import this one.
//
// # What it owns
//
// New wraps iouring.New. The ring owns:
//
//   - a slot table, one slot per submission queue entry. A request is handed
//     to the library only with a slot, so at most Features().Entries requests
//     are in the kernel at once; the rest wait in a uring.Queue
//     (backpressure, never an error) and are issued as completions free
//     slots;
//   - a per-slot iovec array in mmap'd memory, which the kernel reads for
//     READV/WRITEV; the SQE is written by the ring's own PrepRequest, so the
//     library's Preadv/Pwritev helpers (which allocate an iovec slice and a
//     closure per call) are not used;
//   - one results channel of 2*entries, created by New and given to the
//     library with every submission, and one completion goroutine reading it.
//     The library's request carries the slot pointer as its request info, so
//     a completion finds its slot without a map lookup of ours;
//   - short-transfer resubmission (uring.Remaining), EAGAIN/EINTR retries,
//     EOF and zero-byte write handling, and the uring.Counters.
//
// The library allocates four objects per submission (its UserData, request
// and done channel when submitting, a copy of the CQE when reaping;
// SubmitRequests adds a RequestSet per batch); the ring adds no allocation
// of its own on the submit and completion paths.
//
// # Ops
//
// Nop (IORING_OP_NOP), Read/Write (IORING_OP_READ/WRITE, kernel 5.6),
// Readv/Writev (IORING_OP_READV/WRITEV, kernel 5.1), Fsync with
// FlagDatasync as IORING_FSYNC_DATASYNC (kernel 5.1). Offset
// uring.OffsetCurrent is passed as -1 (file position, kernel 5.6). Fixed
// buffers and registered files are not used: RegisterBuffer returns
// uring.ErrNotSupported and RegisterFile returns a plain descriptor handle.
//
// # Concurrency
//
// Submit, RegisterFile, InFlight, Stats and Features are safe for concurrent
// use, Close too. Handlers run on the ring's completion goroutine (a request
// the library refuses outright is completed on the submitting goroutine); a
// handler may call Submit but must not call Close. While handlers run,
// Submit only queues; the completion goroutine then issues the reissues of
// short transfers, the handlers' requests and older queued ones together,
// in one library submission (one io_uring_enter).
//
// # Close
//
// Close refuses new requests with uring.ErrClosed and waits until every
// accepted request has completed. With Options.DrainTimeout, when the wait
// runs out the requests still waiting for a slot are completed with
// ECANCELED, the ones in the kernel get an IORING_OP_ASYNC_CANCEL each and
// the ring waits one more DrainTimeout for their completions. Whatever has
// still not completed is completed with ECANCELED after the library ring is
// closed (the kernel then tears the ring down and stops using the buffers).
// Every accepted request gets exactly one completion.
//
// Example:
//
//	r, err := iouringgo.New(uring.Options{Entries: 128})
//	if err != nil {
//		return err
//	}
//	defer r.Close()
//	f, _ := r.RegisterFile(int(file.Fd()))
//	req := &uring.Request{Op: uring.OpReadv, File: f, Vecs: vecs, Handler: h, BufIndex: uring.NoBuffer}
//	err = r.Submit(req)
package iouringgo
