package uring

import (
	"errors"
	"syscall"
	"time"
	"unsafe"
)

// loop is the ring goroutine's state. Nothing here is shared: only the
// ring goroutine reads or writes it, so it needs no locks.
//
// Invariants:
//   - outstanding counts SQEs written whose CQE has not been reaped; it
//     never exceeds cqLimit (the CQ size), so the CQ cannot overflow. Every
//     SQE the ring writes produces exactly one CQE (no multishot, no
//     CQE_SKIP).
//   - len(slots) = CQ size - reservedSQEs, which leaves room for the wake
//     read and one ASYNC_CANCEL whatever the requests do.
//   - a slot is free (in free), queued for resubmission (in front), or has
//     exactly one SQE in the kernel (inKernel).
//   - the wake read is armed whenever the ring blocks in io_uring_enter,
//     except in the final phase of Close, when it is not re-armed.
//   - the ring blocks for a batch of completions (a lazy wait, sleepLazy)
//     only with at least lazyMinInFlight requests in the kernel, and then
//     for at most lazyWait (plus the kernel's timer slack): producers do
//     not wake it then, so that bounds how long new work waits. A lazy
//     wait that ran out with nothing completed is followed by an ordinary
//     one. Otherwise it blocks for one completion (sleepKick), and
//     producers wake it.
//   - a wait is entered with the SQ's new entries in the same call: the
//     ring submits and waits in one io_uring_enter.
type loop struct {
	r *NativeRing

	fd          int
	setupFlags  uint32
	featureBits uint32
	sqpoll      bool
	lazy        bool          // lazy waits: EXT_ARG (5.11), not turned off
	waitArg     *geteventsArg // in mem: the lazy wait's bound
	// lazyIdle: the last lazy wait ran out with nothing completed, so
	// the next wait is an ordinary one (woken by completions and by
	// producers); lazy waits resume after it. Without this, requests
	// that take long (a slow disk, a pipe) would make the ring poll every
	// lazyWait for as long as they are out.
	lazyIdle bool
	rg       *rings

	sqTail      uint32 // next SQE to fill; published with storeRelease
	sqPublished uint32 // tail last published
	sqHead      uint32 // last kernel SQ head seen (refreshed when the SQ looks full)
	cqHead      uint32 // local copy of the CQ head
	outstanding int
	cqLimit     int

	slots   []slot
	free    []uint32 // stack of free slot indices
	front   idxFIFO  // slots to resubmit, ahead of new requests
	local   Queue    // accepted requests not yet given a slot
	scratch [][]byte // Remaining's output, MaxVecs long
	batch   [reapBatch]cqe
	ctrl    []*ctrlOp // reused between collects

	mem     []byte    // mmap'd: scratch page, then per-slot iovecs
	wakeIov *rawIovec // in mem

	probe    probe
	hasRW    bool // IORING_OP_READ/WRITE (5.6)
	fixedVec bool // IORING_OP_READV_FIXED/WRITEV_FIXED (6.15)

	files        []int32 // registered-file table: fd per entry or -1; nil if none
	filesUpdate2 bool
	bufs         []regBuf // registered-buffer table; nil if none

	wakeArmed    bool
	closed       bool // Close has begun (seen under r.mu)
	final        bool // everything accepted completed; winding down the wake read
	cancelling   bool // drain timeout expired
	cancelAny    bool // try IORING_ASYNC_CANCEL_ANY; cleared on EINVAL
	cancelNeeded bool // an ASYNC_CANCEL_ANY is to be written
	overflowSeen bool
	backoff      bool // the last enter said EAGAIN/EBUSY
	// internal counts SQEs written for the ring's own use (wake read,
	// cancels) since the last publish: Stats.SQEs counts requests' only.
	internal uint32
}

// slot is one entry of the in-flight table. user_data names it as
// index | generation<<32; the generation changes with every SQE written for
// the slot, so a CQE for anything but the slot's current SQE is detected.
type slot struct {
	req        *Request
	total      int // req.Len(), computed once
	done       int // bytes moved so far
	gen        uint32
	retries    uint32 // EAGAIN/EINTR retries
	zeroWrites uint8  // consecutive zero-byte write completions
	inKernel   bool
	cancelSent bool
	iov        []rawIovec // MaxVecs entries in the ring's mmap'd region
}

