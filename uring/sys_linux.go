package uring

// The raw io_uring ABI (include/uapi/linux/io_uring.h) as far as the native
// ring uses it: structures laid out byte for byte as the kernel reads them,
// the constants, the three system calls, and the mapping of the shared
// rings. Nothing here keeps state; native_linux.go owns the ring.

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Setup flags (io_uring_params.flags).
const (
	setupSQPoll        = 1 << 1  // kernel 5.1
	setupCQSize        = 1 << 3  // kernel 5.5
	setupSubmitAll     = 1 << 7  // kernel 5.18
	setupCoopTaskrun   = 1 << 8  // kernel 5.19
	setupTaskrunFlag   = 1 << 9  // kernel 5.19
	setupSingleIssuer  = 1 << 12 // kernel 6.0
	setupDeferTaskrun  = 1 << 13 // kernel 6.1
	setupNoSQArray     = 1 << 16 // kernel 6.6; never set, listed for names
	setupKnownFlagMask = setupSQPoll | setupCQSize | setupSubmitAll | setupCoopTaskrun |
		setupTaskrunFlag | setupSingleIssuer | setupDeferTaskrun | setupNoSQArray
)

var setupFlagNames = []struct {
	flag uint32
	name string
}{
	{setupSQPoll, "SQPOLL"},
	{setupCQSize, "CQSIZE"},
	{setupSubmitAll, "SUBMIT_ALL"},
	{setupCoopTaskrun, "COOP_TASKRUN"},
	{setupTaskrunFlag, "TASKRUN_FLAG"},
	{setupSingleIssuer, "SINGLE_ISSUER"},
	{setupDeferTaskrun, "DEFER_TASKRUN"},
	{setupNoSQArray, "NO_SQARRAY"},
}

// setupNames lists the names of the flags set in f.
func setupNames(f uint32) []string {
	names := []string{}
	for _, n := range setupFlagNames {
		if f&n.flag != 0 {
			names = append(names, n.name)
		}
	}
	return names
}

// Feature bits (io_uring_params.features) the ring relies on or reports.
const (
	featSingleMmap = 1 << 0 // kernel 5.4: SQ and CQ rings share one mapping
	featNoDrop     = 1 << 1 // kernel 5.5: overflowed CQEs are kept, not lost
	featRWCurPos   = 1 << 3 // kernel 5.6: offset -1 uses the file position
	featExtArg     = 1 << 8 // kernel 5.11: io_uring_enter takes a timeout
)

// io_uring_enter flags.
const (
	enterGetEvents = 1 << 0
	enterSQWakeup  = 1 << 1
	enterSQWait    = 1 << 2 // kernel 5.10
	enterExtArg    = 1 << 3 // kernel 5.11: arg is a geteventsArg
)

// geteventsArg is struct io_uring_getevents_arg: with enterExtArg, a wait
// bounded by the timespec ts points at.
type geteventsArg struct {
	sigmask     uint64
	sigmaskSz   uint32
	minWaitUsec uint32
	ts          uint64
}

// kernelTimespec is struct __kernel_timespec.
type kernelTimespec struct {
	sec, nsec int64
}

// Flags the kernel sets in the SQ ring's flags word.
const (
	sqNeedWakeup = 1 << 0 // SQPOLL thread sleeps: enter with SQ_WAKEUP
	sqCQOverflow = 1 << 1 // CQEs are waiting in the overflow list
)

// SQE flags.
const (
	sqeFixedFile = 1 << 0
	sqeAsync     = 1 << 4 // IOSQE_ASYNC, kernel 5.6: straight to io-wq
)

// Opcodes (enum io_uring_op). Each is noted with the kernel that added it.
const (
	opNop         = 0  // 5.1
	opReadv       = 1  // 5.1
	opWritev      = 2  // 5.1
	opFsync       = 3  // 5.1
	opReadFixed   = 4  // 5.1
	opWriteFixed  = 5  // 5.1
	opAsyncCancel = 14 // 5.5
	opRead        = 22 // 5.6
	opWrite       = 23 // 5.6
	opReadvFixed  = 60 // 6.15
	opWritevFixed = 61 // 6.15
)

