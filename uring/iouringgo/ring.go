//go:build iouringgo

package iouringgo

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	iouring "github.com/iceber/iouring-go"
	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/uring"
)

const (
	defaultEntries = 256
	maxEntries     = 32768

	// maxZeroWrites bounds resubmissions of a write that moved zero bytes
	// before it fails with uring.ErrShortWrite (as in package uring).
	maxZeroWrites = 8
	// maxRetries bounds EAGAIN/EINTR retries of one request (as in package
	// uring): a device that says EAGAIN forever is broken, not busy.
	maxRetries = 1 << 16
	// maxRW is the most one SQE asks for; the kernel caps a transfer at
	// about 2 GiB anyway, and the rest is a short transfer we resume.
	maxRW = 1 << 30
	// reapBatch is how many library results the completion goroutine takes
	// per round before it settles them under one lock.
	reapBatch = 64
)

// iovec is struct iovec. It lives in the mmap'd per-slot table, so it holds
// addresses, not Go pointers: the buffers are kept alive by the Request the
// slot holds.
type iovec struct {
	base uintptr
	len  uintptr
}

const iovecSize = int(unsafe.Sizeof(iovec{}))

// slot states.
const (
	slotFree   uint8 = iota
	slotIssued       // handed to the library; the kernel may use the buffers
	slotOrphan       // SQE published but the library lost track of it (see flushLocked)
)

// slot is one in-kernel request. The kernel and the library reference a slot
// only while it is issued or orphaned; every field is guarded by Ring.mu
// except where noted.
type slot struct {
	ring  *Ring
	req   *uring.Request
	state uint8
	// ud is the library's per-submission record. Holding it keeps its
	// address (the SQE's user_data) from being reused while the slot is in
	// the kernel, so an ASYNC_CANCEL aimed at it cannot hit another request.
	ud *iouring.UserData

	done       int // bytes moved so far
	zeroWrites int
	retries    int
	cancelling bool  // Close asked the kernel to cancel it
	err        error // why an orphaned slot failed

	// The SQE the next prep writes, computed under Ring.mu by prepare.
	opcode  uint8
	fd      int32
	addr    uintptr
	length  uint32
	off     uint64
	opflags uint32

	iov []iovec // MaxVecs entries in Ring.iovMem

	// prep and cancelPrep are this slot's PrepRequests, built once in New
	// so that a submission allocates no closure.
	prep, cancelPrep iouring.PrepRequest
}

// Ring is a uring.Ring over an iouring.IOURing.
//
// Invariants (under mu): inKernel == len(slots)-len(free), and a slot that
// is not free is slotIssued or slotOrphan; batch is empty whenever mu is not
// held; an accepted request is in exactly one of pending, a slot, or a local
// done queue on its way to Finish; inKernel never exceeds entries, so the
// library never has more than entries results to send and the results
// channel (2*entries) never blocks the library's completion goroutine (cancel
// SQEs send no result).
type Ring struct {
	lib      *iouring.IOURing
	results  chan iouring.Result
	opts     uring.Options
	timing   bool
	features uring.Features
	c        uring.Counters

	mu        sync.Mutex
	closed    bool // Submit refuses with ErrClosed
	libClosed bool // lib.Close was called: no more library calls
	// deferFlush is set while the completion goroutine runs handlers:
	// Submit then only queues, and the goroutine issues the queue after
	// the handlers return, so resubmissions from handlers share one enter.
	deferFlush bool
	pending    uring.Queue
	slots      []slot
	free       []*slot
	batch      []*slot               // prepared, not yet given to the library
	preps      []iouring.PrepRequest // scratch for SubmitRequests
	scratch    [][]byte              // scratch for uring.Remaining
	inKernel   int                   // slots not free
	maxIssued  int                   // high-water mark of inKernel (tests)
	forced     int                   // requests completed after lib.Close

	iovMem []byte // mmap'd iovec table, len(slots)*MaxVecs iovecs

	closing   atomic.Bool   // set once Close begins
	drained   chan struct{} // closed when closing and nothing is in flight
	drainOnce sync.Once
	cancelCh  chan struct{} // asks the completion goroutine to cancel (cap 1)
	libDown   chan struct{} // closed after lib.Close returned
	exited    chan struct{} // closed when the completion goroutine returns
	closeDone chan struct{} // closed when Close finished
	closeErr  error
}

