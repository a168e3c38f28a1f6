package alloc

import "errors"

var (
	// ErrNoFrames means a FramePool cannot hand out a frame: every frame is
	// in use and mapping another arena would pass MaxBytes, or the kernel
	// refused the mapping (the mmap errno is wrapped too).
	ErrNoFrames = errors.New("alloc: no free page frames")
	// ErrFramesInUse is returned by FramePool.Close while frames are still
	// out; the arenas stay mapped so those frames remain valid.
	ErrFramesInUse = errors.New("alloc: frames still in use")
	// ErrClosed is returned by FramePool.Get after Close.
	ErrClosed = errors.New("alloc: pool closed")
	// ErrInvalidConfig wraps a rejected PoolConfig.
	ErrInvalidConfig = errors.New("alloc: invalid config")
	// ErrPSIUnavailable means the pressure file cannot be read (no PSI in
	// the kernel, psi=0 on the command line, no cgroup v2). Pressure input
	// is optional: callers log it and run without.
	ErrPSIUnavailable = errors.New("alloc: PSI unavailable")
	// ErrBadPSI wraps a parse failure of PSI text.
	ErrBadPSI = errors.New("alloc: malformed PSI data")
)
