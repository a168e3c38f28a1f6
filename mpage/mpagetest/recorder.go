// Package mpagetest holds test doubles for the mpage engine that tests of
// other packages (fs/*, api/, bench/) can use too:
//
//   - Recorder, a uring.Ring over an in-memory disk (or an *os.File) that
//     performs each request on its own completion goroutine, in submission
//     order, and records what was asked: op, offset, length, vec count.
//     It can fail chosen requests (EIO, ENOSPC), hold completions so
//     requests stay in flight, and pretend a ring depth for congestion.
//   - ScriptedMapper, a BlockMapper built from a little script of extents,
//     with a call log, a bump allocator for create, ForgetBlock and
//     WriteBoundary logs.
//   - Env, the wiring of a FramePool, Cache, Device (over a Recorder) and a
//     Mapping, plus a metadata Mapping over the same device.
package mpagetest

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/mpaged/mpaged/uring"
)

// Record is what the Recorder saw of one request, at Submit.
type Record struct {
	Seq    int      // submission order, from 0 since the last Reset
	Op     uring.Op // readv, writev, fsync, ...
	Offset int64    // byte offset on the device
	Len    int      // bytes asked for
	Vecs   int      // vec count (0 for non-vectored ops)
	Err    error    // the fault injected, if a rule fired
}

func (r Record) String() string {
	s := fmt.Sprintf("#%d %s off=%d len=%d vecs=%d", r.Seq, r.Op, r.Offset, r.Len, r.Vecs)
	if r.Err != nil {
		s += " err=" + r.Err.Error()
	}
	return s
}

// Rule fails requests: a request whose op is Op (any op when AnyOp) and
// whose bytes [Offset, Offset+Len) overlap [Off, Off+Size) (Size <= 0 means
// 1 byte) completes with Errno and moves no data. Count > 0 limits how often
// the rule fires; 0 means every time.
type Rule struct {
	Op    uring.Op
	AnyOp bool
	Off   int64
	Size  int64
	Errno syscall.Errno
	Count int

	fired int
}

func (r *Rule) matches(op uring.Op, off int64, n int) bool {
	if !r.AnyOp && op != r.Op {
		return false
	}
	if r.Count > 0 && r.fired >= r.Count {
		return false
	}
	size := r.Size
	if size <= 0 {
		size = 1
	}
	end := off + int64(max(n, 1))
	return off < r.Off+size && r.Off < end
}

type pending struct {
	r   *uring.Request
	err error
}

// Recorder is a uring.Ring over a byte-slice disk or a file. Requests are
// performed and completed one at a time, in submission order, on the
// Recorder's own goroutine, never on the submitter's stack.
//
// All methods are safe for concurrent use.
type Recorder struct {
	disk    []byte
	file    *os.File
	size    int64
	entries int
	c       uring.Counters

	mu       sync.Mutex
	work     sync.Cond // queue gained work, hold lifted, or closing
	idle     sync.Cond // a completion was delivered
	queue    []pending // FIFO; head is queue[head]
	head     int
	held     bool
	closed   bool
	sync     bool // Submit waits for its requests' completions
	record   bool
	records  []Record
	seq      int
	rules    []Rule
	inflight int // override of InFlight when >= 0
	// accepted and delivered count requests taken by Submit and those
	// whose handler has returned (Counters.Completed is bumped before the
	// handler runs, too early to wait on).
	accepted, delivered uint64
	done                chan struct{}
}

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// Entries is what Features reports as the ring size (the engine's
	// default congestion depth is 3/4 of it). Default 64.
	Entries int
	// NoRecord turns recording off (benchmarks: Records grows otherwise).
	NoRecord bool
}

// NewRecorder returns a Recorder over disk. Requests past len(disk) are
// short: reads return what exists, writes store what fits.
func NewRecorder(disk []byte, opts RecorderOptions) *Recorder {
	r := newRecorder(opts)
	r.disk, r.size = disk, int64(len(disk))
	go r.loop()
	return r
}