var _ uring.Ring = (*Ring)(nil)

// New sets up an iouring-go ring of opts.Entries submission entries (default
// 256, rounded up to a power of two by the kernel). Options that need the
// native ring (registered files and buffers, DEFER_TASKRUN, SINGLE_ISSUER)
// are ignored; SQPoll and SQPollIdle are passed on.
func New(opts uring.Options) (*Ring, error) {
	entries := opts.Entries
	if entries <= 0 {
		entries = defaultEntries
	}
	entries = min(entries, maxEntries)

	var libOpts []iouring.IOURingOption
	var setupFlags []string
	if opts.SQPoll {
		libOpts = append(libOpts, iouring.WithSQPoll())
		if opts.SQPollIdle > 0 {
			libOpts = append(libOpts, iouring.WithSQPollThreadIdle(opts.SQPollIdle))
		}
		setupFlags = append(setupFlags, "SQPOLL")
	}
	lib, err := iouring.New(uint(entries), libOpts...)
	if err != nil {
		return nil, fmt.Errorf("%w: iouring-go: %v", uring.ErrUnavailable, err)
	}
	n := lib.Size()

	mem, err := unix.Mmap(-1, 0, n*uring.MaxVecs*iovecSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		_ = lib.Close()
		return nil, fmt.Errorf("iouringgo: iovec table: %w", err)
	}

	r := &Ring{
		lib:     lib,
		results: make(chan iouring.Result, 2*n),
		opts:    opts,
		timing:  opts.Timing,
		features: uring.Features{
			Backend:    "iouring-go",
			Entries:    n,
			SetupFlags: setupFlags,
			SQPoll:     opts.SQPoll,
			Ops:        []string{"nop", "read", "write", "readv", "writev", "fsync"},
		},
		slots:     make([]slot, n),
		free:      make([]*slot, 0, n),
		batch:     make([]*slot, 0, n),
		preps:     make([]iouring.PrepRequest, 0, n),
		scratch:   make([][]byte, 0, uring.MaxVecs),
		iovMem:    mem,
		drained:   make(chan struct{}),
		cancelCh:  make(chan struct{}, 1),
		libDown:   make(chan struct{}),
		exited:    make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	for i := n - 1; i >= 0; i-- {
		s := &r.slots[i]
		s.ring = r
		base := unsafe.Pointer(&mem[i*uring.MaxVecs*iovecSize])
		s.iov = unsafe.Slice((*iovec)(base), uring.MaxVecs)
		s.prep = s.prepOp
		s.cancelPrep = s.prepCancel
		r.free = append(r.free, s)
	}
	go r.complete()
	return r, nil
}

// prepOp writes the slot's SQE. The library calls it from SubmitRequest(s)
// under its submit lock, on the goroutine that holds Ring.mu.
func (s *slot) prepOp(sqe iosys.SubmissionQueueEntry, ud *iouring.UserData) {
	s.ud = ud
	ud.SetRequestInfo(s) // a pointer in an interface: no allocation
	sqe.PrepOperation(s.opcode, s.fd, uint64(s.addr), s.length, s.off)
	if s.opflags != 0 {
		sqe.SetOpFlags(s.opflags)
	}
}

// prepCancel writes an ASYNC_CANCEL for the slot's current submission
// (kernel 5.5). Its own completion is not delivered (no results channel).
func (s *slot) prepCancel(sqe iosys.SubmissionQueueEntry, _ *iouring.UserData) {
	target := uint64(uintptr(unsafe.Pointer(s.ud)))
	sqe.PrepOperation(iosys.IORING_OP_ASYNC_CANCEL, -1, target, 0, 0)
}

// Submit accepts reqs in order. Requests beyond the free slots wait in the
// ring's queue. A malformed request is refused with uring.ErrInvalid; the
// ones before it stay accepted.
func (r *Ring) Submit(reqs ...*uring.Request) error {
	n := len(reqs)
	var invalid error
	for i, q := range reqs {
		if err := uring.Validate(q); err != nil {
			n, invalid = i, err
			break
		}
	}
	if n == 0 {
		return invalid
	}
	var done uring.Queue
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return uring.ErrClosed
	}
	for _, q := range reqs[:n] {
		r.c.Accept(q, r.timing)
		r.pending.Push(q)
	}
	if r.deferFlush {
		// The completion goroutine is running handlers and will issue
		// everything queued in one submission when they return.
		r.mu.Unlock()
		return invalid
	}
	r.fillLocked()
	r.flushLocked(&done)
	r.mu.Unlock()
	r.deliver(&done)
	return invalid
}

