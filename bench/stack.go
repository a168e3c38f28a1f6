package bench

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/fs/raw"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// Ring backend names the engine runners use.
const (
	backendNative    = uring.BackendNative
	backendSync      = uring.BackendSync
	backendIouringGo = "iouring-go"
)

// openIouringGo is set by ring_iouringgo.go when the iouring-go backend is
// compiled in (build tag iouringgo).
var openIouringGo func(uring.Options) (uring.Ring, error)

// stackOptions size the engine for a run.
type stackOptions struct {
	Backend    string
	CacheBytes int64
	// MaxBioVecs caps pages per Bio; 1 turns multipage Bios off.
	MaxBioVecs int
	// Depth is the most requests the workloads keep in flight: the ring's
	// size, and the sync ring's worker count.
	Depth int
	Write bool
	Logf  func(string, ...any)
}

// stack is the engine on a target: the device file (O_DIRECT), a ring, a
// frame pool whose arenas are registered as fixed buffers, the cache, the
// device, and a raw volume over all of it. close takes it down in reverse.
//
// It is the one place the harness assembles the engine (modelled on
// cmd/mpaged's openEngineVolume); package engine will replace it.
type stack struct {
	file   *os.File
	ring   uring.Ring
	handle uring.File
	pool   *alloc.FramePool
	stats  *mpage.Stats
	cache  *mpage.Cache
	dev    *mpage.Device
	vol    *raw.Volume
}

// openStack assembles the engine on t.
func openStack(t *Target, o stackOptions) (_ *stack, err error) {
	s := &stack{stats: new(mpage.Stats)}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	// One block a page: aligned for O_DIRECT on any device whose logical
	// blocks are at most a page (512-byte loop devices, 4 KiB zram and
	// 4Kn drives alike).
	const blockSize = mpage.PageSize
	if t.LogicalBlock > blockSize {
		return nil, fmt.Errorf("%w: engine: %s has %d-byte logical blocks, the engine pages at most %d", ErrUnavailable, t.Path, t.LogicalBlock, blockSize)
	}
	mode := os.O_RDONLY
	if o.Write {
		mode = os.O_RDWR
	}
	if s.file, err = os.OpenFile(t.Path, mode|unix.O_DIRECT, 0); err != nil {
		return nil, fmt.Errorf("engine: open %s with O_DIRECT: %w", t.Path, err)
	}
	if s.ring, err = openRing(o); err != nil {
		return nil, err
	}
	if err = s.openPool(o); err != nil {
		return nil, err
	}
	if s.handle, err = s.ring.RegisterFile(int(s.file.Fd())); err != nil {
		return nil, fmt.Errorf("engine: register %s: %w", t.Path, err)
	}
	if s.cache, err = mpage.NewCache(mpage.CacheConfig{Frames: s.pool, LimitBytes: o.CacheBytes, Stats: s.stats}); err != nil {
		return nil, err
	}
	if s.dev, err = mpage.NewDevice(mpage.DeviceConfig{Ring: s.ring, File: s.handle, Stats: s.stats, Frames: s.pool, MaxBioVecs: o.MaxBioVecs}); err != nil {
		return nil, err
	}
	size := t.DeviceSize &^ int64(blockSize-1)
	if s.vol, err = raw.Open(raw.Config{Device: s.dev, Cache: s.cache, Size: size, BlockSize: blockSize, Name: t.Path}); err != nil {
		return nil, err
	}
	return s, nil
}

// openRing starts the named backend, never falling back to another: a
// row labelled native must be native.
func openRing(o stackOptions) (uring.Ring, error) {
	opts := uring.Options{Entries: max(256, o.Depth), Workers: max(16, o.Depth), Logf: o.Logf}
	if o.Backend == backendIouringGo {
		if openIouringGo == nil {
			return nil, fmt.Errorf("%w: the iouring-go ring is not compiled in (build with -tags iouringgo)", ErrUnavailable)
		}
		return openIouringGo(opts)
	}
	r, err := uring.Open(o.Backend, opts)
	if errors.Is(err, uring.ErrUnavailable) {
		return nil, fmt.Errorf("%w: ring %s: %v", ErrUnavailable, o.Backend, err)
	}
	return r, err
}

// openPool maps frames for the cache plus what readahead and Bios in
// flight hold past its limit, in at most 64 arenas (the ring's registered
// buffer table), each registered as a fixed buffer where the ring can.
func (s *stack) openPool(o stackOptions) error {
	maxBytes := o.CacheBytes + 16<<20 + int64(o.Depth)*mpage.PageSize
	arena := int64(4 << 20)
	for maxBytes/arena > 64 {
		arena *= 2
	}
	maxBytes = (maxBytes + arena - 1) / arena * arena
	ring := s.ring
	var err error
	s.pool, err = alloc.NewFramePool(alloc.PoolConfig{
		ArenaBytes: int(arena), MaxBytes: maxBytes,
		OnArena: func(i int, mem []byte) error {
			if err := ring.RegisterBuffer(i, mem); err != nil && !errors.Is(err, uring.ErrNotSupported) {
				return err
			}
			return nil
		},
		Logf: o.Logf,
	})
	return err
}

// close takes the stack down, volume first.
func (s *stack) close() error {
	var errs []error
	if s.vol != nil {
		errs = append(errs, s.vol.Close())
	}
	if s.ring != nil {
		if s.handle.Valid() {
			errs = append(errs, s.ring.UnregisterFile(s.handle))
		}
		errs = append(errs, s.ring.Close())
	}
	if s.pool != nil {
		errs = append(errs, s.pool.Close())
	}
	if s.file != nil {
		errs = append(errs, s.file.Close())
	}
	return errors.Join(errs...)
}
