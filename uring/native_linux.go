package uring

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NativeRing is the io_uring backend built on raw system calls.
//
// One goroutine, locked to its OS thread, owns the ring: it calls
// io_uring_setup, every io_uring_enter and every io_uring_register
// (SINGLE_ISSUER and DEFER_TASKRUN tie the ring to that thread), fills SQEs,
// reaps CQEs and runs handlers. Submitters on any goroutine only append to
// an inbox under a mutex and, if the ring goroutine sleeps, wake it through
// an eventfd the ring keeps a read armed on. See native_loop_linux.go for
// the ring side.
type NativeRing struct {
	opts     Options
	timing   bool
	features Features // immutable after setup
	c        Counters
	stale    atomic.Uint64 // CQEs whose user_data named no live SQE

	// mu guards inbox, ctrl and the transition of closed. Requests and
	// control operations are only appended while closed is false, so once
	// the ring goroutine has seen closed it has seen everything accepted.
	mu     sync.Mutex
	inbox  Queue
	ctrl   []*ctrlOp
	closed atomic.Bool

	// events is bumped by every producer after it publishes work (inbox,
	// ctrl, close, cancel); the ring zeroes it before collecting. With
	// sleeping it forms a Dekker pair: the ring sets sleeping, then reads
	// events; a producer bumps events, then reads sleeping. One of them
	// sees the other, so work is never left behind a sleeping ring: a
	// producer that sees sleepKick wakes the ring through the eventfd;
	// one that sees sleepLazy leaves it, since the ring then waits for a
	// batch of completions for at most lazyWait and collects on waking.
	events   atomic.Int64
	sleeping atomic.Int32

	// efd is the wake eventfd. kickers and efdClosed keep a late waker from
	// writing to a descriptor number the ring has closed (and the process
	// may have reused).
	efd       int
	kickers   atomic.Int32
	efdClosed atomic.Bool

	cancelReq atomic.Bool // Close's drain timeout expired
	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed when the ring goroutine has torn down
}

var _ Ring = (*NativeRing)(nil)

// ctrlOp is a control operation (register/unregister) run on the ring
// goroutine, which alone may call io_uring_register.
type ctrlOp struct {
	fn   func(l *loop) error
	done chan error
}

// reservedSQEs is how many CQ entries are kept back from requests: one for
// the armed eventfd read and one for an ASYNC_CANCEL, so that the number of
// SQEs whose CQE has not been reaped never exceeds the CQ size and the CQ
// cannot overflow.
const reservedSQEs = 2

// minEntries keeps a tiny ring useful: with the reserve taken, at least
// 2*minEntries-reservedSQEs requests can be in flight.
const minEntries = 4

// NewNative sets up an io_uring instance and starts its ring goroutine. It
// returns an error wrapping ErrUnavailable when the kernel refuses io_uring
// (ENOSYS, EPERM, EACCES: io_uring_disabled, seccomp, old kernel).
func NewNative(opts Options) (*NativeRing, error) {
	r := &NativeRing{
		opts:   opts,
		timing: opts.Timing,
		efd:    -1,
		done:   make(chan struct{}),
	}
	l := &loop{r: r, fd: -1}
	ready := make(chan error, 1)
	go l.main(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return r, nil
}

// Submit accepts reqs in order. See Ring.Submit.
func (r *NativeRing) Submit(reqs ...*Request) error {
	n := len(reqs)
	var verr error
	for i, q := range reqs {
		if err := q.validate(); err != nil {
			n, verr = i, err
			break
		}
	}
	if n == 0 {
		return verr
	}
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return ErrClosed
	}
	for _, q := range reqs[:n] {
		r.c.Accept(q, r.timing)
		r.inbox.Push(q)
	}
	r.mu.Unlock()
	r.notify()
	return verr
}

// Values of NativeRing.sleeping.
const (
	awake     = 0
	sleepKick = 1 // waiting for a completion: wake it to get new work
	sleepLazy = 2 // waiting for a batch, at most lazyWait: it will look
)