// Reserved user_data values have bit 63 set; slot user_data never does
// because generations are masked to 31 bits.
const (
	udWake      = 1<<63 | 1
	udCancelAny = 1<<63 | 2
	udCancelOne = 1<<63 | 3
	genMask     = 1<<31 - 1
)

// reapBatch is how many CQEs are copied out before handlers run.
const reapBatch = 256

// Lazy waits. With many requests in the kernel the ring waits for a batch
// of completions (an eighth of them, at most lazyMaxBatch) for at most
// lazyWait instead of waking for each one: a wake-up costs the ring thread
// a context switch, and the thread completing the request (an io-wq
// worker) one more. New work waits for the ring to wake, at most lazyWait,
// which is short next to what lazyMinInFlight requests ahead of it take.
const (
	lazyMinInFlight = 16
	lazyMaxBatch    = 32
	lazyWait        = 50 * time.Microsecond
)

// maxRW caps one SQE's length; the kernel moves at most about 2 GiB per
// call anyway, and the rest is resubmitted like any short transfer.
const maxRW = 1 << 30

// idxFIFO is a fixed-capacity FIFO of slot indices; each slot is in it at
// most once, so len(slots) entries suffice.
type idxFIFO struct {
	buf     []uint32
	head, n int
}

func (q *idxFIFO) push(i uint32) {
	q.buf[(q.head+q.n)%len(q.buf)] = i
	q.n++
}

func (q *idxFIFO) pop() uint32 {
	i := q.buf[q.head]
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return i
}

// run is the ring loop: collect work, write SQEs, submit and maybe wait,
// reap. It returns when Close has begun and everything has completed.
func (l *loop) run() {
	for {
		l.collect()
		l.fill()
		if l.final && l.outstanding == 0 {
			return
		}
		l.enter()
		l.reap()
	}
}

// collect takes what producers published: the inbox, control operations,
// Close and its cancel request.
func (l *loop) collect() {
	r := l.r
	r.events.Store(0) // before reading, so later publications are seen by the sleep check
	r.mu.Lock()
	l.local.TakeAll(&r.inbox)
	l.ctrl = append(l.ctrl[:0], r.ctrl...)
	clear(r.ctrl)
	r.ctrl = r.ctrl[:0]
	l.closed = r.closed.Load()
	r.mu.Unlock()
	for i, op := range l.ctrl {
		op.done <- op.fn(l)
		l.ctrl[i] = nil
	}
	if !l.cancelling && r.cancelReq.Load() {
		l.startCancel()
	}
}

// fill writes SQEs while there is room: the wake read first, then cancels,
// then resubmissions, then new requests, and publishes the SQ tail once.
func (l *loop) fill() {
	if l.cancelling {
		l.cancelQueued()
	}
	if !l.wakeArmed && !l.final && l.room() {
		l.armWake()
	}
	if l.cancelling {
		l.writeCancels()
	}
	for l.front.n > 0 && l.room() {
		l.issue(l.front.pop())
	}
	for l.local.Len() > 0 && len(l.free) > 0 && l.room() {
		l.issue(l.take(l.local.Pop()))
	}
	l.checkFinal()
	l.publish()
}

// room reports whether one more SQE may be written: the CQ can take its
// completion and the SQ has a free entry.
func (l *loop) room() bool {
	if l.outstanding >= l.cqLimit {
		return false
	}
	if l.sqTail-l.sqHead < l.rg.sqEntries {
		return true
	}
	l.sqHead = loadAcquire(l.rg.sqHead)
	return l.sqTail-l.sqHead < l.rg.sqEntries
}

// nextSQE returns the next SQE, zeroed, and counts it outstanding. The
// caller checked room.
func (l *loop) nextSQE() *sqe {
	e := &l.rg.sqes[l.sqTail&l.rg.sqMask]
	*e = sqe{}
	l.sqTail++
	l.outstanding++
	return e
}

func (l *loop) publish() {
	if n := l.sqTail - l.sqPublished; n != 0 {
		storeRelease(l.rg.sqTail, l.sqTail)
		l.sqPublished = l.sqTail
		l.r.c.SQEs.Add(uint64(n - l.internal))
		l.internal = 0
	}
}