// NewFileRecorder returns a Recorder over f, whose current size is the
// device size: requests past it are short.
func NewFileRecorder(f *os.File, opts RecorderOptions) (*Recorder, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	r := newRecorder(opts)
	r.file, r.size = f, st.Size()
	go r.loop()
	return r, nil
}

func newRecorder(opts RecorderOptions) *Recorder {
	r := &Recorder{entries: opts.Entries, record: !opts.NoRecord, inflight: -1, done: make(chan struct{})}
	if r.entries <= 0 {
		r.entries = 64
	}
	r.work.L = &r.mu
	r.idle.L = &r.mu
	return r
}

// Disk is the backing slice (nil for a file Recorder). Read it only while
// nothing is in flight (after Drain).
func (r *Recorder) Disk() []byte { return r.disk }

// Size is the device size in bytes.
func (r *Recorder) Size() int64 { return r.size }

// Submit records and queues the requests. It never blocks on the device;
// with SetSync(true) it returns after their completions were delivered.
func (r *Recorder) Submit(reqs ...*uring.Request) error {
	for _, q := range reqs {
		if err := uring.Validate(q); err != nil {
			return err
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return uring.ErrClosed
	}
	for _, q := range reqs {
		var err error
		n := q.Len()
		for i := range r.rules {
			if ru := &r.rules[i]; ru.matches(q.Op, q.Offset, n) {
				ru.fired++
				err = ru.Errno
				break
			}
		}
		if r.record {
			r.records = append(r.records, Record{Seq: r.seq, Op: q.Op, Offset: q.Offset, Len: n, Vecs: len(q.Vecs), Err: err})
		}
		r.seq++
		r.c.Accept(q, false)
		r.accepted++
		r.queue = append(r.queue, pending{r: q, err: err})
	}
	r.work.Signal()
	if r.sync && !r.held {
		// Wait until everything queued so far has been delivered.
		target := r.accepted
		for r.delivered < target && !r.closed {
			r.idle.Wait()
		}
	}
	r.mu.Unlock()
	return nil
}

func (r *Recorder) loop() {
	defer close(r.done)
	for {
		r.mu.Lock()
		for (r.head == len(r.queue) || r.held) && !r.closed {
			r.work.Wait()
		}
		if r.head == len(r.queue) { // closed and drained
			r.mu.Unlock()
			return
		}
		p := r.queue[r.head]
		r.queue[r.head] = pending{}
		r.head++
		if r.head == len(r.queue) {
			r.queue, r.head = r.queue[:0], 0
		}
		r.mu.Unlock()

		n, err := 0, p.err
		if err == nil {
			n, err = r.perform(p.r)
		}
		r.c.Finish(p.r, n, err, false)

		r.mu.Lock()
		r.delivered++
		r.idle.Broadcast()
		r.mu.Unlock()
	}
}

// perform moves the request's bytes.
func (r *Recorder) perform(q *uring.Request) (int, error) {
	switch q.Op {
	case uring.OpNop, uring.OpFsync:
		return 0, nil
	case uring.OpRead, uring.OpWrite:
		return r.xfer(q.Op.IsWrite(), q.Buf, q.Offset)
	case uring.OpReadv, uring.OpWritev:
		total, off := 0, q.Offset
		for _, v := range q.Vecs {
			n, err := r.xfer(q.Op.IsWrite(), v, off)
			total += n
			off += int64(n)
			if err != nil {
				return total, err
			}
			if n < len(v) {
				break
			}
		}
		return total, nil
	}
	return 0, syscall.EINVAL
}

// xfer copies one buffer to or from the disk at off, short at its end.
func (r *Recorder) xfer(write bool, b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if off >= r.size {
		return 0, nil
	}
	b = b[:min(int64(len(b)), r.size-off)]
	if r.file == nil {
		if write {
			return copy(r.disk[off:], b), nil
		}
		return copy(b, r.disk[off:]), nil
	}
	var n int
	var err error
	if write {
		n, err = r.file.WriteAt(b, off)
	} else {
		n, err = r.file.ReadAt(b, off)
		if err == io.EOF {
			err = nil
		}
	}
	return n, err
}

// Records returns a copy of what was submitted since the last Reset, in
// submission order.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// Reset forgets the records (and restarts Seq at 0). Faults, hold and
// counters stay.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.records, r.seq = r.records[:0], 0
	r.mu.Unlock()
}

