package ext

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Every error the package returns wraps one of these (or an
// engine error) with context: the inode, block or path it concerns, so
// callers test with errors.Is and humans read the rest.
var (
	// ErrCorrupt: on-disk metadata is inconsistent (bad magic, a checksum
	// mismatch, a pointer outside the volume, a malformed directory
	// entry). The message names the structure and its location.
	ErrCorrupt = errors.New("ext: corrupt file system")
	// ErrNotFound: a path component does not exist.
	ErrNotFound = errors.New("ext: no such file or directory")
	// ErrNotDir: a path component that must be a directory is not one.
	ErrNotDir = errors.New("ext: not a directory")
	// ErrIsDir: a file operation was asked of a directory.
	ErrIsDir = errors.New("ext: is a directory")
	// ErrUnsupported: the volume or inode uses a feature this package
	// cannot read (unknown INCOMPAT features, encryption, block sizes the
	// engine cannot page).
	ErrUnsupported = errors.New("ext: unsupported feature")
	// ErrReadOnly: a write was asked of a volume that is open read-only,
	// or read-write was asked of a volume that can only be read (unknown
	// RO_COMPAT features).
	ErrReadOnly = errors.New("ext: read-only volume")
	// ErrNeedsRecovery: the journal holds transactions not yet replayed,
	// and read-write access was asked for. Run e2fsck (or mount it with
	// the kernel driver once) first.
	ErrNeedsRecovery = errors.New("ext: journal needs recovery")
	// ErrInvalidPath: the path is malformed: not absolute, an empty, "."
	// or ".." component, a name longer than 255 bytes, a NUL byte.
	ErrInvalidPath = errors.New("ext: invalid path")
	// ErrLoop: resolving a path met too many symbolic links.
	ErrLoop = errors.New("ext: too many levels of symbolic links")
	// ErrNotRegular: the path names a device, FIFO or socket, whose bytes
	// do not live on the volume.
	ErrNotRegular = errors.New("ext: not a regular file")
	// ErrClosed: the volume or file has been closed.
	ErrClosed = errors.New("ext: closed")
	// ErrExist: the name to create is already taken.
	ErrExist = errors.New("ext: file exists")
	// ErrNotEmpty: a directory to remove still has entries.
	ErrNotEmpty = errors.New("ext: directory not empty")
	// ErrNoSpace: no free block or inode is left. It wraps
	// syscall.ENOSPC, so errors.Is(err, syscall.ENOSPC) holds too.
	ErrNoSpace = fmt.Errorf("ext: %w", syscall.ENOSPC)
	// ErrTooLarge: a file would grow past what its block map or the
	// volume's features can address. It wraps syscall.EFBIG.
	ErrTooLarge = fmt.Errorf("ext: %w", syscall.EFBIG)
	// ErrTooManyLinks: a directory would get more subdirectories than its
	// link count can record. It wraps syscall.EMLINK.
	ErrTooManyLinks = fmt.Errorf("ext: %w", syscall.EMLINK)
)