// armWake writes the eventfd read that lets submitters wake a sleeping
// ring. The eventfd is non-blocking, so the kernel polls it instead of
// parking an io-wq worker.
func (l *loop) armWake() {
	e := l.nextSQE()
	e.fd = int32(l.r.efd)
	e.off = ^uint64(0) // current position: an eventfd has none
	if l.hasRW {
		e.opcode, e.addr, e.len = opRead, l.wakeIov.base, 8
	} else {
		e.opcode, e.addr, e.len = opReadv, uint64(uintptr(unsafe.Pointer(l.wakeIov))), 1
	}
	e.userData = udWake
	l.internal++
	l.wakeArmed = true
}

// take gives req a free slot.
func (l *loop) take(req *Request) uint32 {
	idx := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	s := &l.slots[idx]
	s.req, s.total, s.done = req, req.Len(), 0
	s.retries, s.zeroWrites = 0, 0
	return idx
}

// issue writes the SQE for slot idx's request (or its remainder).
func (l *loop) issue(idx uint32) {
	s := &l.slots[idx]
	s.gen = (s.gen + 1) & genMask
	e := l.nextSQE()
	l.prep(e, s)
	e.userData = uint64(idx) | uint64(s.gen)<<32
	s.inKernel, s.cancelSent = true, false
}

// prep fills e for s's request from s.done bytes on.
func (l *loop) prep(e *sqe, s *slot) {
	req := s.req
	if req.Op == OpNop {
		e.opcode, e.fd = opNop, -1
		return
	}
	l.setFile(e, req.File)
	if req.File.punt && req.Op.IsRead() && l.hasRW { // IOSQE_ASYNC came with IORING_OP_READ (5.6)
		e.flags |= sqeAsync
	}
	switch req.Op {
	case OpFsync:
		e.opcode = opFsync
		if req.Flags&FlagDatasync != 0 {
			e.opFlags = fsyncDatasync
		}
	case OpRead, OpWrite:
		l.prepRW(e, s, req)
	case OpReadv, OpWritev:
		l.prepRWV(e, s, req)
	}
}

// setFile targets the registered-file entry when f names one of this
// ring's entries, else the raw descriptor.
func (l *loop) setFile(e *sqe, f File) {
	if idx, ok := f.Fixed(); ok && idx < len(l.files) && l.files[idx] == int32(f.Fd()) {
		e.fd, e.flags = int32(idx), sqeFixedFile
		return
	}
	e.fd = int32(f.Fd())
}

// offsetAt is the file offset after done bytes (-1 stays -1: the file
// position advances in the kernel).
func offsetAt(req *Request, done int) uint64 {
	if req.Offset == OffsetCurrent {
		return ^uint64(0)
	}
	return uint64(req.Offset + int64(done))
}

func (l *loop) prepRW(e *sqe, s *slot, req *Request) {
	buf := req.Buf[s.done:]
	if len(buf) > maxRW {
		buf = buf[:maxRW]
	}
	e.off = offsetAt(req, s.done)
	if len(buf) > 0 {
		e.addr, e.len = addrOf(buf), uint32(len(buf))
	}
	write := req.Op == OpWrite
	switch bi, ok := l.fixedBuf(req, buf); {
	case ok:
		e.opcode, e.bufIndex = pick(write, opWriteFixed, opReadFixed), bi
		l.countFixed(s)
	case l.hasRW:
		e.opcode = pick(write, opWrite, opRead)
	default: // before 5.6: one iovec
		s.iov[0] = rawIovec{base: e.addr, len: uint64(e.len)}
		e.opcode, e.addr, e.len = pick(write, opWritev, opReadv), l.iovAddr(s), 1
	}
}