// Operation flags carried in the SQE's op-flags word.
const (
	fsyncDatasync  = 1 << 0 // IORING_FSYNC_DATASYNC
	asyncCancelAny = 1 << 2 // IORING_ASYNC_CANCEL_ANY, kernel 5.19
)

// io_uring_register opcodes.
const (
	regFiles           = 2      // 5.1
	regFilesUpdate     = 6      // 5.5
	regProbe           = 8      // 5.6
	regFiles2          = 13     // 5.13
	regFilesUpdate2    = 14     // 5.13
	regBuffers2        = 15     // 5.13
	regBuffersUpdate   = 16     // 5.13
	rsrcRegisterSparse = 1 << 0 // IORING_RSRC_REGISTER_SPARSE, kernel 5.19
)

// mmap offsets of the three shared regions.
const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// sqRingOffsets is struct io_sqring_offsets.
type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqRingOffsets is struct io_cqring_offsets.
type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// params is struct io_uring_params (120 bytes).
type params struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32
	features     uint32
	wqFd         uint32
	resv         [3]uint32
	sqOff        sqRingOffsets
	cqOff        cqRingOffsets
}

// sqe is struct io_uring_sqe (64 bytes). Unions are reduced to the member
// the ring writes: off, addr, opFlags (rw_flags, fsync_flags,
// cancel_flags), bufIndex.
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

// cqe is struct io_uring_cqe without the CQE32 extension (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// rawIovec is struct iovec with the base as an integer: iovecs live in
// mmap'd memory the collector does not scan, so they hold no Go pointers.
// The request that owns the buffer keeps it alive.
type rawIovec struct {
	base uint64
	len  uint64
}

// rsrcRegister is struct io_uring_rsrc_register.
type rsrcRegister struct {
	nr    uint32
	flags uint32
	resv2 uint64
	data  uint64
	tags  uint64
}

// rsrcUpdate2 is struct io_uring_rsrc_update2.
type rsrcUpdate2 struct {
	offset uint32
	resv   uint32
	data   uint64
	tags   uint64
	nr     uint32
	resv2  uint32
}

// rsrcUpdate is struct io_uring_rsrc_update (REGISTER_FILES_UPDATE).
type rsrcUpdate struct {
	offset uint32
	resv   uint32
	data   uint64
}

// probeHeader is struct io_uring_probe without its flexible ops array;
// probeOp is one element of that array.
type probeHeader struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
}

type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16
	resv2 uint32
}

const probeOpSupported = 1 << 0

// probeOps is how many ops the probe asks about (the kernel caps it at its
// IORING_OP_LAST).
const probeOps = 256

// Compile-time checks that the Go layouts match the kernel's sizes.
var (
	_ = [1]byte{}[unsafe.Sizeof(params{})-120]
	_ = [1]byte{}[unsafe.Sizeof(sqe{})-64]
	_ = [1]byte{}[unsafe.Sizeof(cqe{})-16]
	_ = [1]byte{}[unsafe.Sizeof(rawIovec{})-16]
	_ = [1]byte{}[unsafe.Sizeof(rsrcRegister{})-32]
	_ = [1]byte{}[unsafe.Sizeof(rsrcUpdate2{})-32]
	_ = [1]byte{}[unsafe.Sizeof(rsrcUpdate{})-16]
	_ = [1]byte{}[unsafe.Sizeof(probeHeader{})-16]
	_ = [1]byte{}[unsafe.Sizeof(probeOp{})-8]
)

