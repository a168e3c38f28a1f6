package crashring

import "errors"

var (
	// ErrNoFile means Cut found no tracked file, or the file asked for is
	// not tracked.
	ErrNoFile = errors.New("crashring: no tracked file")
	// ErrAmbiguous means Cut was asked for "the" file while several are
	// tracked; CutFile names one.
	ErrAmbiguous = errors.New("crashring: several tracked files")
)