func (l *loop) prepRWV(e *sqe, s *slot, req *Request) {
	vecs, off := req.Vecs, req.Offset
	if s.done > 0 {
		vecs, off = Remaining(req, s.done, l.scratch)
	}
	write := req.Op == OpWritev
	// Vecs that follow each other in memory (a Bio's page frames, taken
	// from one arena in order) become one iovec. One iovec in all (a 4
	// KiB random read's Bio, or a window of consecutive frames) goes as a
	// plain read or write: the kernel then imports, allocates and frees
	// no iovec array for the request.
	n := mergeIovecs(s.iov, vecs)
	if n == 1 && l.hasRW {
		l.prepOne(e, s, req, s.iov[0], off, write)
	} else {
		l.prepVecs(e, s, req, n, off, write)
	}
	if s.done > 0 {
		clear(l.scratch[:len(vecs)]) // drop references to the caller's memory
	}
}

// mergeIovecs fills iov for vecs, one entry for each run of vecs that
// follow each other in memory, and returns how many entries it used.
func mergeIovecs(iov []rawIovec, vecs [][]byte) int {
	n := 0
	for _, v := range vecs {
		if len(v) == 0 {
			continue
		}
		a := addrOf(v)
		if n > 0 && iov[n-1].base+iov[n-1].len == a {
			iov[n-1].len += uint64(len(v))
			continue
		}
		iov[n] = rawIovec{base: a, len: uint64(len(v))}
		n++
	}
	if n == 0 { // nothing to move: one empty entry, as the caller asked
		iov[0] = rawIovec{}
		n = 1
	}
	return n
}

// prepOne fills e for a vectored request whose bytes are one range:
// READ/WRITE, or their fixed forms when the range is registered.
func (l *loop) prepOne(e *sqe, s *slot, req *Request, r rawIovec, off int64, write bool) {
	e.off = uint64(off)
	// Capped as prepRW caps: the resubmission of short transfers moves
	// the rest (a 4 GiB range would otherwise go as length 0).
	e.addr, e.len = r.base, uint32(min(r.len, maxRW))
	if bi, ok := l.fixedRange(req, r); ok {
		e.opcode, e.bufIndex = pick(write, opWriteFixed, opReadFixed), bi
		l.countFixed(s)
		return
	}
	e.opcode = pick(write, opWrite, opRead)
}

// prepVecs fills e for a vectored request from the first n entries of the
// slot's iovec table.
func (l *loop) prepVecs(e *sqe, s *slot, req *Request, n int, off int64, write bool) {
	e.addr, e.len, e.off = l.iovAddr(s), uint32(n), uint64(off)
	if bi, ok := l.fixedVecs(req, s.iov[:n]); ok {
		e.opcode, e.bufIndex = pick(write, opWritevFixed, opReadvFixed), bi
		l.countFixed(s)
	} else {
		e.opcode = pick(write, opWritev, opReadv)
	}
}

func (l *loop) iovAddr(s *slot) uint64 { return uint64(uintptr(unsafe.Pointer(&s.iov[0]))) }

func pick(cond bool, a, b uint8) uint8 {
	if cond {
		return a
	}
	return b
}

// countFixed counts a request's first SQE with a fixed-buffer opcode.
func (l *loop) countFixed(s *slot) {
	if s.done == 0 && s.retries == 0 {
		l.r.c.FixedBufIO.Add(1)
	}
}

// fixedBuf says whether buf lies inside the registered buffer req names.
func (l *loop) fixedBuf(req *Request, buf []byte) (uint16, bool) {
	if req.BufIndex < 0 || int(req.BufIndex) >= len(l.bufs) {
		return 0, false
	}
	return uint16(req.BufIndex), l.bufs[req.BufIndex].contains(buf)
}

// fixedRange says whether the range lies inside the registered buffer req
// names.
func (l *loop) fixedRange(req *Request, r rawIovec) (uint16, bool) {
	if req.BufIndex < 0 || int(req.BufIndex) >= len(l.bufs) {
		return 0, false
	}
	return uint16(req.BufIndex), l.bufs[req.BufIndex].containsRange(r.base, r.len)
}

// fixedVecs says whether every range lies inside the registered buffer req
// names and the kernel has the vectored fixed opcodes.
func (l *loop) fixedVecs(req *Request, iov []rawIovec) (uint16, bool) {
	if !l.fixedVec || req.BufIndex < 0 || int(req.BufIndex) >= len(l.bufs) {
		return 0, false
	}
	b := l.bufs[req.BufIndex]
	for _, r := range iov {
		if !b.containsRange(r.base, r.len) {
			return 0, false
		}
	}
	return uint16(req.BufIndex), true
}

