package ext

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"sync"
	"time"
)

// FS is a Volume seen through io/fs, for reading: Go's path rules
// (unrooted "a/b", "." the root, fs.ValidPath), errors as *fs.PathError
// naming the io/fs path and matching fs.ErrNotExist, fs.ErrInvalid,
// fs.ErrClosed and the rest through errors.Is. Symbolic links are
// followed as the volume follows them (an absolute target starts at the
// volume's root) by Open, Stat, ReadDir and ReadFile; Lstat and ReadLink
// (fs.ReadLinkFS) describe a link itself, and directory entries report
// the link type. Files are fs.File, io.ReaderAt and io.Seeker; directories
// are fs.ReadDirFile. Device, FIFO and socket inodes open as empty files:
// their bytes do not live on the volume. Safe for concurrent use; an open
// file keeps its inode (and data) while the volume changes underneath.
type FS struct {
	v *Volume
}

// FS returns the volume as an io/fs file system.
func (v *Volume) FS() *FS { return &FS{v: v} }

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.ReadLinkFS = (*FS)(nil)

	_ fs.File        = (*fsFile)(nil)
	_ io.ReaderAt    = (*fsFile)(nil)
	_ io.Seeker      = (*fsFile)(nil)
	_ fs.ReadDirFile = (*fsDir)(nil)
)

// volumePath turns a valid io/fs path into the volume's absolute one.
func volumePath(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return "/", nil
	}
	return "/" + name, nil
}

// fsError restates a Volume error for the io/fs path name.
func fsError(op, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// Open opens the named file or directory, following symbolic links.
func (f *FS) Open(name string) (fs.File, error) {
	p, err := volumePath("open", name)
	if err != nil {
		return nil, err
	}
	var file fs.File
	err = f.v.pathOp("open", p, true, func(n *node, _ []string) error {
		isDir := n.inode().IsDir()
		if !isDir {
			if err := n.readable(); err != nil {
				return err
			}
		}
		f.v.holdNode(n)
		if isDir {
			file = &fsDir{v: f.v, n: n, name: name}
		} else {
			file = &fsFile{f: &File{v: f.v, n: n}, name: name}
		}
		return nil
	})
	if err != nil {
		return nil, fsError("open", name, err)
	}
	return file, nil
}

// Stat describes the named file, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	return f.stat("stat", name, f.v.Stat)
}

// Lstat describes the named file; a symbolic link is described itself.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	return f.stat("lstat", name, f.v.Lstat)
}

func (f *FS) stat(op, name string, stat func(string) (FileInfo, error)) (fs.FileInfo, error) {
	p, err := volumePath(op, name)
	if err != nil {
		return nil, err
	}
	fi, err := stat(p)
	if err != nil {
		return nil, fsError(op, name, err)
	}
	return fileInfo{fi: fi, name: path.Base(name)}, nil
}

// ReadLink returns the target of the named symbolic link, as stored.
func (f *FS) ReadLink(name string) (string, error) {
	p, err := volumePath("readlink", name)
	if err != nil {
		return "", err
	}
	target, err := f.v.Readlink(p)
	if err != nil {
		return "", fsError("readlink", name, err)
	}
	return target, nil
}

// ReadDir lists the named directory, sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	p, err := volumePath("readdir", name)
	if err != nil {
		return nil, err
	}
	ents, err := f.v.ReadDir(p)
	if err != nil {
		return nil, fsError("readdir", name, err)
	}
	return f.v.fsEntries(name, ents), nil
}

// ReadFile returns the named file's bytes, in a slice of the caller's own.
func (f *FS) ReadFile(name string) ([]byte, error) {
	file, err := f.Open(name)
	if err != nil {
		return nil, fsError("readfile", name, err)
	}
	defer file.Close()
	h, ok := file.(*fsFile)
	if !ok {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: ErrIsDir}
	}
	b := make([]byte, h.f.Size())
	n, err := h.f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, fsError("readfile", name, err)
	}
	return b[:n], nil
}

// fileInfo is a FileInfo as fs.FileInfo. Sys returns the FileInfo (inode
// number, links, owner, all four times).
type fileInfo struct {
	fi   FileInfo
	name string
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.fi.Size }
func (i fileInfo) Mode() fs.FileMode  { return i.fi.Mode }
func (i fileInfo) ModTime() time.Time { return i.fi.ModTime }
func (i fileInfo) IsDir() bool        { return i.fi.IsDir() }
func (i fileInfo) Sys() any           { return i.fi }