func sysSetup(entries uint32, p *params) (int, error) {
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func sysEnter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sysEnterArg is sysEnter with enterExtArg's argument, which must lie in
// memory that cannot move (the ring's mmap'd scratch page).
func sysEnterArg(fd int, toSubmit, minComplete, flags uint32, arg unsafe.Pointer, size uintptr) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags|enterExtArg), uintptr(arg), size)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sysRegister passes arg, which must point into memory that cannot move
// (the ring's mmap'd scratch page), to io_uring_register.
func sysRegister(fd int, opcode uint32, arg unsafe.Pointer, nrArgs uint32) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(opcode),
		uintptr(arg), uintptr(nrArgs), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rings are the mmap'd SQ ring, CQ ring and SQE array of one io_uring
// instance, with pointers to the shared words. Only the ring goroutine
// touches them.
type rings struct {
	sqRing, cqRing, sqeMem []byte // cqRing aliases sqRing with SINGLE_MMAP

	sqHead, sqTail, sqFlags *uint32 // shared with the kernel
	sqMask, sqEntries       uint32
	sqes                    []sqe

	cqHead, cqTail, cqOverflow *uint32 // shared with the kernel
	cqMask, cqEntries          uint32
	cqes                       []cqe
}

// mapRings maps the regions of ring fd described by p.
func mapRings(fd int, p *params) (*rings, error) {
	rg := &rings{}
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(cqe{}))
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	rg.sqRing, err = mmapShared(fd, offSQRing, sqSize)
	if err != nil {
		return nil, fmt.Errorf("mmap sq ring: %w", err)
	}
	rg.cqRing = rg.sqRing
	if !single {
		if rg.cqRing, err = mmapShared(fd, offCQRing, cqSize); err != nil {
			rg.unmap()
			return nil, fmt.Errorf("mmap cq ring: %w", err)
		}
	}
	sqeSize := int(p.sqEntries) * int(unsafe.Sizeof(sqe{}))
	if rg.sqeMem, err = mmapShared(fd, offSQEs, sqeSize); err != nil {
		rg.unmap()
		return nil, fmt.Errorf("mmap sqes: %w", err)
	}

	sq, cq := rg.sqRing, rg.cqRing
	rg.sqHead = word(sq, p.sqOff.head)
	rg.sqTail = word(sq, p.sqOff.tail)
	rg.sqFlags = word(sq, p.sqOff.flags)
	rg.sqMask = *word(sq, p.sqOff.ringMask)
	rg.sqEntries = *word(sq, p.sqOff.ringEntries)
	rg.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&rg.sqeMem[0])), rg.sqEntries)
	// The ring fills SQEs in ring order, so the indirection array is the
	// identity, written once; the kernel never writes it.
	array := unsafe.Slice(word(sq, p.sqOff.array), rg.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}

	rg.cqHead = word(cq, p.cqOff.head)
	rg.cqTail = word(cq, p.cqOff.tail)
	rg.cqOverflow = word(cq, p.cqOff.overflow)
	rg.cqMask = *word(cq, p.cqOff.ringMask)
	rg.cqEntries = *word(cq, p.cqOff.ringEntries)
	rg.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&cq[p.cqOff.cqes])), rg.cqEntries)
	return rg, nil
}

// word points at the 32-bit word at off in a mapped region.
func word(m []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }

func mmapShared(fd int, off int64, size int) ([]byte, error) {
	return unix.Mmap(fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
}

func (rg *rings) unmap() {
	if rg.sqeMem != nil {
		_ = unix.Munmap(rg.sqeMem)
	}
	if rg.cqRing != nil && &rg.cqRing[0] != &rg.sqRing[0] {
		_ = unix.Munmap(rg.cqRing)
	}
	if rg.sqRing != nil {
		_ = unix.Munmap(rg.sqRing)
	}
	*rg = rings{}
}

// loadAcquire and storeRelease order accesses to the shared head and tail
// words with the kernel (Go's atomics are sequentially consistent, which
// is at least as strong as the acquire/release the ABI asks for).
func loadAcquire(p *uint32) uint32     { return atomic.LoadUint32(p) }
func storeRelease(p *uint32, v uint32) { atomic.StoreUint32(p, v) }
