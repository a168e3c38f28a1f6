package raw

import (
	"errors"
	"fmt"

	"github.com/mpaged/mpaged/mpage"
)

var (
	// ErrConfig: Config is incomplete or inconsistent (no Device or Cache,
	// a block size the engine cannot page, a size that is not a whole
	// number of blocks).
	ErrConfig = errors.New("raw: bad config")
	// ErrRange: an offset or length outside the device. It wraps
	// mpage.ErrRange, so errors.Is(err, mpage.ErrRange) holds too.
	ErrRange = fmt.Errorf("raw: %w", mpage.ErrRange)
	// ErrClosed: the volume has been closed.
	ErrClosed = errors.New("raw: closed")
)
