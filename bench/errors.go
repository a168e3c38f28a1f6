package bench

import "errors"

var (
	// ErrConfig: a flag or Config field is out of range or names an
	// unknown workload, runner, format or target kind.
	ErrConfig = errors.New("bench: bad config")
	// ErrDestroyData: the run would write to a device or file the harness
	// did not create, and Config.DestroyData is not set.
	ErrDestroyData = errors.New("bench: writes to a target the harness did not create need --destroy-data")
	// ErrUnavailable: a runner or target cannot run on this host (no fio,
	// no zram, no io_uring, a backend not compiled in).
	ErrUnavailable = errors.New("bench: unavailable on this host")
	// ErrRunner: a runner failed during a run (fio exited non-zero, an I/O
	// error in the engine).
	ErrRunner = errors.New("bench: runner failed")
)
