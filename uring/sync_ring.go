package uring

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SyncRing carries requests with preadv/pwritev on a pool of worker
// goroutines. It is the fallback where io_uring cannot be set up; it keeps
// the Ring contract (whole transfers, retries, one completion each) so the
// engine above cannot tell the difference except by speed.
type SyncRing struct {
	opts   Options
	timing bool

	mu      sync.Mutex
	cond    sync.Cond // signalled when work is queued or closing begins
	queue   Queue     // accepted, not yet picked up by a worker
	closing bool
	busy    int // requests inside a worker

	done chan struct{} // closed when every worker has exited
	c    Counters
}

// NewSync starts Options.Workers (default 16) workers.
func NewSync(opts Options) *SyncRing {
	n := opts.Workers
	if n <= 0 {
		n = 16
	}
	s := &SyncRing{opts: opts, timing: opts.Timing, done: make(chan struct{})}
	s.cond.L = &s.mu
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work()
		}()
	}
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return s
}

// Submit queues the requests for the workers.
// As the Ring contract says, an invalid request refuses itself and those
// after it; the ones before it are accepted.
func (s *SyncRing) Submit(reqs ...*Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrClosed
	}
	var err error
	n := 0
	for _, r := range reqs {
		if err = r.validate(); err != nil {
			break
		}
		s.c.Accept(r, s.timing)
		s.queue.Push(r)
		n++
	}
	if n == 1 {
		s.cond.Signal()
	} else if n > 1 {
		s.cond.Broadcast()
	}
	return err
}

func (s *SyncRing) work() {
	// Each worker owns one iovec array, so building a vectored call never
	// allocates; the kernel reads it only during the syscall.
	var iov [MaxVecs]unix.Iovec
	var scratch [MaxVecs][]byte
	for {
		s.mu.Lock()
		for s.queue.Len() == 0 && !s.closing {
			s.cond.Wait()
		}
		r := s.queue.Pop()
		if r == nil { // closing and nothing left
			s.mu.Unlock()
			return
		}
		s.busy++
		s.mu.Unlock()

		res, err := s.do(r, &iov, &scratch)
		s.mu.Lock()
		s.busy--
		s.mu.Unlock()
		s.c.Finish(r, res, err, s.timing)
	}
}

// do performs r to completion: short transfers continue where they stopped,
// EINTR and EAGAIN retry.
func (s *SyncRing) do(r *Request, iov *[MaxVecs]unix.Iovec, scratch *[MaxVecs][]byte) (int, error) {
	fd := r.File.Fd()
	switch r.Op {
	case OpNop:
		return 0, nil
	case OpFsync:
		for retries := 0; ; retries++ {
			s.c.Enters.Add(1)
			var err error
			if r.Flags&FlagDatasync != 0 {
				err = unix.Fdatasync(fd)
			} else {
				err = unix.Fsync(fd)
			}
			if retryable(err) && retries < maxRetries {
				s.c.Retries.Add(1)
				continue
			}
			return 0, Errno(err)
		}
	}
	want := r.Len()
	done, zeroWrites, retries := 0, 0, 0
	for done < want {
		vecs, off := Remaining(r, done, scratch[:])
		n := fillIovecs(iov[:], vecs)
		s.c.Enters.Add(1)
		s.c.SQEs.Add(1)
		got, err := rawVectored(r.Op.IsWrite(), fd, iov[:n], off)
		switch {
		case retryable(err) && retries < maxRetries:
			retries++
			s.c.Retries.Add(1)
			if err == unix.EAGAIN {
				// A non-blocking descriptor has nothing yet; yield
				// instead of spinning on the CPU.
				time.Sleep(50 * time.Microsecond)
			}
			continue
		case err != nil:
			return done, Errno(err)
		case got == 0 && !r.Op.IsWrite():
			return done, nil // end of file
		case got == 0:
			if zeroWrites++; zeroWrites >= maxZeroWrites {
				return done, ErrShortWrite
			}
			continue
		}
		done += got
		if done < want {
			s.c.Resubmits.Add(1)
		}
	}
	return done, nil
}

