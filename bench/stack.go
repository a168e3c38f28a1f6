package bench

import (
	"errors"
	"fmt"
	"slices"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/raw"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// Ring backend names the engine runners use.
const (
	backendNative    = uring.BackendNative
	backendSync      = uring.BackendSync
	backendIouringGo = engine.BackendIouringGo
)

// backendAvailable reports whether this binary has the ring backend (the
// iouring-go ring needs the iouringgo build tag).
func backendAvailable(backend string) error {
	if !slices.Contains(engine.Backends(), backend) {
		return fmt.Errorf("%w: the %s ring is not compiled in (build with -tags iouringgo)", ErrUnavailable, backend)
	}
	return nil
}

// stackOptions size the engine for a run.
type stackOptions struct {
	Backend    string
	CacheBytes int64
	// MaxBioVecs caps pages per Bio; 1 turns multipage Bios off.
	MaxBioVecs int
	// Depth is the most requests the workloads keep in flight: the ring's
	// size.
	Depth int
	Write bool
	Logf  func(string, ...any)
}

// stack is the engine on a target (package engine: the device with
// O_DIRECT, held exclusively when written; the ring; frames registered as
// fixed buffers; the cache; the mpage.Device) and a raw volume over it.
type stack struct {
	eng *engine.Engine
	vol *raw.Volume
}

// openStack assembles the engine on t and a raw volume over the whole
// device, one block a page: aligned for O_DIRECT on any device whose
// logical blocks are at most a page (512-byte loop devices, 4 KiB zram and
// 4Kn drives alike).
func openStack(t *Target, o stackOptions) (*stack, error) {
	e, err := engine.Open(engine.Config{Path: t.Path, Write: o.Write, Backend: o.Backend, RingEntries: max(256, o.Depth),
		CacheBytes: o.CacheBytes, MaxBioVecs: o.MaxBioVecs, Logf: o.Logf})
	if errors.Is(err, engine.ErrBackend) {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil {
		return nil, err
	}
	if !e.Info.Direct || e.Info.SectorSize > mpage.PageSize {
		err := fmt.Errorf("%w: engine: %s: O_DIRECT %v with %d-byte sectors; the bench compares direct I/O in pages", ErrUnavailable, t.Path, e.Info.Direct, e.Info.SectorSize)
		return nil, errors.Join(err, e.Close())
	}
	vol, err := raw.Open(raw.Config{Device: e.Device, Cache: e.Cache, Size: e.Info.Size &^ (mpage.PageSize - 1), BlockSize: mpage.PageSize, Name: t.Path})
	if err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return &stack{eng: e, vol: vol}, nil
}

// close takes the volume down, then the engine.
func (s *stack) close() error { return errors.Join(s.vol.Close(), s.eng.Close()) }