// notify tells the ring goroutine that work was published, writing the
// eventfd only when the ring sleeps (or is about to) waiting for one
// completion; a ring waiting lazily for a batch collects the work within
// lazyWait without the system call and the wake-up.
func (r *NativeRing) notify() {
	r.events.Add(1)
	if r.sleeping.Load() == sleepKick && r.sleeping.CompareAndSwap(sleepKick, awake) {
		r.kick()
	}
}

// wakeValue is what kick writes to the eventfd (any non-zero value).
var wakeValue = [8]byte{1}

func (r *NativeRing) kick() {
	r.kickers.Add(1)
	if !r.efdClosed.Load() {
		_, _ = unix.Write(r.efd, wakeValue[:])
	}
	r.kickers.Add(-1)
}

// control runs fn on the ring goroutine and waits for it. It must not be
// called from a Handler (the ring goroutine would wait for itself).
func (r *NativeRing) control(fn func(l *loop) error) error {
	op := &ctrlOp{fn: fn, done: make(chan error, 1)}
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return ErrClosed
	}
	r.ctrl = append(r.ctrl, op)
	r.mu.Unlock()
	r.notify()
	return <-op.done
}

// RegisterFile puts fd in the registered-file table. When the table is
// full or the kernel has none, it returns an unregistered File, which works
// the same, only without IOSQE_FIXED_FILE. It fails only after Close.
// It must not be called from a Handler.
//
// On a file that cannot do nonblocking I/O (a read with RWF_NOWAIT says
// EOPNOTSUPP: zram, and other drivers that do the work inline in the
// submitter), reads are marked IOSQE_ASYNC, unless Options.NoAsyncPunt:
// the kernel would try each inline, fail, and queue it to one io-wq worker
// that takes the next only when the last one is done, one device operation
// at a time; marked, they go to io-wq at once and to as many workers as
// are needed, so the device's copying spreads over the CPUs. Writes are not
// marked: on zram on two CPUs, punted writes (compression, allocation in
// zsmalloc) ran 25% slower than queued ones (seqwrite 961 vs 1333 MiB/s),
// reads faster (seqread 3957 vs 3428, randread 1198 vs 970 MiB/s).
func (r *NativeRing) RegisterFile(fd int) (File, error) {
	if fd < 0 {
		return File{}, fmt.Errorf("%w: negative fd %d", ErrInvalid, fd)
	}
	f := MakeFile(fd, -1)
	err := r.control(func(l *loop) error {
		f = l.registerFile(fd)
		return nil
	})
	if err != nil {
		return File{}, fmt.Errorf("uring: register file: %w", err)
	}
	f.punt = !r.opts.NoAsyncPunt && LacksNowait(fd)
	return f, nil
}

// LacksNowait reports whether fd's file refuses nonblocking I/O
// (FMODE_NOWAIT unset): a one-page RWF_NOWAIT read at offset 0 fails with
// EOPNOTSUPP. Such a file's driver does its work in whoever submits
// (zram, brd), and io_uring hands every request on it to io-wq threads.
// Any other answer (data, EAGAIN, EINVAL for an alignment the device
// wants, EBADF on a write-only descriptor) says it has nonblocking I/O or
// that it cannot tell: false.
func LacksNowait(fd int) bool {
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(buf)
	_, err = unix.Preadv2(fd, [][]byte{buf}, 0, unix.RWF_NOWAIT)
	return errors.Is(err, unix.EOPNOTSUPP)
}

// UnregisterFile clears f's slot in the registered-file table. No request
// may be in flight on f.
func (r *NativeRing) UnregisterFile(f File) error {
	if !f.Valid() {
		return fmt.Errorf("%w: unregister of an invalid file", ErrInvalid)
	}
	if _, fixed := f.Fixed(); !fixed {
		return nil
	}
	if err := r.control(func(l *loop) error { return l.unregisterFile(f) }); err != nil {
		return fmt.Errorf("uring: unregister file: %w", err)
	}
	return nil
}

