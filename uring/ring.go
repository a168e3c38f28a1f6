package uring

import (
	"fmt"
	"time"
)

// Op is the kind of operation a Request performs.
type Op uint8

const (
	// OpNop completes without touching a file (kernel 5.1).
	OpNop Op = iota
	// OpRead reads into Buf at Offset (IORING_OP_READ, kernel 5.6; READ_FIXED
	// when Buf is in a registered buffer, kernel 5.1).
	OpRead
	// OpWrite writes Buf at Offset (IORING_OP_WRITE, kernel 5.6).
	OpWrite
	// OpReadv reads into Vecs at Offset (IORING_OP_READV, kernel 5.1;
	// READV_FIXED when all vecs sit in one registered buffer, kernel 6.15).
	OpReadv
	// OpWritev writes Vecs at Offset (IORING_OP_WRITEV, kernel 5.1;
	// WRITEV_FIXED, kernel 6.15).
	OpWritev
	// OpFsync flushes the file to stable storage (IORING_OP_FSYNC, kernel
	// 5.1). With Flags&FlagDatasync it is fdatasync.
	OpFsync

	numOps
)

// NumOps is the number of Op values, for tables indexed by Op.
const NumOps = int(numOps)

var opNames = [...]string{
	OpNop:    "nop",
	OpRead:   "read",
	OpWrite:  "write",
	OpReadv:  "readv",
	OpWritev: "writev",
	OpFsync:  "fsync",
}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// IsWrite reports whether the op moves data to the device.
func (o Op) IsWrite() bool { return o == OpWrite || o == OpWritev }

// IsRead reports whether the op moves data from the device.
func (o Op) IsRead() bool { return o == OpRead || o == OpReadv }

// ReqFlags modify a Request.
type ReqFlags uint8

const (
	// FlagDatasync makes OpFsync an fdatasync.
	FlagDatasync ReqFlags = 1 << iota
)

// OffsetCurrent as a Request's Offset uses and advances the file position
// (pipes, sockets). Short transfers are then resumed without moving Offset.
const OffsetCurrent int64 = -1

// MaxVecs is the largest number of vecs a Readv/Writev request may carry.
// It matches the largest BioSet class.
const MaxVecs = 256

// NoBuffer is the BufIndex of a request whose memory is not registered.
const NoBuffer int16 = -1

// Handler receives a request's completion. It runs on the ring's completion
// side and must not block.
type Handler interface {
	Complete(r *Request)
}

// HandlerFunc adapts a function to Handler. Create it once per owner, not per
// request: converting a closure to an interface allocates.
type HandlerFunc func(r *Request)

// Complete calls f(r).
func (f HandlerFunc) Complete(r *Request) { f(r) }

// Request is one operation and its completion record. The caller owns it;
// the ring owns it from Submit until Handler.Complete is called.
type Request struct {
	Op     Op
	Flags  ReqFlags
	File   File     // from Ring.RegisterFile
	Offset int64    // byte offset, or OffsetCurrent
	Buf    []byte   // OpRead, OpWrite
	Vecs   [][]byte // OpReadv, OpWritev; at most MaxVecs
	// BufIndex names the registered buffer (see Ring.RegisterBuffer) that
	// holds every byte of Buf or Vecs, or NoBuffer. The ring uses the fixed
	// opcodes only when the kernel has them; otherwise it is ignored.
	BufIndex int16
	Handler  Handler
	// UserData is the caller's; the ring never reads it.
	UserData uint64

	// Res is the number of bytes transferred (0 for Nop and Fsync) and Err
	// the error, or nil. Both are set before Handler.Complete.
	Res int
	Err error

	// Submitted and Completed are stamped by the ring when Options.Timing
	// is set (latency metrics), else left zero.
	Submitted, Completed time.Time

	// next links requests in a ring's queues without allocating.
	next *Request
}

// Len is the number of bytes the request asks to transfer.
func (r *Request) Len() int {
	switch r.Op {
	case OpRead, OpWrite:
		return len(r.Buf)
	case OpReadv, OpWritev:
		n := 0
		for _, v := range r.Vecs {
			n += len(v)
		}
		return n
	}
	return 0
}

// Reset clears the request for reuse, keeping the Vecs backing array.
func (r *Request) Reset() {
	vecs := r.Vecs[:0]
	*r = Request{Vecs: vecs, BufIndex: NoBuffer}
}

// validate checks what every backend checks before accepting a request.
func (r *Request) validate() error {
	if r.Handler == nil {
		return fmt.Errorf("%w: no handler", ErrInvalid)
	}
	if r.Op >= numOps {
		return fmt.Errorf("%w: unknown op %d", ErrInvalid, r.Op)
	}
	if r.Op != OpNop && !r.File.Valid() {
		return fmt.Errorf("%w: %s without a file", ErrInvalid, r.Op)
	}
	if (r.Op == OpReadv || r.Op == OpWritev) && (len(r.Vecs) == 0 || len(r.Vecs) > MaxVecs) {
		return fmt.Errorf("%w: %s with %d vecs (1..%d)", ErrInvalid, r.Op, len(r.Vecs), MaxVecs)
	}
	if r.Offset < OffsetCurrent {
		return fmt.Errorf("%w: negative offset %d", ErrInvalid, r.Offset)
	}
	return nil
}

// Validate reports whether a backend would accept the request. Wrappers use
// it to refuse a request at Submit the way the backends do.
func Validate(r *Request) error { return r.validate() }