// enter submits what is in the SQ and, when there is nothing else to do,
// waits in the same call: for one completion, for a batch (lazily, see
// lazyWait), or (SQPOLL) for the SQ thread to free SQ entries. It skips
// the system call when completions are already in the CQ or new work
// arrived (and nothing needs submitting).
func (l *loop) enter() {
	toSubmit, flags := l.submitArgs()
	overflow := l.checkOverflow()
	if l.backoff {
		l.backoff = false
		l.waitBackoff()
		return
	}
	minComplete, lazy := uint32(0), false
	switch {
	case overflow:
		// Submit and flush the overflow list without waiting.
	case l.sqpoll && toSubmit == 0 && l.waitsForSQ():
		flags |= enterSQWait
	case l.mayBlock():
		minComplete, lazy = l.waitTarget()
	case toSubmit == 0 && flags&enterSQWakeup == 0:
		return
	}
	var err error
	if lazy {
		_, err = sysEnterArg(l.fd, toSubmit, minComplete, flags, unsafe.Pointer(l.waitArg), unsafe.Sizeof(*l.waitArg))
		l.lazyIdle = loadAcquire(l.rg.cqTail) == l.cqHead
	} else {
		_, err = sysEnter(l.fd, toSubmit, minComplete, flags)
		if minComplete > 0 {
			l.lazyIdle = false
		}
	}
	l.r.c.Enters.Add(1)
	if minComplete > 0 {
		l.r.sleeping.Store(awake)
	}
	l.enterError(err)
}

// waitTarget is how many completions to wait for, and whether lazily. It
// runs after mayBlock set sleepKick and may downgrade to sleepLazy: no
// producer can have missed the kick, since the producers that saw
// sleepKick kicked (the wake read then completes) and later ones see
// sleepLazy.
func (l *loop) waitTarget() (uint32, bool) {
	inKernel := l.outstanding
	if l.wakeArmed {
		inKernel--
	}
	if !l.lazy || l.lazyIdle || inKernel < lazyMinInFlight || !l.r.sleeping.CompareAndSwap(sleepKick, sleepLazy) {
		return 1, false
	}
	return uint32(min(inKernel/8, lazyMaxBatch)), true
}

// submitArgs says how many SQEs to submit and which flags to enter with.
// Under SQPOLL the kernel thread submits; the ring only wakes it when it
// sleeps with entries pending. The tail was published (a sequentially
// consistent store) before the flags are read, pairing with the thread's
// set-NEED_WAKEUP-then-recheck-tail, so a sleep is never missed.
func (l *loop) submitArgs() (toSubmit, flags uint32) {
	flags = enterGetEvents
	unsubmitted := l.sqTail - loadAcquire(l.rg.sqHead)
	switch {
	case unsubmitted == 0:
	case !l.sqpoll:
		toSubmit = unsubmitted
	case loadAcquire(l.rg.sqFlags)&sqNeedWakeup != 0:
		flags |= enterSQWakeup
	}
	return toSubmit, flags
}

// waitsForSQ reports that queued work is held back only by SQ entries the
// SQPOLL thread has not consumed yet. Waiting for a completion then could
// hang: the thread posts inline completions before it moves the SQ head,
// so every request may already be reaped while the SQ still looks full.
// IORING_ENTER_SQ_WAIT (5.10) waits for the head to move instead.
func (l *loop) waitsForSQ() bool {
	if l.outstanding >= l.cqLimit || !l.hasWork() {
		return false
	}
	l.sqHead = loadAcquire(l.rg.sqHead)
	return l.sqTail-l.sqHead >= l.rg.sqEntries
}

// mayBlock decides whether waiting for a completion is safe: nothing is in
// the CQ, nothing runnable is queued, and (Dekker with notify) no producer
// published work after collect. On true, sleeping is set.
func (l *loop) mayBlock() bool {
	if loadAcquire(l.rg.cqTail) != l.cqHead || l.runnable() {
		return false
	}
	r := l.r
	r.sleeping.Store(sleepKick)
	if r.events.Load() != 0 {
		r.sleeping.Store(awake)
		return false
	}
	return true
}

