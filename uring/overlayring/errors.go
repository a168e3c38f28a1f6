package overlayring

import "errors"

// ErrOverlay: an overlay handed to NewOverlay or Show is malformed (block
// data of the wrong size, blocks out of order or repeated, a second Show).
var ErrOverlay = errors.New("overlayring: invalid overlay")
