package dav

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"golang.org/x/net/webdav"

	"github.com/mpaged/mpaged/fs/ext"
)

// FS is a webdav.FileSystem over one ext volume. Names are the cleaned,
// absolute paths webdav hands it; the staging directory is neither listed
// nor reachable. Errors are *fs.PathError: a missing name (or a missing
// directory on the way) wraps fs.ErrNotExist, a taken one fs.ErrExist, a
// refused write fs.ErrPermission, so that x/net/webdav (which tests them
// with os.IsNotExist and friends) picks its statuses; any other error of
// the volume is wrapped as it is and also noted on the request (see
// Handler), which answers with the volume's status (507, 500).
type FS struct {
	vol   *ext.Volume
	props *propStore
}

// NewFS serves vol over WebDAV.
func NewFS(vol *ext.Volume) *FS {
	return &FS{vol: vol, props: newPropStore()}
}

var _ webdav.FileSystem = (*FS)(nil)

// clean is the volume path webdav's name stands for: webdav strips its
// prefix but leaves cleaning to the FileSystem (a COPY's Destination may
// end in "/"). Request paths with ".." never get here (Handler refuses
// them); a name that had one still cannot climb above the root.
func clean(name string) string { return path.Clean("/" + name) }

// hidden reports whether name, as spelled, is the staging directory or
// inside it; the volume refuses every other way into it (ext.ErrHidden).
func hidden(name string) bool { return ext.IsStagingPath(name) }