// Fail adds a fault rule; rules are tried in the order added.
func (r *Recorder) Fail(rule Rule) {
	r.mu.Lock()
	rule.fired = 0
	r.rules = append(r.rules, rule)
	r.mu.Unlock()
}

// FailAt fails every request of op touching byte off with errno.
func (r *Recorder) FailAt(op uring.Op, off int64, errno syscall.Errno) {
	r.Fail(Rule{Op: op, Off: off, Errno: errno})
}

// ClearFaults removes every rule.
func (r *Recorder) ClearFaults() {
	r.mu.Lock()
	r.rules = nil
	r.mu.Unlock()
}

// Hold keeps accepted requests in flight (not performed, not completed)
// until Release.
func (r *Recorder) Hold() {
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
}

// Release lets held requests go, in submission order.
func (r *Recorder) Release() {
	r.mu.Lock()
	r.held = false
	r.work.Broadcast()
	r.mu.Unlock()
}

// Held reports how many accepted requests wait to be performed.
func (r *Recorder) Held() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) - r.head
}

// SetSync makes Submit return only after the completions of everything
// accepted so far were delivered (on the Recorder's goroutine, as always),
// which makes Bio lifetimes deterministic. Ignored while held.
func (r *Recorder) SetSync(on bool) {
	r.mu.Lock()
	r.sync = on
	r.mu.Unlock()
}

// SetInFlight makes InFlight report n (congestion tests); n < 0 restores
// the real count.
func (r *Recorder) SetInFlight(n int) {
	r.mu.Lock()
	r.inflight = n
	r.mu.Unlock()
}

// SetRecording turns recording on or off.
func (r *Recorder) SetRecording(on bool) {
	r.mu.Lock()
	r.record = on
	r.mu.Unlock()
}

// Drain waits until the handler of every accepted request has returned. It
// lifts a hold first, so it always returns.
func (r *Recorder) Drain() {
	r.mu.Lock()
	if r.held {
		r.held = false
		r.work.Broadcast()
	}
	for r.delivered < r.accepted {
		r.idle.Wait()
	}
	r.mu.Unlock()
}

// RegisterFile accepts any descriptor: there is one disk.
func (r *Recorder) RegisterFile(fd int) (uring.File, error) {
	if fd < 0 {
		return uring.File{}, fmt.Errorf("%w: fd %d", uring.ErrInvalid, fd)
	}
	return uring.MakeFile(fd, -1), nil
}

// File returns a handle for the disk, for DeviceConfig.File.
func (r *Recorder) File() uring.File { return uring.MakeFile(0, -1) }

// UnregisterFile has nothing to undo.
func (r *Recorder) UnregisterFile(uring.File) error { return nil }

// RegisterBuffer is not supported: the Recorder copies in place.
func (r *Recorder) RegisterBuffer(int, []byte) error { return uring.ErrNotSupported }

// InFlight counts accepted requests not yet completed, or the override.
func (r *Recorder) InFlight() int {
	r.mu.Lock()
	o := r.inflight
	r.mu.Unlock()
	if o >= 0 {
		return o
	}
	return int(r.c.InFlight.Load())
}

// Stats snapshots the counters; every request counts as one SQE and one
// enter.
func (r *Recorder) Stats() uring.Stats {
	s := r.c.Snapshot()
	s.SQEs, s.Enters = s.Submitted, s.Submitted
	return s
}

// Features describes the Recorder.
func (r *Recorder) Features() uring.Features {
	return uring.Features{Backend: "recorder", Entries: r.entries, Ops: []string{"nop", "read", "write", "readv", "writev", "fsync"}}
}

// Close lifts a hold, completes everything accepted, and stops the
// completion goroutine.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed, r.held = true, false
	r.work.Broadcast()
	r.idle.Broadcast()
	r.mu.Unlock()
	<-r.done
	return nil
}

var _ uring.Ring = (*Recorder)(nil)