// runnable reports queued work that fill could place now.
func (l *loop) runnable() bool { return l.room() && l.hasWork() }

// hasWork reports queued work that needs an SQE.
func (l *loop) hasWork() bool {
	return l.front.n > 0 || (l.local.Len() > 0 && len(l.free) > 0) ||
		(l.cancelling && l.cancelNeeded) || (!l.wakeArmed && !l.final)
}

// checkOverflow counts each time the kernel starts keeping CQEs in its
// overflow list; entering with GETEVENTS flushes them (FEAT_NODROP). The
// outstanding bound should make this impossible.
func (l *loop) checkOverflow() bool {
	over := loadAcquire(l.rg.sqFlags)&sqCQOverflow != 0
	if over && !l.overflowSeen {
		l.r.c.Overflows.Add(1)
	}
	l.overflowSeen = over
	return over
}

// enterError handles io_uring_enter's error: EINTR (Go's preemption signal)
// and EAGAIN/EBUSY (no memory for requests, or CQ backlog) go round the
// loop again; anything else is a broken ring, logged and slowed down.
func (l *loop) enterError(err error) {
	switch {
	case err == nil, errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ETIME):
		// ETIME: a lazy wait ran out; what completed is in the CQ.
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EBUSY):
		l.backoff = true
	case errors.Is(err, syscall.EBADR):
		l.r.c.Overflows.Add(1)
		l.r.opts.logf("uring: native: completions were dropped (EBADR)")
	default:
		l.r.opts.logf("uring: native: io_uring_enter: %v", err)
		time.Sleep(time.Millisecond)
	}
}

// waitBackoff waits after EAGAIN/EBUSY: for a completion when requests are
// in the kernel (it frees what the kernel lacked), else briefly.
func (l *loop) waitBackoff() {
	inKernel := l.outstanding - int(l.sqTail-loadAcquire(l.rg.sqHead))
	if l.wakeArmed {
		inKernel-- // the wake read may never complete
	}
	if inKernel > 0 && loadAcquire(l.rg.cqTail) == l.cqHead {
		_, err := sysEnter(l.fd, 0, 1, enterGetEvents)
		l.r.c.Enters.Add(1)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			time.Sleep(50 * time.Microsecond)
		}
		return
	}
	time.Sleep(50 * time.Microsecond)
}

// reap copies CQEs out in batches, advancing the CQ head, and only then
// runs their completions, so no handler runs while the ring is mid-update.
func (l *loop) reap() {
	for {
		n := l.reapBatch()
		if n == 0 {
			return
		}
		for i := range n {
			l.complete(&l.batch[i])
		}
	}
}

func (l *loop) reapBatch() int {
	rg := l.rg
	head, tail := l.cqHead, loadAcquire(rg.cqTail)
	n := 0
	for head != tail && n < len(l.batch) {
		l.batch[n] = rg.cqes[head&rg.cqMask]
		head++
		n++
	}
	if n > 0 {
		l.cqHead = head
		storeRelease(rg.cqHead, head)
		l.outstanding -= n
	}
	return n
}

// complete handles one CQE.
func (l *loop) complete(c *cqe) {
	switch c.userData {
	case udWake:
		l.wakeArmed = false
		if c.res < 0 && c.res != -int32(syscall.ECANCELED) && c.res != -int32(syscall.EINTR) {
			l.r.opts.logf("uring: native: wake read: %v", syscall.Errno(-c.res))
		}
		return
	case udCancelAny:
		if c.res == -int32(syscall.EINVAL) && l.cancelAny {
			// Before 5.19: no CANCEL_ANY; cancel slot by slot instead.
			l.cancelAny = false
		}
		return
	case udCancelOne:
		return
	}
	idx, gen := uint32(c.userData), uint32(c.userData>>32)
	if int(idx) >= len(l.slots) || !l.slots[idx].inKernel || l.slots[idx].gen != gen {
		l.r.stale.Add(1)
		l.r.opts.logf("uring: native: stale completion user_data=%#x res=%d", c.userData, c.res)
		return
	}
	l.slots[idx].inKernel = false
	if c.res < 0 {
		l.failed(idx, syscall.Errno(-c.res))
		return
	}
	l.progress(idx, int(c.res))
}