// fillLocked moves queued requests into free slots and prepares them.
func (r *Ring) fillLocked() {
	for len(r.free) > 0 && r.pending.Len() > 0 {
		s := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		q := r.pending.Pop()
		*s = slot{ring: r, req: q, state: slotIssued, iov: s.iov, prep: s.prep, cancelPrep: s.cancelPrep}
		r.inKernel++
		r.maxIssued = max(r.maxIssued, r.inKernel)
		r.prepareLocked(s)
		r.batch = append(r.batch, s)
	}
}

// prepareLocked computes the SQE for what is left of s's request.
func (r *Ring) prepareLocked(s *slot) {
	q := s.req
	s.fd = int32(q.File.Fd())
	s.addr, s.length, s.off, s.opflags = 0, 0, 0, 0
	switch q.Op {
	case uring.OpNop:
		s.opcode, s.fd = iosys.IORING_OP_NOP, -1
		return
	case uring.OpFsync:
		s.opcode = iosys.IORING_OP_FSYNC
		if q.Flags&uring.FlagDatasync != 0 {
			s.opflags = iosys.IORING_FSYNC_DATASYNC
		}
		return
	}
	vecs, off := uring.Remaining(q, s.done, r.scratch)
	s.off = uint64(off) // OffsetCurrent (-1) becomes the kernel's "file position"
	switch q.Op {
	case uring.OpRead, uring.OpWrite:
		s.opcode = iosys.IORING_OP_READ
		if q.Op == uring.OpWrite {
			s.opcode = iosys.IORING_OP_WRITE
		}
		if len(vecs) > 0 {
			s.addr = uintptr(unsafe.Pointer(unsafe.SliceData(vecs[0])))
			s.length = uint32(min(len(vecs[0]), maxRW))
		}
	case uring.OpReadv, uring.OpWritev:
		s.opcode = iosys.IORING_OP_READV
		if q.Op == uring.OpWritev {
			s.opcode = iosys.IORING_OP_WRITEV
		}
		for i, v := range vecs {
			s.iov[i] = iovec{base: uintptr(unsafe.Pointer(unsafe.SliceData(v))), len: uintptr(len(v))}
		}
		s.addr = uintptr(unsafe.Pointer(&s.iov[0]))
		s.length = uint32(len(vecs))
	}
	clear(vecs) // drop the scratch's references to the caller's buffers
}