// RegisterBuffer registers mem as fixed buffer index (IORING_REGISTER_
// BUFFERS_UPDATE into the sparse table set up at NewNative). mem must stay
// mapped while registered; page frames from package alloc qualify. A nil
// mem clears the index. Replacing a buffer that requests still use is safe:
// the kernel keeps the old one until they finish.
func (r *NativeRing) RegisterBuffer(index int, mem []byte) error {
	if index < 0 {
		return fmt.Errorf("%w: buffer index %d", ErrInvalid, index)
	}
	if err := r.control(func(l *loop) error { return l.registerBuffer(index, mem) }); err != nil {
		return fmt.Errorf("uring: register buffer %d: %w", index, err)
	}
	return nil
}

// InFlight counts accepted requests not yet completed.
func (r *NativeRing) InFlight() int { return int(r.c.InFlight.Load()) }

// Stats returns a snapshot of the counters.
func (r *NativeRing) Stats() Stats { return r.c.Snapshot() }

// StaleCompletions counts CQEs whose user_data named a slot generation not
// in flight. Any value but zero is a bug in the ring; tests assert it.
func (r *NativeRing) StaleCompletions() uint64 { return r.stale.Load() }

// Features says what setup found.
func (r *NativeRing) Features() Features {
	f := r.features
	f.SetupFlags = slices.Clone(f.SetupFlags)
	f.Ops = slices.Clone(f.Ops)
	return f
}

// Close stops accepting requests and waits until every accepted request
// has completed. With Options.DrainTimeout, what is still in flight when it
// expires is cancelled (IORING_OP_ASYNC_CANCEL) and completes with
// syscall.ECANCELED. Then the rings are unmapped and the descriptors
// closed. Close is idempotent and safe to call concurrently with Submit,
// but not from a Handler.
func (r *NativeRing) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed.Store(true)
		r.mu.Unlock()
		r.notify()
		if d := r.opts.DrainTimeout; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-r.done:
			case <-t.C:
				r.cancelReq.Store(true)
				r.notify()
			}
			t.Stop()
		}
		<-r.done
	})
	return r.closeErr
}

// main is the ring goroutine.
func (l *loop) main(ready chan<- error) {
	// The thread stays locked for the goroutine's life and is never
	// unlocked: it is the ring's issuer task (SINGLE_ISSUER, deferred task
	// work), and when this goroutine returns Go ends the thread with it.
	runtime.LockOSThread()
	if err := l.setup(); err != nil {
		l.release()
		ready <- err
		return
	}
	ready <- nil
	l.run()
	l.r.closeErr = l.release()
	close(l.r.done)
}

// setup creates the ring and everything the loop needs. It runs on the
// ring's locked thread.
func (l *loop) setup() error {
	o := &l.r.opts
	entries := uint32(max(o.entries(), minEntries))
	fd, p, err := setupRing(entries, o)
	if err != nil {
		return err
	}
	l.fd, l.setupFlags, l.featureBits = fd, p.flags, p.features
	l.sqpoll = p.flags&setupSQPoll != 0
	l.lazy = p.features&featExtArg != 0 && !o.NoLazyWait
	if l.rg, err = mapRings(fd, &p); err != nil {
		return fmt.Errorf("uring: setup: %w", err)
	}
	if err := l.allocSlots(); err != nil {
		return err
	}
	if l.probe, err = probeOpcodes(fd, l.misc(miscProbe, probeBufSize)); err != nil {
		o.logf("uring: native: %v; assuming kernel 5.1 opcodes", err)
	}
	l.hasRW = l.probe.has(opRead) && l.probe.has(opWrite)
	l.fixedVec = l.probe.has(opReadvFixed) && l.probe.has(opWritevFixed)
	l.cancelAny = true
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("uring: setup: eventfd: %w", err)
	}
	l.r.efd = efd
	l.setupFiles(tableSize(o.Files))
	l.setupBuffers(tableSize(o.Buffers))
	l.r.features = l.describe()
	return nil
}

// tableSize maps an Options table size to the number of entries (0 is
// the default of 64, negative disables).
func tableSize(n int) int {
	switch {
	case n == 0:
		return 64
	case n < 0:
		return 0
	}
	return n
}