// File is a ring's handle for an open file descriptor.
type File struct {
	fd    int32
	index int32 // registered-file slot, or -1
	ok    bool
	// punt: the file has no nonblocking I/O, so the native ring sends
	// its reads straight to io-wq (IOSQE_ASYNC); see RegisterFile.
	punt bool
}

// Valid reports whether f came from RegisterFile.
func (f File) Valid() bool { return f.ok }

// Fd is the underlying descriptor.
func (f File) Fd() int { return int(f.fd) }

// Fixed reports whether the native ring registered the descriptor, and the
// slot it sits in.
func (f File) Fixed() (int, bool) { return int(f.index), f.index >= 0 }

// Punted reports whether the native ring sends reads of f straight to its
// io-wq workers (the file cannot do nonblocking I/O; see
// NativeRing.RegisterFile).
func (f File) Punted() bool { return f.punt }

// MakeFile builds a handle for backends and wrappers outside this package.
// index is the registered-file slot or -1.
func MakeFile(fd, index int) File { return File{fd: int32(fd), index: int32(index), ok: true} }

// Ring submits requests to a device and delivers their completions.
type Ring interface {
	// Submit accepts the requests in order and hands them to the kernel in
	// one batch where the backend can. It does not block on a full
	// submission queue: requests wait in the ring's queue (backpressure
	// shows as InFlight). An error means none of the requests from the
	// failing one on were accepted.
	Submit(reqs ...*Request) error
	// RegisterFile makes fd usable in requests. The native ring puts it in
	// its registered-file table when it can.
	RegisterFile(fd int) (File, error)
	// UnregisterFile forgets f; no request may be in flight on it.
	UnregisterFile(f File) error
	// RegisterBuffer registers mem as fixed buffer index. Backends
	// without fixed buffers return ErrNotSupported, and callers go on with
	// BufIndex set: it is only a hint.
	RegisterBuffer(index int, mem []byte) error
	// InFlight counts accepted requests not yet completed.
	InFlight() int
	// Stats returns a snapshot of the ring's counters.
	Stats() Stats
	// Features says what the backend found and uses.
	Features() Features
	// Close stops accepting requests and drains; see the package doc.
	Close() error
}

// Stats are a ring's cumulative counters.
type Stats struct {
	Submitted  uint64 // requests accepted
	Completed  uint64 // completions delivered
	SQEs       uint64 // SQEs written for requests (resubmissions included; the ring's own wake and cancel SQEs are not)
	Enters     uint64 // io_uring_enter calls (syscalls for the sync ring)
	Resubmits  uint64 // short transfers resumed
	Retries    uint64 // EAGAIN/EINTR retries
	Errors     uint64 // completions with an error
	Overflows  uint64 // times the kernel reported CQ overflow
	FixedBufIO uint64 // requests issued with a fixed-buffer opcode
	Cancelled  uint64 // requests cancelled by Close
	BytesRead  uint64
	BytesWrite uint64
	InFlight   int64 // accepted, not completed
	// Latency is submission-to-completion time by op class, kept when
	// Options.Timing is set.
	Latency [NumLatencyOps]LatencySnapshot
}

// Features says what a backend found and uses.
type Features struct {
	Backend       string // "native", "iouring-go", "sync"
	Entries       int    // submission queue entries (workers for sync)
	SetupFlags    []string
	SingleIssuer  bool
	DeferTaskrun  bool
	CoopTaskrun   bool
	SQPoll        bool
	RegisteredFDs bool
	// AsyncPunt: reads of files without nonblocking I/O go straight to
	// io-wq workers, several at once (IOSQE_ASYNC); see
	// NativeRing.RegisterFile.
	AsyncPunt     bool
	FixedBuffers  bool // buffers can be registered
	FixedVectored bool // READV_FIXED/WRITEV_FIXED (kernel 6.15)
	Ops           []string
}

// Options configure a ring. The zero value is usable.
type Options struct {
	// Entries is the submission queue size (rounded up to a power of two,
	// default 256). The native ring keeps up to twice as many requests in
	// flight, the completion queue's size.
	Entries int
	// SQPoll asks for a kernel submission thread (IORING_SETUP_SQPOLL).
	SQPoll bool
	// SQPollIdle is the SQPOLL thread's idle time before it sleeps.
	SQPollIdle time.Duration
	// NoDeferTaskrun and NoSingleIssuer turn off setup flags, for tests
	// and old kernels.
	NoDeferTaskrun, NoSingleIssuer bool
	// NoLazyWait makes the native ring wait for one completion at a time
	// even with many requests in flight (see the loop's lazy waits).
	NoLazyWait bool
	// NoAsyncPunt keeps the native ring from sending reads of files
	// without nonblocking I/O straight to io-wq (IOSQE_ASYNC): the kernel
	// then tries each inline first and queues it to one io-wq worker.
	NoAsyncPunt bool
	// Files is the size of the registered-file table (default 64; 0 keeps
	// the default, negative disables).
	Files int
	// Buffers is the size of the registered-buffer table (default 64; 0
	// keeps the default, negative disables).
	Buffers int
	// Workers is the sync ring's number of workers (default 16).
	Workers int
	// DrainTimeout bounds Close's wait before in-flight requests are
	// cancelled. Zero waits as long as it takes.
	DrainTimeout time.Duration
	// Timing stamps Submitted and Completed on every request.
	Timing bool
	// Logf receives backend notices (fallbacks, degraded features).
	Logf func(format string, args ...any)
}

func (o *Options) entries() int {
	n := o.Entries
	if n <= 0 {
		n = 256
	}
	if n > 32768 {
		n = 32768
	}
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func (o *Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}