// failed handles a negative result: retry EAGAIN/EINTR (a request that was
// cancelled can report either), otherwise complete with the errno.
func (l *loop) failed(idx uint32, errno syscall.Errno) {
	s := &l.slots[idx]
	transient := errno == syscall.EAGAIN || errno == syscall.EINTR
	switch {
	case l.cancelling && (transient || errno == syscall.ECANCELED):
		l.cancel(idx)
	case transient && s.retries < maxRetries:
		s.retries++
		l.r.c.Retries.Add(1)
		l.front.push(idx)
	default:
		l.finish(idx, s.done, errno)
	}
}

// progress handles res >= 0: complete, resubmit the remainder, or stop at
// end of file or after too many zero-byte writes.
func (l *loop) progress(idx uint32, res int) {
	s := &l.slots[idx]
	op := s.req.Op
	if !op.IsRead() && !op.IsWrite() {
		l.finish(idx, 0, nil)
		return
	}
	s.done += res
	switch {
	case s.done >= s.total:
		l.finish(idx, s.done, nil)
		return
	case l.cancelling:
		l.cancel(idx)
		return
	case res > 0:
		s.zeroWrites = 0
	case op.IsRead(): // zero bytes: end of file
		l.finish(idx, s.done, nil)
		return
	default:
		s.zeroWrites++
		if s.zeroWrites >= maxZeroWrites {
			l.finish(idx, s.done, ErrShortWrite)
			return
		}
	}
	l.r.c.Resubmits.Add(1)
	l.front.push(idx)
}

// finish frees slot idx and delivers its request's completion. The slot is
// free before the handler runs, so the handler may resubmit the request.
func (l *loop) finish(idx uint32, res int, err error) {
	s := &l.slots[idx]
	req := s.req
	s.req = nil
	l.free = append(l.free, idx)
	l.r.c.Finish(req, res, err, l.r.timing)
}

// cancel completes slot idx with ECANCELED, keeping the bytes moved.
func (l *loop) cancel(idx uint32) {
	l.r.c.Cancelled.Add(1)
	l.finish(idx, l.slots[idx].done, syscall.ECANCELED)
}

// startCancel begins cancelling after Close's drain timeout: queued
// requests complete with ECANCELED at once, in-kernel ones get an
// ASYNC_CANCEL.
func (l *loop) startCancel() {
	l.cancelling = true
	l.cancelNeeded = true
	l.cancelQueued()
}

// cancelQueued completes every request not in the kernel with ECANCELED.
func (l *loop) cancelQueued() {
	for l.front.n > 0 {
		l.cancel(l.front.pop())
	}
	for req := l.local.Pop(); req != nil; req = l.local.Pop() {
		l.r.c.Cancelled.Add(1)
		l.r.c.Finish(req, 0, syscall.ECANCELED, l.r.timing)
	}
}

// writeCancels writes IORING_OP_ASYNC_CANCEL: once with CANCEL_ANY
// (5.19), or, after the kernel refused that, one per in-kernel slot.
func (l *loop) writeCancels() {
	if l.cancelAny {
		if l.cancelNeeded && l.room() {
			e := l.nextSQE()
			e.opcode, e.fd, e.opFlags, e.userData = opAsyncCancel, -1, asyncCancelAny, udCancelAny
			l.internal++
			l.cancelNeeded = false
		}
		return
	}
	for i := range l.slots {
		s := &l.slots[i]
		if !s.inKernel || s.cancelSent {
			continue
		}
		if !l.room() {
			return
		}
		e := l.nextSQE()
		e.opcode, e.fd, e.userData = opAsyncCancel, -1, udCancelOne
		l.internal++
		e.addr = uint64(i) | uint64(s.gen)<<32
		s.cancelSent = true
	}
	l.cancelNeeded = false
}

// checkFinal enters the final phase once Close has begun and every
// accepted request has completed: the wake read is then completed by
// writing the eventfd ourselves, and not re-armed.
func (l *loop) checkFinal() {
	if l.final || !l.closed || l.local.Len() > 0 || l.front.n > 0 || len(l.free) != len(l.slots) {
		return
	}
	l.final = true
	if l.wakeArmed {
		l.r.kick()
	}
}