// flushLocked hands the prepared slots to the library in one submission.
// Requests that cannot be submitted go to done with their error.
func (r *Ring) flushLocked(done *uring.Queue) {
	if len(r.batch) == 0 {
		return
	}
	defer func() {
		clear(r.batch)
		r.batch = r.batch[:0]
	}()
	if r.libClosed {
		for _, s := range r.batch {
			r.c.Cancelled.Add(1)
			r.finishLocked(s, syscall.ECANCELED, done)
		}
		return
	}
	var err error
	if len(r.batch) == 1 {
		// SubmitRequest avoids SubmitRequests' RequestSet allocations.
		_, err = r.lib.SubmitRequest(r.batch[0].prep, r.results)
	} else {
		for _, s := range r.batch {
			r.preps = append(r.preps, s.prep)
		}
		_, err = r.lib.SubmitRequests(r.preps, r.results)
		clear(r.preps)
		r.preps = r.preps[:0]
	}
	r.c.Enters.Add(1)
	if err == nil {
		r.c.SQEs.Add(uint64(len(r.batch)))
		return
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		// io_uring_enter failed after the library had published the SQEs:
		// the kernel will still run them on the next enter, but the library
		// has dropped their records, so their completions will never reach
		// us. Keep the slots (and so the buffers) until Close has shut the
		// library ring down, then complete them with this error. With the
		// ring never holding more than entries requests this needs a kernel
		// out of memory; it is logged.
		r.logf("iouringgo: io_uring_enter failed with %d SQEs published: %v; they complete at Close", len(r.batch), err)
		for _, s := range r.batch {
			s.state, s.err = slotOrphan, uring.Errno(se.Err)
		}
		return
	}
	// Refused before publishing (ErrUnregisteredFile under SQPOLL on kernels
	// before 5.10): the kernel never saw these requests.
	for _, s := range r.batch {
		r.finishLocked(s, uring.Errno(err), done)
	}
}

// finishLocked frees s and queues its request for delivery with s.done bytes
// and err.
func (r *Ring) finishLocked(s *slot, err error, done *uring.Queue) {
	q := s.req
	q.Res, q.Err = s.done, err
	done.Push(q)
	iov := s.iov
	*s = slot{ring: r, iov: iov, prep: s.prep, cancelPrep: s.cancelPrep}
	r.free = append(r.free, s)
	r.inKernel--
}

// deliver completes the requests in done. Their handlers run here, without
// the lock held, so they may call Submit.
func (r *Ring) deliver(done *uring.Queue) {
	if done.Len() == 0 {
		return
	}
	for q := done.Pop(); q != nil; q = done.Pop() {
		r.c.Finish(q, q.Res, q.Err, r.timing)
	}
	r.checkDrained()
}

// checkDrained signals Close once nothing accepted is left. Close sets
// closing before it checks, and deliver checks after Finish decremented
// InFlight, so one of them sees both.
func (r *Ring) checkDrained() {
	if r.closing.Load() && r.c.InFlight.Load() == 0 {
		r.drainOnce.Do(r.signalDrained)
	}
}

func (r *Ring) signalDrained() { close(r.drained) }

// complete is the completion goroutine: it reaps the library's results in
// batches of up to reapBatch and hands each batch to process. It also runs
// Close's cancel pass and, once the library ring is closed, shutdown; so
// every handler except a refusal's runs here.
func (r *Ring) complete() {
	defer close(r.exited)
	var batch [reapBatch]iouring.Result
	for {
		select {
		case res := <-r.results:
			batch[0] = res
			n := r.take(batch[:], 1)
			r.process(batch[:n])
			clear(batch[:n])
		case <-r.cancelCh:
			r.cancelAll()
		case <-r.libDown:
			r.shutdown(batch[:])
			return
		}
	}
}

// process settles a batch of library results, runs the handlers of the
// finished requests, then issues in one submission the reissues, the
// requests the handlers (or anyone meanwhile) submitted, and older queued
// ones, as far as slots allow.
func (r *Ring) process(results []iouring.Result) {
	var done uring.Queue
	r.mu.Lock()
	for _, res := range results {
		s, ok := res.GetRequestInfo().(*slot)
		if !ok || s.state == slotFree {
			continue // not ours: cannot happen, cancels send no result
		}
		// The library sends its *request, which is an iouring.Request;
		// GetRes is the raw CQE result (-errno or bytes), read without the
		// library's resolvers (we install none).
		n := -int(syscall.EIO)
		if lr, ok := res.(iouring.Request); ok {
			n, _ = lr.GetRes()
		}
		r.settleLocked(s, n, &done)
	}
	for {
		if done.Len() > 0 {
			r.deferFlush = true
			r.mu.Unlock()
			r.deliver(&done)
			r.mu.Lock()
			r.deferFlush = false
		}
		r.fillLocked()
		r.flushLocked(&done)
		if done.Len() == 0 { // refusals by the library go round again
			break
		}
	}
	r.mu.Unlock()
}