// fail turns a volume error into the *fs.PathError webdav expects and
// notes the volume's own failures on the request.
func (fsys *FS) fail(ctx context.Context, op, name string, err error) error {
	var kind error
	switch {
	case errors.Is(err, ext.ErrHidden):
		// Before fs.ErrPermission, which the volume's ErrHidden (EACCES)
		// also matches: a read of the hidden directory finds nothing.
		kind = fs.ErrPermission
		if !isWriteOp(op) {
			kind = fs.ErrNotExist
		}
	case errors.Is(err, ext.ErrNotFound), errors.Is(err, ext.ErrNotDir), errors.Is(err, fs.ErrNotExist):
		kind = fs.ErrNotExist
	case errors.Is(err, ext.ErrExist), errors.Is(err, fs.ErrExist):
		kind = fs.ErrExist
	case errors.Is(err, ext.ErrReadOnly), errors.Is(err, fs.ErrPermission),
		errors.Is(err, ErrRootRemoval), errors.Is(err, ErrInPlaceWrite):
		kind = fs.ErrPermission
	}
	noteErr(ctx, err)
	if kind != nil {
		// os.IsNotExist and friends look only one PathError deep, at the
		// bare sentinel: the cause is in the request's log line instead.
		return &fs.PathError{Op: op, Path: name, Err: kind}
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func isWriteOp(op string) bool {
	switch op {
	case "mkdir", "create", "removeall", "rename":
		return true
	}
	return false
}

// Mkdir makes a directory (MKCOL, and COPY of a collection).
func (fsys *FS) Mkdir(ctx context.Context, name string, perm os.FileMode) error {
	name = clean(name)
	if hidden(name) {
		return fsys.fail(ctx, "mkdir", name, ErrHidden)
	}
	if err := fsys.vol.Mkdir(name, modeOf(perm)); err != nil {
		return fsys.fail(ctx, "mkdir", name, err)
	}
	return nil
}

// modeOf is the permission a new file or directory gets: what webdav asks
// (0666, 0777, a copied file's bits) less group and other write, as a
// umask of 022 would.
func modeOf(perm os.FileMode) fs.FileMode { return perm.Perm() &^ 0o022 }

// Stat describes name, following symbolic links.
func (fsys *FS) Stat(ctx context.Context, name string) (os.FileInfo, error) {
	name = clean(name)
	if hidden(name) {
		return nil, fsys.fail(ctx, "stat", name, ErrHidden)
	}
	fi, err := fsys.vol.Stat(name)
	if err != nil {
		return nil, fsys.fail(ctx, "stat", name, err)
	}
	return newFileInfo(name, fi), nil
}

// OpenFile opens name as webdav asks: for reading (GET, PROPFIND, a COPY's
// source), for reading and patching its dead properties (O_RDWR, as
// PROPPATCH opens), or to replace it whole (O_TRUNC, as PUT, COPY and
// LOCK of a new name open). A replacement is staged and renamed into place
// only when its writer closes after a complete body (putFile).
func (fsys *FS) OpenFile(ctx context.Context, name string, flag int, perm os.FileMode) (webdav.File, error) {
	name = clean(name)
	write := flag&(os.O_WRONLY|os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC) != 0
	if hidden(name) {
		op := "open"
		if write {
			op = "create"
		}
		return nil, fsys.fail(ctx, op, name, ErrHidden)
	}
	if write {
		if ro, why := fsys.vol.ReadOnly(); ro {
			return nil, fsys.fail(ctx, "create", name, fmt.Errorf("%w: %s", ext.ErrReadOnly, why))
		}
	}
	replace := flag&os.O_TRUNC != 0
	if !replace && flag&os.O_CREATE != 0 {
		if _, err := fsys.vol.Stat(name); errors.Is(err, ext.ErrNotFound) {
			replace = true
		}
	}
	if replace {
		return fsys.openPut(ctx, name, flag, perm)
	}
	return fsys.openRead(ctx, name, write)
}

// openRead opens a file or a directory for reading.
func (fsys *FS) openRead(ctx context.Context, name string, patchable bool) (webdav.File, error) {
	f, err := fsys.vol.OpenFile(name)
	if errors.Is(err, ext.ErrIsDir) {
		fi, err := fsys.vol.Stat(name)
		if err != nil {
			return nil, fsys.fail(ctx, "open", name, err)
		}
		return &dirFile{heldProps: heldProps{fsys: fsys, fi: fi}, ctx: ctx, name: name}, nil
	}
	if err != nil {
		return nil, fsys.fail(ctx, "open", name, err)
	}
	return &readFile{heldProps: heldProps{fsys: fsys, fi: f.Stat()}, ctx: ctx, name: name, f: f}, nil
}

// openPut starts the replacement of name. The target must not be a
// directory and its parent must be one, checked here so that PUT answers
// at once (409 for a missing parent) before the body is read.
func (fsys *FS) openPut(ctx context.Context, name string, flag int, perm os.FileMode) (webdav.File, error) {
	if flag&os.O_EXCL != 0 {
		if _, err := fsys.vol.Lstat(name); err == nil {
			return nil, fsys.fail(ctx, "create", name, ext.ErrExist)
		}
	}
	var old *propKey
	switch fi, err := fsys.vol.Stat(name); {
	case err == nil && fi.IsDir():
		return nil, fsys.fail(ctx, "create", name, ext.ErrIsDir)
	case err == nil:
		k := keyOf(fi)
		old = &k
	case errors.Is(err, ext.ErrNotFound):
		dfi, derr := fsys.vol.Stat(path.Dir(name))
		if derr != nil {
			return nil, fsys.fail(ctx, "create", name, derr)
		}
		if !dfi.IsDir() {
			return nil, fsys.fail(ctx, "create", name, ext.ErrNotDir)
		}
	default:
		return nil, fsys.fail(ctx, "create", name, err)
	}
	return newPutFile(fsys, ctx, name, modeOf(perm), old), nil
}

// RemoveAll removes name and, for a directory, everything under it, as
// os.RemoveAll: a missing name is no error. Symbolic links are removed,
// never followed. The root cannot be removed.
func (fsys *FS) RemoveAll(ctx context.Context, name string) error {
	name = clean(name)
	switch {
	case name == "/":
		return fsys.fail(ctx, "removeall", name, ErrRootRemoval)
	case hidden(name):
		return fsys.fail(ctx, "removeall", name, ErrHidden)
	}
	if fsys.replacedLater(ctx, name) {
		return nil
	}
	if err := fsys.removeTree(name); err != nil {
		return fsys.fail(ctx, "removeall", name, err)
	}
	return nil
}

// replacedLater reports whether name is the destination of ctx's COPY or
// MOVE and will be replaced in one step by what comes next: webdav removes
// an existing destination before it renames or copies onto it, so a
// failure in between (a MOVE whose source is gone, a COPY that runs out of
// space) would lose it. When the destination is a regular file and the
// source not a directory, Rename and ReplaceFile replace it atomically
// themselves, so its removal is left to them. Anything else (a directory
// on either side, two links of one inode) is removed first, as RFC 4918
// describes.
func (fsys *FS) replacedLater(ctx context.Context, name string) bool {
	st := stateOf(ctx)
	if st == nil || st.dst != name || st.src == "" {
		return false
	}
	dfi, err := fsys.vol.Lstat(name)
	if err != nil || dfi.Type != ext.TypeRegular {
		return false
	}
	stat := fsys.vol.Lstat // MOVE renames a link itself
	if st.verb == "COPY" {
		stat = fsys.vol.Stat // COPY reads through it
	}
	sfi, err := stat(st.src)
	switch {
	case errors.Is(err, ext.ErrNotFound):
		return st.verb == "MOVE" // the rename fails; the file stays
	case err != nil, sfi.IsDir(), keyOf(sfi) == keyOf(dfi):
		return false
	}
	return true
}

// removeTree removes name depth first, and the dead properties of what it
// removes.
func (fsys *FS) removeTree(name string) error {
	fi, err := fsys.vol.Lstat(name)
	if errors.Is(err, ext.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if err := fsys.vol.Unlink(name); err != nil {
			return err
		}
		fsys.props.drop(keyOf(fi))
		return nil
	}
	ents, err := fsys.vol.ReadDir(name)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := fsys.removeTree(path.Join(name, e.Name)); err != nil {
			return err
		}
	}
	if err := fsys.vol.Rmdir(name); err != nil {
		return err
	}
	fsys.props.drop(keyOf(fi))
	return nil
}

// Rename moves oldName to newName as rename(2) (MOVE; webdav has already
// removed an existing destination when Overwrite allowed it). The inode
// moves, so its dead properties follow it.
func (fsys *FS) Rename(ctx context.Context, oldName, newName string) error {
	oldName, newName = clean(oldName), clean(newName)
	if hidden(oldName) || hidden(newName) {
		return fsys.fail(ctx, "rename", oldName, ErrHidden)
	}
	if oldName == "/" || newName == "/" {
		return fsys.fail(ctx, "rename", oldName, ErrRootRemoval)
	}
	var replaced *propKey
	if fi, err := fsys.vol.Lstat(newName); err == nil {
		// A rename onto another link of the same inode changes nothing.
		if src, serr := fsys.vol.Lstat(oldName); serr != nil || keyOf(src) != keyOf(fi) {
			k := keyOf(fi)
			replaced = &k
		}
	}
	if err := fsys.vol.Rename(oldName, newName); err != nil {
		return fsys.fail(ctx, "rename", oldName, err)
	}
	if replaced != nil {
		fsys.props.drop(*replaced)
	}
	return nil
}
