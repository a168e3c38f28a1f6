package ext

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
)

// Sentinel errors. Every error the package returns wraps one of these (or an
// engine error) with context: the inode, block or path it concerns, so
// callers test with errors.Is and humans read the rest. Where a sentinel
// has a POSIX counterpart it wraps that syscall.Errno (and so matches the
// io/fs errors the errno matches: ErrNotFound is fs.ErrNotExist, ErrExist
// and ErrNotEmpty are fs.ErrExist), so a server maps them to statuses and
// an io/fs caller tests them the usual way.
var (
	// ErrCorrupt: on-disk metadata is inconsistent (a checksum mismatch,
	// a pointer outside the volume, a malformed directory entry, an inode
	// with an impossible mode). The message names the structure and its
	// location.
	ErrCorrupt = errors.New("ext: corrupt file system")
	// ErrNotExt: the device holds no ext2/3/4 file system at all: it is
	// too small to hold a superblock, or the superblock's magic is wrong.
	ErrNotExt = errors.New("ext: not an ext2/3/4 volume")
	// ErrNotFound: a path component does not exist (ENOENT).
	ErrNotFound = fmt.Errorf("ext: %w", syscall.ENOENT)
	// ErrNotDir: a path component that must be a directory is not one
	// (ENOTDIR).
	ErrNotDir = fmt.Errorf("ext: %w", syscall.ENOTDIR)
	// ErrIsDir: a file operation was asked of a directory (EISDIR).
	ErrIsDir = fmt.Errorf("ext: %w", syscall.EISDIR)
	// ErrUnsupported: the volume or inode uses a feature this package
	// cannot read (unknown INCOMPAT features, encryption, block sizes the
	// engine cannot page). It matches errors.ErrUnsupported.
	ErrUnsupported = &sentinel{"ext: unsupported feature", []error{errors.ErrUnsupported}}
	// ErrReadOnly: a write was asked of a volume that is open read-only,
	// or read-write was asked of a volume that can only be read (unknown
	// RO_COMPAT features). It wraps EROFS.
	ErrReadOnly = &sentinel{"ext: read-only volume", []error{syscall.EROFS}}
	// ErrNeedsRecovery: the journal holds transactions not yet replayed
	// and a read-write open could not replay them: the journal is on an
	// external device, or recovery failed (the wrapped jbd2 error says
	// why). Run e2fsck (or mount it with the kernel driver once) first.
	ErrNeedsRecovery = errors.New("ext: journal needs recovery")
	// ErrUnclean: read-write access was asked for a volume whose
	// superblock says it was not cleanly unmounted (or has recorded
	// errors), and Config.AllowUnclean was not set.
	ErrUnclean = errors.New("ext: volume was not cleanly unmounted (run e2fsck -p)")
	// ErrJournalAborted: a journal commit or checkpoint failed part-way
	// (the wrapped error says how); nothing commits again, writes fail,
	// and the volume stays marked needs_recovery for the next open (or
	// e2fsck) to replay what the log holds. It wraps EIO.
	ErrJournalAborted = &sentinel{"ext: journal aborted", []error{syscall.EIO}}
	// ErrSectorSize: the device's logical blocks (Config.SectorSize) are
	// larger than the file system's blocks, so direct I/O cannot address
	// single blocks; or SectorSize itself is not one the engine can use.
	ErrSectorSize = errors.New("ext: file system block size and device logical block size do not fit")
	// ErrInvalidPath: the path is malformed: not absolute, an empty, "."
	// or ".." component, a name longer than 255 bytes, a NUL byte. It
	// wraps EINVAL and matches fs.ErrInvalid.
	ErrInvalidPath = &sentinel{"ext: invalid path", []error{syscall.EINVAL, fs.ErrInvalid}}
	// ErrLoop: resolving a path met too many symbolic links (ELOOP).
	ErrLoop = fmt.Errorf("ext: %w", syscall.ELOOP)
	// ErrNotSymlink: Readlink of something else. It wraps EINVAL and
	// matches fs.ErrInvalid, as readlink(2) and os.Readlink do.
	ErrNotSymlink = &sentinel{"ext: not a symbolic link", []error{syscall.EINVAL, fs.ErrInvalid}}
	// ErrNotRegular: the path names a device, FIFO or socket, whose bytes
	// do not live on the volume.
	ErrNotRegular = errors.New("ext: not a regular file")
	// ErrClosed: the volume or file has been closed. It matches
	// fs.ErrClosed.
	ErrClosed = &sentinel{"ext: closed", []error{fs.ErrClosed}}
	// ErrExist: the name to create is already taken (EEXIST).
	ErrExist = fmt.Errorf("ext: %w", syscall.EEXIST)
	// ErrNotEmpty: a directory to remove or replace still has entries
	// (ENOTEMPTY).
	ErrNotEmpty = fmt.Errorf("ext: %w", syscall.ENOTEMPTY)
	// ErrBusy: the root directory cannot be renamed or replaced (EBUSY,
	// as for a mount point).
	ErrBusy = fmt.Errorf("ext: %w", syscall.EBUSY)
	// ErrIntoItself: a directory would move into its own subtree
	// (EINVAL).
	ErrIntoItself = &sentinel{"ext: cannot move a directory into itself", []error{syscall.EINVAL}}
	// ErrHidden: a path reached StagingDir, or named it as an entry of the
	// root, other than by spelling it: through a symbolic link (at any
	// component, absolute or relative target). Only the literal path
	// "/.mpaged-staging..." reaches the staging directory, so a server
	// that refuses that spelling (IsStagingPath) keeps every client out of
	// it. It wraps EACCES.
	ErrHidden = &sentinel{"ext: a symbolic link leads into the staging directory", []error{syscall.EACCES}}
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

// sentinel is a sentinel error with a message of its own that also
// matches the errors in also (a syscall errno, an io/fs error).
type sentinel struct {
	msg  string
	also []error
}

func (e *sentinel) Error() string   { return e.msg }
func (e *sentinel) Unwrap() []error { return e.also }

// detailed is an error whose whole message is its own, wrapping a
// sentinel whose text it already says in other words ("1000 bytes is too
// small to be an ext2/3/4 volume" is ErrNotExt).
type detailed struct {
	msg string
	err error
}

func (e *detailed) Error() string { return e.msg }
func (e *detailed) Unwrap() error { return e.err }