// settleLocked decides what a CQE result means for s: finished (to done), or
// reissued for the remainder or a retry (to batch).
func (r *Ring) settleLocked(s *slot, res int, done *uring.Queue) {
	q := s.req
	if res < 0 {
		errno := syscall.Errno(-res)
		switch {
		case s.cancelling && (errno == syscall.ECANCELED || errno == syscall.EINTR || errno == syscall.EAGAIN):
			r.c.Cancelled.Add(1)
			r.finishLocked(s, syscall.ECANCELED, done)
		case (errno == syscall.EAGAIN || errno == syscall.EINTR) && s.retries < maxRetries:
			s.retries++
			r.c.Retries.Add(1)
			r.reissueLocked(s)
		default:
			r.finishLocked(s, errno, done)
		}
		return
	}
	if q.Op == uring.OpNop || q.Op == uring.OpFsync {
		r.finishLocked(s, nil, done)
		return
	}
	s.done += res
	switch {
	case s.done >= q.Len():
		r.finishLocked(s, nil, done)
	case res == 0 && q.Op.IsRead():
		r.finishLocked(s, nil, done) // end of file: Res says how much there was
	case s.cancelling:
		r.c.Cancelled.Add(1)
		r.finishLocked(s, syscall.ECANCELED, done)
	case res == 0:
		s.zeroWrites++
		if s.zeroWrites > maxZeroWrites {
			r.finishLocked(s, uring.ErrShortWrite, done)
			return
		}
		r.c.Retries.Add(1)
		r.reissueLocked(s)
	default:
		r.c.Resubmits.Add(1)
		r.reissueLocked(s)
	}
}

// reissueLocked queues s, still holding its slot, for another submission of
// what is left of its request.
func (r *Ring) reissueLocked(s *slot) {
	s.ud = nil
	r.prepareLocked(s)
	r.batch = append(r.batch, s)
}

// cancelAll runs on the completion goroutine when Close's drain timed out:
// queued requests (never seen by the kernel) complete with ECANCELED, and
// every request in the kernel gets an ASYNC_CANCEL.
func (r *Ring) cancelAll() {
	var done uring.Queue
	r.mu.Lock()
	for q := r.pending.Pop(); q != nil; q = r.pending.Pop() {
		q.Res, q.Err = 0, syscall.ECANCELED
		r.c.Cancelled.Add(1)
		done.Push(q)
	}
	if !r.libClosed {
		for i := range r.slots {
			s := &r.slots[i]
			if s.state == slotFree || s.ud == nil {
				continue
			}
			s.cancelling = true
			r.preps = append(r.preps, s.cancelPrep)
		}
		if len(r.preps) > 0 {
			_, err := r.lib.SubmitRequests(r.preps, nil)
			r.c.Enters.Add(1)
			if err != nil {
				r.logf("iouringgo: close: submitting %d cancels: %v", len(r.preps), err)
			} else {
				r.c.SQEs.Add(uint64(len(r.preps)))
			}
			clear(r.preps)
			r.preps = r.preps[:0]
		}
	}
	r.mu.Unlock()
	r.deliver(&done)
}

// take fills batch[n:] with the results already delivered, without
// waiting, and returns how many batch now holds.
func (r *Ring) take(batch []iouring.Result, n int) int {
	for n < len(batch) {
		select {
		case res := <-r.results:
			batch[n] = res
			n++
		default:
			return n
		}
	}
	return n
}

