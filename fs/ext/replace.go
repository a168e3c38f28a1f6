package ext

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
)

// TempPrefix starts the names of the temporary files ReplaceFile writes
// beside their target. After a crash one may remain; nothing else uses
// the prefix.
const TempPrefix = ".mpaged-put."

// copyChunk is how much of a reader one WriteAt hands the engine.
const copyChunk = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// WriteFrom writes what r yields at off and on, a chunk at a time (the
// file grows as needed), and returns how many bytes it wrote. Only a
// clean end of r (io.EOF) ends it well: any other error of r is returned,
// wrapped, after what came before it was written.
func (f *File) WriteFrom(r io.Reader, off int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := fill(r, buf)
		if m > 0 {
			if _, err := f.WriteAt(buf[:m], off+n); err != nil {
				return n, err
			}
			n += int64(m)
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, fmt.Errorf("ext: inode %d: reading the data to write: %w", f.n.ino, rerr)
		}
	}
}

// fill reads into buf until it is full or r fails; unlike io.ReadFull it
// keeps r's own error, so a reader that ends early (io.ErrUnexpectedEOF)
// is not mistaken for one that ends cleanly.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReplaceFile makes the regular file at path hold exactly what r yields,
// atomically: the bytes go to a new temporary file in the same directory,
// which is made durable (File.Sync) and only then renamed over path. Until
// the rename, path shows its old content to every reader, and an error
// (r failing, ENOSPC, EIO) removes the temporary file and leaves path as it
// was; a crash leaves the old content, or the new one whole, never a mix.
// A new file gets perm; a replaced one keeps its permission bits. With
// syncName the rename itself is durable before ReplaceFile returns.
// existed says whether path named a file before.
func (v *Volume) ReplaceFile(p string, r io.Reader, perm fs.FileMode, syncName bool) (fi FileInfo, existed bool, err error) {
	cur, err := v.Stat(p)
	switch {
	case err == nil && cur.IsDir():
		return FileInfo{}, true, &fs.PathError{Op: "replace", Path: p, Err: ErrIsDir}
	case err == nil:
		existed, perm = true, cur.Mode.Perm()
	case !errors.Is(err, ErrNotFound):
		return FileInfo{}, false, err
	}
	tmp := path.Join(path.Dir(p), TempPrefix+randomSuffix())
	f, err := v.OpenWrite(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, perm)
	if err != nil {
		return FileInfo{}, existed, err
	}
	_, err = f.WriteFrom(r, 0)
	if err == nil {
		// The data reaches the device before the name does: a crash
		// after the rename finds the new bytes, never unwritten blocks.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = v.Rename(tmp, p)
	}
	if err != nil {
		if uerr := v.Unlink(tmp); uerr != nil && !errors.Is(uerr, ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("ext: temporary file %s left behind: %w", tmp, uerr))
		}
		return FileInfo{}, existed, err
	}
	if syncName {
		if err := v.Sync(); err != nil {
			return FileInfo{}, existed, err
		}
	}
	fi, err = v.Stat(p)
	return fi, existed, err
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