// setupRing calls io_uring_setup with the best flag set the kernel takes.
func setupRing(entries uint32, o *Options) (int, params, error) {
	for _, flags := range setupCandidates(o) {
		p := params{flags: flags}
		if flags&setupCQSize != 0 {
			p.cqEntries = 2 * entries
		}
		if flags&setupSQPoll != 0 {
			p.sqThreadIdle = sqPollIdleMillis(o.SQPollIdle)
		}
		fd, err := sysSetup(entries, &p)
		switch {
		case err == nil:
			return fd, p, nil
		case errors.Is(err, syscall.EINVAL):
			o.logf("uring: native: setup flags %v refused (EINVAL), trying fewer", setupNames(flags))
		case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
			return -1, p, fmt.Errorf("uring: setup: %w: %w", ErrUnavailable, err)
		default:
			return -1, p, fmt.Errorf("uring: setup: %w", err)
		}
	}
	return -1, params{}, fmt.Errorf("uring: setup: %w: every flag set refused (EINVAL)", ErrUnavailable)
}

// setupCandidates lists the setup flag sets to try, best first, with the
// options applied. DEFER_TASKRUN needs SINGLE_ISSUER and excludes SQPOLL.
func setupCandidates(o *Options) []uint32 {
	base := []uint32{
		setupSingleIssuer | setupDeferTaskrun | setupCQSize | setupSubmitAll,
		setupSingleIssuer | setupCoopTaskrun | setupTaskrunFlag,
		setupCoopTaskrun,
		0,
	}
	drop := uint32(0)
	if o.NoDeferTaskrun || o.SQPoll {
		drop |= setupDeferTaskrun
	}
	if o.NoSingleIssuer {
		drop |= setupSingleIssuer | setupDeferTaskrun
	}
	var out []uint32
	for _, f := range base {
		f &^= drop
		if o.SQPoll {
			f |= setupSQPoll
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// defaultSQPollIdle is the SQPOLL thread's idle time when Options leave it
// zero. The kernel's own default (one second) keeps a core spinning long
// after a burst; a short idle suits a library on a small machine.
const defaultSQPollIdle = 10 * time.Millisecond

func sqPollIdleMillis(d time.Duration) uint32 {
	if d <= 0 {
		d = defaultSQPollIdle
	}
	return uint32(max(d.Milliseconds(), 1))
}

// describe fills Features from what setup found.
func (l *loop) describe() Features {
	f := l.setupFlags
	return Features{
		Backend:       "native",
		Entries:       int(l.rg.sqEntries),
		SetupFlags:    setupNames(f),
		SingleIssuer:  f&setupSingleIssuer != 0,
		DeferTaskrun:  f&setupDeferTaskrun != 0,
		CoopTaskrun:   f&setupCoopTaskrun != 0,
		SQPoll:        f&setupSQPoll != 0,
		RegisteredFDs: l.files != nil,
		AsyncPunt:     !l.r.opts.NoAsyncPunt && l.hasRW,
		FixedBuffers:  l.bufs != nil,
		FixedVectored: l.bufs != nil && l.fixedVec,
		Ops:           l.probe.names(),
	}
}

// Scratch memory layout: page 0 of l.mem holds small kernel-visible
// arguments, the pages after it one iovec array per slot.
const (
	miscWakeBuf = 0    // 8 bytes: the eventfd read's target
	miscWakeIov = 16   // one rawIovec over miscWakeBuf (no IORING_OP_READ)
	miscRegArg  = 64   // an rsrc register/update structure
	miscRegData = 128  // the fd or rawIovec it points at
	miscProbe   = 256  // probeBufSize bytes
	miscWaitArg = 3072 // a geteventsArg for lazy waits
	miscWaitTS  = 3104 // the kernelTimespec it points at
	miscSize    = 4096 // one page
	slotIovSize = MaxVecs * int(unsafe.Sizeof(rawIovec{}))
)

// allocSlots maps the scratch page and the per-slot iovec arrays in one
// anonymous region outside the Go heap, and builds the slot table.
func (l *loop) allocSlots() error {
	n := int(l.rg.cqEntries) - reservedSQEs
	mem, err := unix.Mmap(-1, 0, miscSize+n*slotIovSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("uring: setup: mmap slot table: %w", err)
	}
	l.mem = mem
	l.cqLimit = int(l.rg.cqEntries)
	l.slots = make([]slot, n)
	l.free = make([]uint32, n)
	l.front = idxFIFO{buf: make([]uint32, n)}
	for i := range l.slots {
		iov := mem[miscSize+i*slotIovSize:]
		l.slots[i].iov = unsafe.Slice((*rawIovec)(unsafe.Pointer(&iov[0])), MaxVecs)
		l.free[i] = uint32(n - 1 - i) // pop order 0, 1, 2, ...
	}
	l.scratch = make([][]byte, MaxVecs)
	l.wakeIov = (*rawIovec)(unsafe.Pointer(&mem[miscWakeIov]))
	*l.wakeIov = rawIovec{base: addrOf(mem[miscWakeBuf : miscWakeBuf+8]), len: 8}
	ts := (*kernelTimespec)(unsafe.Pointer(&mem[miscWaitTS]))
	*ts = kernelTimespec{nsec: int64(lazyWait)}
	l.waitArg = (*geteventsArg)(unsafe.Pointer(&mem[miscWaitArg]))
	*l.waitArg = geteventsArg{ts: uint64(uintptr(unsafe.Pointer(ts)))}
	return nil
}

// misc returns n bytes of the scratch page at off.
func (l *loop) misc(off, n int) []byte { return l.mem[off : off+n : off+n] }

// setupFiles registers a sparse file table of n entries: FILES2 with
// RSRC_REGISTER_SPARSE (5.19), else FILES with -1 entries (5.5).
func (l *loop) setupFiles(n int) {
	if n <= 0 {
		return
	}
	arg := (*rsrcRegister)(unsafe.Pointer(&l.misc(miscRegArg, 32)[0]))
	*arg = rsrcRegister{nr: uint32(n), flags: rsrcRegisterSparse}
	_, err := sysRegister(l.fd, regFiles2, unsafe.Pointer(arg), uint32(unsafe.Sizeof(*arg)))
	if err == nil {
		l.filesUpdate2 = true
	} else {
		fds := make([]int32, n)
		for i := range fds {
			fds[i] = -1
		}
		// fds is the call's direct argument, so it stays put for the call.
		_, err = sysRegister(l.fd, regFiles, unsafe.Pointer(&fds[0]), uint32(n))
	}
	if err != nil {
		l.r.opts.logf("uring: native: no registered-file table: %v", err)
		return
	}
	l.files = make([]int32, n)
	for i := range l.files {
		l.files[i] = -1
	}
}

// setupBuffers registers a sparse buffer table of n entries (BUFFERS2
// with RSRC_REGISTER_SPARSE, kernel 5.19).
func (l *loop) setupBuffers(n int) {
	if n <= 0 {
		return
	}
	arg := (*rsrcRegister)(unsafe.Pointer(&l.misc(miscRegArg, 32)[0]))
	*arg = rsrcRegister{nr: uint32(n), flags: rsrcRegisterSparse}
	if _, err := sysRegister(l.fd, regBuffers2, unsafe.Pointer(arg), uint32(unsafe.Sizeof(*arg))); err != nil {
		l.r.opts.logf("uring: native: no registered-buffer table: %v", err)
		return
	}
	l.bufs = make([]regBuf, n)
}

// registerFile puts fd into a free table slot; on any failure the file
// is used unregistered.
func (l *loop) registerFile(fd int) File {
	idx := slices.Index(l.files, -1)
	if idx < 0 {
		return MakeFile(fd, -1)
	}
	if err := l.updateFile(idx, int32(fd)); err != nil {
		l.r.opts.logf("uring: native: register fd %d: %v; using it unregistered", fd, err)
		return MakeFile(fd, -1)
	}
	l.files[idx] = int32(fd)
	return MakeFile(fd, idx)
}

func (l *loop) unregisterFile(f File) error {
	idx, _ := f.Fixed()
	if idx >= len(l.files) || l.files[idx] != int32(f.Fd()) {
		return fmt.Errorf("%w: fd %d is not registered at %d", ErrInvalid, f.Fd(), idx)
	}
	if err := l.updateFile(idx, -1); err != nil {
		return err
	}
	l.files[idx] = -1
	return nil
}

// updateFile sets table entry idx to fd (-1 clears it).
func (l *loop) updateFile(idx int, fd int32) error {
	data := l.misc(miscRegData, 4)
	*(*int32)(unsafe.Pointer(&data[0])) = fd
	arg := unsafe.Pointer(&l.misc(miscRegArg, 32)[0])
	var err error
	if l.filesUpdate2 {
		*(*rsrcUpdate2)(arg) = rsrcUpdate2{offset: uint32(idx), data: addrOf(data), nr: 1}
		_, err = sysRegister(l.fd, regFilesUpdate2, arg, uint32(unsafe.Sizeof(rsrcUpdate2{})))
	} else {
		*(*rsrcUpdate)(arg) = rsrcUpdate{offset: uint32(idx), data: addrOf(data)}
		_, err = sysRegister(l.fd, regFilesUpdate, arg, 1)
	}
	return err
}

// regBuf is a registered buffer's extent, kept so the ring can check that a
// request's memory lies inside it before using a fixed opcode.
type regBuf struct {
	base, size uint64
}

func (b regBuf) contains(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	return b.containsRange(addrOf(p), uint64(len(p)))
}

// containsRange says whether [addr, addr+n) lies inside the buffer.
func (b regBuf) containsRange(addr, n uint64) bool {
	return n > 0 && b.size > 0 && addr >= b.base && addr+n <= b.base+b.size
}

func (l *loop) registerBuffer(index int, mem []byte) error {
	if l.bufs == nil {
		return ErrNotSupported
	}
	if index >= len(l.bufs) {
		return fmt.Errorf("%w: buffer index %d, table has %d", ErrInvalid, index, len(l.bufs))
	}
	b := regBuf{}
	if len(mem) > 0 {
		b = regBuf{base: addrOf(mem), size: uint64(len(mem))}
	}
	data := l.misc(miscRegData, 16)
	*(*rawIovec)(unsafe.Pointer(&data[0])) = rawIovec{base: b.base, len: b.size}
	arg := unsafe.Pointer(&l.misc(miscRegArg, 32)[0])
	*(*rsrcUpdate2)(arg) = rsrcUpdate2{offset: uint32(index), data: addrOf(data), nr: 1}
	if _, err := sysRegister(l.fd, regBuffersUpdate, arg, uint32(unsafe.Sizeof(rsrcUpdate2{}))); err != nil {
		return err
	}
	// Keep mem reachable until the kernel has pinned its pages.
	runtime.KeepAlive(mem)
	l.bufs[index] = b
	return nil
}

// release frees what setup acquired, in an order the kernel accepts: the
// ring descriptor first (it drops registered files and buffers), then the
// mappings, then the eventfd once no waker can be writing it. Nothing may
// be in flight.
func (l *loop) release() error {
	var errs []error
	if l.fd >= 0 {
		if err := unix.Close(l.fd); err != nil {
			errs = append(errs, fmt.Errorf("uring: close ring: %w", err))
		}
		l.fd = -1
	}
	if l.rg != nil {
		l.rg.unmap()
	}
	if l.mem != nil {
		_ = unix.Munmap(l.mem)
		l.mem = nil
	}
	r := l.r
	r.efdClosed.Store(true)
	for r.kickers.Load() != 0 {
		runtime.Gosched()
	}
	if r.efd >= 0 {
		if err := unix.Close(r.efd); err != nil {
			errs = append(errs, fmt.Errorf("uring: close eventfd: %w", err))
		}
	}
	return errors.Join(errs...)
}

// addrOf is the address of p's first byte; p must be non-empty.
func addrOf(p []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&p[0]))) }