// shutdown runs on the completion goroutine after lib.Close returned: the
// library delivers nothing more, so the results still buffered are settled,
// and every slot still in the kernel is completed (ECANCELED, or an orphan's
// error).
func (r *Ring) shutdown(batch []iouring.Result) {
	for {
		n := r.take(batch, 0)
		if n == 0 {
			break
		}
		r.process(batch[:n])
		clear(batch[:n])
	}
	var done uring.Queue
	r.mu.Lock()
	for q := r.pending.Pop(); q != nil; q = r.pending.Pop() {
		q.Res, q.Err = 0, syscall.ECANCELED
		r.c.Cancelled.Add(1)
		done.Push(q)
	}
	for i := range r.slots {
		s := &r.slots[i]
		switch s.state {
		case slotIssued:
			r.c.Cancelled.Add(1)
			r.forced++
			r.finishLocked(s, syscall.ECANCELED, &done)
		case slotOrphan:
			r.forced++
			r.finishLocked(s, s.err, &done)
		}
	}
	r.mu.Unlock()
	r.deliver(&done)
}

// RegisterFile returns a handle for fd. The library's registered-file table
// is not used: it keys slots by descriptor and rewrites every SQE's fd
// behind our back, which is more than a reference backend needs.
func (r *Ring) RegisterFile(fd int) (uring.File, error) {
	if fd < 0 {
		return uring.File{}, fmt.Errorf("%w: negative descriptor %d", uring.ErrInvalid, fd)
	}
	return uring.MakeFile(fd, -1), nil
}

// UnregisterFile forgets f; there is nothing to undo.
func (r *Ring) UnregisterFile(f uring.File) error {
	if !f.Valid() {
		return fmt.Errorf("%w: file not registered", uring.ErrInvalid)
	}
	return nil
}

// RegisterBuffer is not supported: the library's fixed-buffer support is a
// stub.
func (r *Ring) RegisterBuffer(index int, mem []byte) error {
	return fmt.Errorf("%w: iouring-go ring has no fixed buffers", uring.ErrNotSupported)
}

// InFlight counts accepted requests not yet completed (queued ones included).
func (r *Ring) InFlight() int { return int(r.c.InFlight.Load()) }

// Stats snapshots the counters. Enters counts the library's submit calls,
// each one io_uring_enter (none under SQPOLL while the kernel thread is
// awake); SQEs counts submitted SQEs including resubmissions and cancels.
func (r *Ring) Stats() uring.Stats { return r.c.Snapshot() }

// Features describes the backend.
func (r *Ring) Features() uring.Features {
	f := r.features
	f.SetupFlags = append([]string(nil), f.SetupFlags...)
	f.Ops = append([]string(nil), f.Ops...)
	return f
}

// Close stops accepting requests, drains, and closes the library ring; see
// the package doc. It must not be called from a handler. A second Close
// waits for the first and returns its result.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.closeDone
		return r.closeErr
	}
	r.closed = true
	r.closing.Store(true)
	r.mu.Unlock()
	r.checkDrained()

	if !r.waitDrained() {
		r.cancelCh <- struct{}{}
		if !r.waitDrained() {
			r.logf("iouringgo: close: %d requests still in flight after cancelling; closing the ring under them", r.InFlight())
		}
	}

	// lib.Close waits for the library's completion goroutine, which never
	// blocks on r.results (see Ring), so holding mu here cannot deadlock;
	// it keeps every library call of ours out of the way.
	r.mu.Lock()
	r.libClosed = true
	err := r.lib.Close()
	r.mu.Unlock()
	close(r.libDown)
	<-r.exited

	if r.forced > 0 {
		err = errors.Join(err, fmt.Errorf("iouringgo: close: %d requests did not complete and were failed after the ring closed", r.forced))
	}
	if merr := unix.Munmap(r.iovMem); merr != nil {
		err = errors.Join(err, fmt.Errorf("iouringgo: unmap iovec table: %w", merr))
	}
	r.iovMem = nil
	r.closeErr = err
	close(r.closeDone)
	return err
}

// waitDrained waits for everything accepted to complete, at most
// Options.DrainTimeout when that is set.
func (r *Ring) waitDrained() bool {
	if r.opts.DrainTimeout <= 0 {
		<-r.drained
		return true
	}
	t := time.NewTimer(r.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-r.drained:
		return true
	case <-t.C:
		return false
	}
}

func (r *Ring) logf(format string, args ...any) {
	if r.opts.Logf != nil {
		r.opts.Logf(format, args...)
	}
}
