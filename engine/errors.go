package engine

import "errors"

var (
	// ErrBusy means a volume opened for writing is already held: by
	// another process that writes it (an mpaged holding its lock, another
	// O_EXCL opener of the device) or by the kernel (mounted, directly or
	// through a loop device over the image).
	ErrBusy = errors.New("engine: volume in use")
	// ErrNotVolume means the path names neither an image file nor a block
	// device.
	ErrNotVolume = errors.New("engine: not an image file or block device")
	// ErrBackend means the ring backend asked for is unknown or not built
	// into this binary.
	ErrBackend = errors.New("engine: ring backend not available")
	// ErrConfig wraps a rejected Config.
	ErrConfig = errors.New("engine: invalid config")
)