// fillIovecs fills iov for vecs and returns how many entries it used:
// vecs that follow each other in memory (a Bio's page frames, taken from
// one arena in order) become one entry, so the kernel pins one range of
// user pages instead of one page at a time.
func fillIovecs(iov []unix.Iovec, vecs [][]byte) int {
	n := 0
	var end uintptr
	for _, v := range vecs {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
		if n > 0 && len(v) > 0 && base == end {
			iov[n-1].Len += uint64(len(v))
		} else {
			iov[n].Base = unsafe.SliceData(v)
			iov[n].SetLen(len(v))
			n++
		}
		end = base + uintptr(len(v))
	}
	return n
}

// rawVectored issues one preadv/pwritev (readv/writev at OffsetCurrent)
// without the allocation x/sys's [][]byte wrappers make.
func rawVectored(write bool, fd int, iov []unix.Iovec, off int64) (int, error) {
	var trap uintptr
	switch {
	case write && off == OffsetCurrent:
		trap = unix.SYS_WRITEV
	case write:
		trap = unix.SYS_PWRITEV
	case off == OffsetCurrent:
		trap = unix.SYS_READV
	default:
		trap = unix.SYS_PREADV
	}
	// On 64-bit Linux the kernel combines pos_l and pos_h, taking the whole
	// offset from pos_l.
	n, _, e := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)), uintptr(off), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func retryable(err error) bool { return err == unix.EINTR || err == unix.EAGAIN }

// Errno returns the syscall.Errno inside err itself, so completions carry a
// bare errno (errors.Is(err, syscall.EIO) and == both work), or err as it
// is when there is none. Backends outside this package use it too.
func Errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return err
}

// RegisterFile returns a plain descriptor handle: there is no table here.
func (s *SyncRing) RegisterFile(fd int) (File, error) {
	if fd < 0 {
		return File{}, fmt.Errorf("%w: fd %d", ErrInvalid, fd)
	}
	return MakeFile(fd, -1), nil
}

// UnregisterFile has nothing to undo.
func (s *SyncRing) UnregisterFile(File) error { return nil }

// RegisterBuffer is not supported: a syscall reads memory in place.
func (s *SyncRing) RegisterBuffer(int, []byte) error { return ErrNotSupported }

// InFlight counts accepted requests not yet completed.
func (s *SyncRing) InFlight() int { return int(s.c.InFlight.Load()) }

// Stats snapshots the counters; Enters counts syscalls.
func (s *SyncRing) Stats() Stats { return s.c.Snapshot() }

// Features describes the sync backend.
func (s *SyncRing) Features() Features {
	n := s.opts.Workers
	if n <= 0 {
		n = 16
	}
	return Features{Backend: "sync", Entries: n, Ops: []string{"nop", "read", "write", "readv", "writev", "fsync"}}
}

// Close stops accepting requests and waits for the workers to finish every
// accepted one. A worker blocked in a syscall cannot be interrupted: after
// Options.DrainTimeout the queued requests that no worker has picked up are
// completed with ECANCELED and Close returns an error naming how many are
// still inside a syscall; they complete when the syscall returns.
func (s *SyncRing) Close() error {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.cond.Broadcast()
	s.mu.Unlock()
	if already {
		<-s.done
		return nil
	}
	if s.opts.DrainTimeout <= 0 {
		<-s.done
		return nil
	}
	t := time.NewTimer(s.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-s.done:
		return nil
	case <-t.C:
	}
	s.mu.Lock()
	var cancelled Queue
	cancelled.TakeAll(&s.queue)
	busy := s.busy
	s.mu.Unlock()
	for r := cancelled.Pop(); r != nil; r = cancelled.Pop() {
		s.c.Cancelled.Add(1)
		s.c.Finish(r, 0, syscall.ECANCELED, s.timing)
	}
	if busy > 0 {
		return fmt.Errorf("uring: sync close: %d requests still blocked in a syscall after %v", busy, s.opts.DrainTimeout)
	}
	<-s.done
	return nil
}
