package crashring

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/uring"
)

// Config configures a crash ring.
type Config struct {
	// SectorSize is the unit a device writes atomically, the unit a torn
	// write is torn at (default 512).
	SectorSize int
	// NoTear keeps every pending write whole or absent in a cut.
	NoTear bool
	// BeforeFlush, if set, runs on the submitter's goroutine when a flush
	// of a tracked file is submitted, before the ring records or forwards
	// it: the moment the most writes are pending, where a test cuts
	// (CutFile(fd, ...)) to catch what a sync leaves half done.
	BeforeFlush func(fd int)
}

// Stats count what the ring tracked.
type Stats struct {
	Writes  int64 // writes recorded on tracked files
	Flushes int64 // successful flushes of tracked files
	Durable int64 // writes made durable by those flushes
	Dropped int64 // failed writes dropped at a flush
	Pending int   // writes since the last flush, now
}

// Ring is a uring.Ring whose tracked files can be cut (see the package
// doc).
type Ring struct {
	inner       uring.Ring
	sector      int
	noTear      bool
	beforeFlush func(fd int)

	mu    sync.Mutex
	files map[int]*tracked // by fd
	seq   uint64           // completions of tracked writes, in order

	writes, flushes, durable, dropped atomic.Int64
}

// tracked is one file's durable shadow and its writes since the last
// flush. Guarded by Ring.mu.
type tracked struct {
	durable []byte
	pending []*write
}

// writeState is where a recorded write is.
type writeState uint8

const (
	inFlight writeState = iota
	completed
	failed
)

// write is one recorded write: its bytes as submitted.
type write struct {
	off   int64
	data  []byte
	state writeState
	seq   uint64 // completion order, when completed
	gone  bool   // a flush took it: applied to the shadow, or dropped
}

// New wraps inner.
func New(inner uring.Ring, cfg Config) *Ring {
	sector := cfg.SectorSize
	if sector <= 0 {
		sector = 512
	}
	return &Ring{inner: inner, sector: sector, noTear: cfg.NoTear, beforeFlush: cfg.BeforeFlush, files: make(map[int]*tracked)}
}

// Inner is the wrapped ring.
func (c *Ring) Inner() uring.Ring { return c.inner }

// RegisterFile registers fd with the inner ring and, for a regular file or
// block device, starts tracking it: its current content is the durable
// shadow.
func (c *Ring) RegisterFile(fd int) (uring.File, error) {
	h, err := c.inner.RegisterFile(fd)
	if err != nil {
		return h, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return h, fmt.Errorf("crashring: fd %d: %w", fd, err)
	}
	if kind := st.Mode & unix.S_IFMT; kind != unix.S_IFREG && kind != unix.S_IFBLK {
		return h, nil // a pipe or socket: nothing a power cut keeps
	}
	shadow, err := readWhole(fd)
	if err != nil {
		_ = c.inner.UnregisterFile(h)
		return uring.File{}, err
	}
	c.mu.Lock()
	c.files[fd] = &tracked{durable: shadow}
	c.mu.Unlock()
	return h, nil
}

// readWhole reads the file behind fd through a descriptor of its own (fd
// may be O_DIRECT, which wants aligned buffers, and its position must not
// move).
func readWhole(fd int) ([]byte, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return nil, fmt.Errorf("crashring: reopen fd %d: %w", fd, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("crashring: fd %d: size: %w", fd, err)
	}
	shadow := make([]byte, size)
	if _, err := f.ReadAt(shadow, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("crashring: fd %d: read the durable shadow: %w", fd, err)
	}
	return shadow, nil
}

// UnregisterFile forwards to the inner ring. The file's tracking stays, so
// a cut can still be taken after the engine has closed it.
func (c *Ring) UnregisterFile(h uring.File) error { return c.inner.UnregisterFile(h) }

// RegisterBuffer forwards to the inner ring.
func (c *Ring) RegisterBuffer(i int, mem []byte) error { return c.inner.RegisterBuffer(i, mem) }

// InFlight is the inner ring's.
func (c *Ring) InFlight() int { return c.inner.InFlight() }

// Stats are the inner ring's.
func (c *Ring) Stats() uring.Stats { return c.inner.Stats() }

// Features are the inner ring's, marked as wrapped.
func (c *Ring) Features() uring.Features {
	ft := c.inner.Features()
	ft.Backend = "crash(" + ft.Backend + ")"
	return ft
}

// Close closes the inner ring, which drains or cancels what is in flight.
func (c *Ring) Close() error { return c.inner.Close() }

// CrashStats counts what the ring tracked.
func (c *Ring) CrashStats() Stats {
	c.mu.Lock()
	pending := 0
	for _, f := range c.files {
		pending += len(f.pending)
	}
	c.mu.Unlock()
	return Stats{Writes: c.writes.Load(), Flushes: c.flushes.Load(), Durable: c.durable.Load(),
		Dropped: c.dropped.Load(), Pending: pending}
}
