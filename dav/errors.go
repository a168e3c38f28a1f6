package dav

import (
	"errors"
	"fmt"

	"github.com/mpaged/mpaged/fs/ext"
)

var (
	// ErrShortBody: a PUT body ended before the length its request
	// declared (or ran past it); nothing was replaced.
	ErrShortBody = errors.New("dav: the request body does not have the declared length")
	// ErrHidden: the path names the volume's staging directory, which
	// WebDAV neither lists nor lets anyone reach. It wraps ext.ErrHidden,
	// the volume's refusal of a path that reaches the directory through a
	// symbolic link, and both are answered alike.
	ErrHidden = fmt.Errorf("dav: the staging directory is not served: %w", ext.ErrHidden)
	// ErrRootRemoval: a DELETE or an overwriting MOVE/COPY named the root
	// of the volume.
	ErrRootRemoval = errors.New("dav: the root collection cannot be removed")
	// ErrInPlaceWrite: a File opened without O_TRUNC was written to; the
	// FileSystem only replaces whole files (atomically).
	ErrInPlaceWrite = errors.New("dav: files are replaced whole; open with O_TRUNC to write")
	// ErrNotReadable: a read, seek or listing was asked of a file that
	// cannot give it (a file being written, or a directory's bytes).
	ErrNotReadable = errors.New("dav: not readable this way")
)