// fsFile is an open file (anything but a directory) with a read offset.
type fsFile struct {
	f    *File
	name string
	mu   sync.Mutex // guards off
	off  int64
}

func (h *fsFile) Stat() (fs.FileInfo, error) {
	if h.f.closed.Load() {
		return nil, &fs.PathError{Op: "stat", Path: h.name, Err: ErrClosed}
	}
	return fileInfo{fi: h.f.Stat(), name: path.Base(h.name)}, nil
}

func (h *fsFile) Read(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(b) == 0 {
		return 0, nil
	}
	n, err := h.f.ReadAt(b, h.off)
	h.off += int64(n)
	return n, h.readErr("read", n, err)
}

func (h *fsFile) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: h.name, Err: fs.ErrInvalid}
	}
	n, err := h.f.ReadAt(b, off)
	return n, h.readErr("readat", n, err)
}

// readErr passes io.EOF as it is (io.Reader's contract) and wraps the
// rest. A Read that got bytes reports nothing.
func (h *fsFile) readErr(op string, n int, err error) error {
	switch {
	case err == nil || err == io.EOF:
		if op == "read" && n > 0 {
			return nil
		}
		return err
	}
	return &fs.PathError{Op: op, Path: h.name, Err: err}
}

func (h *fsFile) Seek(offset int64, whence int) (int64, error) {
	if h.f.closed.Load() {
		return 0, &fs.PathError{Op: "seek", Path: h.name, Err: ErrClosed}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += h.off
	case io.SeekEnd:
		offset += h.f.Size()
	default:
		return 0, &fs.PathError{Op: "seek", Path: h.name, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: h.name, Err: fs.ErrInvalid}
	}
	h.off = offset
	return offset, nil
}

func (h *fsFile) Close() error {
	if err := h.f.Close(); err != nil {
		return &fs.PathError{Op: "close", Path: h.name, Err: err}
	}
	return nil
}

// fsDir is an open directory. It is listed at its first ReadDir (later
// changes to the directory are not seen); its node is held until Close.
type fsDir struct {
	v    *Volume
	n    *node
	name string

	mu     sync.Mutex
	closed bool
	listed bool
	ents   []DirEntry
	pos    int
}

func (d *fsDir) Stat() (fs.FileInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, &fs.PathError{Op: "stat", Path: d.name, Err: ErrClosed}
	}
	return fileInfo{fi: infoOf(path.Base(d.name), d.n.inode()), name: path.Base(d.name)}, nil
}

func (d *fsDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: ErrIsDir}
}

// ReadDir returns the next count entries (all the rest if count <= 0), in
// name order, as fs.ReadDirFile says: at the end, count > 0 gives io.EOF,
// count <= 0 an empty list and no error.
func (d *fsDir) ReadDir(count int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: ErrClosed}
	}
	if !d.listed {
		ents, err := d.list()
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: err}
		}
		d.ents, d.listed = ents, true
	}
	rest := d.ents[d.pos:]
	if count > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(count, len(rest))]
	}
	d.pos += len(rest)
	return d.v.fsEntries(d.name, rest), nil
}

// list lists the held directory node.
func (d *fsDir) list() ([]DirEntry, error) {
	if err := d.v.enter(); err != nil {
		return nil, err
	}
	defer d.v.leave()
	d.v.ns.RLock()
	defer d.v.ns.RUnlock()
	return d.v.listDir(d.n)
}

func (d *fsDir) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.name, Err: ErrClosed}
	}
	d.closed = true
	d.v.putNode(d.n)
	return nil
}

// fsEntry is a directory entry of the io/fs directory dir.
type fsEntry struct {
	v   *Volume
	dir string
	e   DirEntry
}

func (v *Volume) fsEntries(dir string, ents []DirEntry) []fs.DirEntry {
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = fsEntry{v: v, dir: dir, e: e}
	}
	return out
}

func (e fsEntry) Name() string { return e.e.Name }
func (e fsEntry) IsDir() bool  { return e.e.Type == TypeDir }

// Type is the entry's type bits (a symbolic link's own); an entry whose
// type neither the directory nor its inode says reads as regular.
func (e fsEntry) Type() fs.FileMode { return e.e.Type.ModeType() }

// Info describes the entry's inode as it is now (a symbolic link itself).
func (e fsEntry) Info() (fs.FileInfo, error) {
	fi, err := e.v.StatInode(e.e.Inode, e.e.Name)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path.Join(e.dir, e.e.Name), Err: err}
	}
	return fileInfo{fi: fi, name: e.e.Name}, nil
}
