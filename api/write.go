package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"sync"
	"time"

	"github.com/mpaged/mpaged/fs/ext"
)

// TempPrefix starts the names of the temporary files atomic PUTs write.
const TempPrefix = ".mpaged-put."

// chunkBytes is how much of a body one WriteAt hands the engine.
const chunkBytes = 256 << 10

// bufPool reuses body buffers, so a PUT costs no new megabytes.
type bufPool struct{ p sync.Pool }

func (b *bufPool) get() *[]byte {
	if v := b.p.Get(); v != nil {
		return v.(*[]byte)
	}
	buf := make([]byte, chunkBytes)
	return &buf
}

func (b *bufPool) put(buf *[]byte) { b.p.Put(buf) }

// replace writes the body to a new temporary file beside p, makes it
// durable, and renames it over p. Until the rename nothing p names
// changes; on any error the temporary file is removed.
func (s *Server) replace(p string, cur ext.FileInfo, exists, syncAfter bool, body io.Reader) (ext.FileInfo, error) {
	perm := fs.FileMode(0o644)
	if exists {
		perm = cur.Mode.Perm()
	}
	tmp := path.Join(path.Dir(p), TempPrefix+randomSuffix())
	f, err := s.vol.OpenWrite(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, perm)
	if err != nil {
		return ext.FileInfo{}, err
	}
	err = s.copyBody(f, 0, body)
	if err == nil {
		// The data reaches the device before the name does: a crash
		// after the rename finds the new bytes, never unwritten blocks.
		err = f.Sync()
	}
	fi := f.Stat()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.vol.Rename(tmp, p)
	}
	if err != nil {
		if uerr := s.vol.Unlink(tmp); uerr != nil && !isNotFound(uerr) {
			s.log.Error("put: temporary file left behind", "path", tmp, "err", uerr)
		}
		return ext.FileInfo{}, err
	}
	if syncAfter {
		if err := s.vol.Sync(); err != nil {
			return ext.FileInfo{}, err
		}
	}
	if fi, err = s.vol.Stat(p); err != nil {
		return ext.FileInfo{}, err
	}
	return fi, nil
}

// writeInPlace writes the body at q.offset of p (created if missing),
// without truncating.
func (s *Server) writeInPlace(p string, q putQuery, body io.Reader) (ext.FileInfo, error) {
	f, err := s.vol.OpenWrite(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return ext.FileInfo{}, err
	}
	defer f.Close()
	if err := s.copyBody(f, q.offset, body); err != nil {
		return ext.FileInfo{}, err
	}
	if q.sync {
		if err := f.Sync(); err != nil {
			return ext.FileInfo{}, err
		}
	}
	return f.Stat(), nil
}

// copyBody writes body to f from off on, one chunk at a time. Only a
// clean end of the body (io.EOF) ends it well: a body cut short returns
// another error (io.ErrUnexpectedEOF from net/http), a client error.
func (s *Server) copyBody(f *ext.File, off int64, body io.Reader) error {
	buf := s.bufs.get()
	defer s.bufs.put(buf)
	for {
		n, rerr := fill(body, *buf)
		if n > 0 {
			if _, err := f.WriteAt((*buf)[:n], off); err != nil {
				return err
			}
			off += int64(n)
		}
		switch {
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return &clientError{rerr}
		}
	}
}

// fill reads into buf until it is full or the reader fails; unlike
// io.ReadFull it keeps the reader's own error, so a body that ends early
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

// clientError is a failure on the client's side of a body: it went away,
// stalled, or sent more than allowed.
type clientError struct{ err error }

func (e *clientError) Error() string { return e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

func isClientError(err error) bool {
	var ce *clientError
	return errors.As(err, &ce)
}

func asMaxBytes(err error, target **http.MaxBytesError) bool { return errors.As(err, target) }

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mkdir makes a directory; with ?parents=1 its missing parents too, and
// an existing directory is then no error.
func (s *Server) mkdir(w http.ResponseWriter, r *http.Request) {
	if e := s.writable(); e != nil {
		writeError(w, e)
		return
	}
	p := volumePath(r)
	parents, e := boolParam(r, "parents")
	if e != nil {
		writeError(w, e)
		return
	}
	created := false
	var err error
	if parents {
		created, err = s.mkdirAll(p)
	} else {
		err = s.vol.Mkdir(p, 0o755)
		created = err == nil
	}
	if err != nil {
		writeError(w, statusOf(err))
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"path": p, "created": created})
}

// mkdirAll makes p and its missing parents; created says whether p was.
func (s *Server) mkdirAll(p string) (bool, error) {
	fi, err := s.vol.Stat(p)
	if err == nil {
		if !fi.IsDir() {
			return false, &fs.PathError{Op: "mkdir", Path: p, Err: ext.ErrNotDir}
		}
		return false, nil
	}
	if !isNotFound(err) {
		return false, err
	}
	if parent := path.Dir(p); parent != p {
		if _, err := s.mkdirAll(parent); err != nil {
			return false, err
		}
	}
	if err := s.vol.Mkdir(p, 0o755); err != nil && !errors.Is(err, ext.ErrExist) {
		return false, err
	}
	return true, nil
}

// fsync makes a file's data, and the metadata that reaches it, durable
// (a directory's: every changed directory and the metadata).
func (s *Server) fsync(w http.ResponseWriter, r *http.Request) {
	p := volumePath(r)
	fi, err := s.vol.Stat(p)
	if err == nil {
		if fi.IsDir() {
			err = s.vol.Sync()
		} else {
			err = s.fsyncFile(p)
		}
	}
	if err != nil {
		writeError(w, statusOf(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "synced": true})
}

func (s *Server) fsyncFile(p string) error {
	f, err := s.vol.OpenFile(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// sync makes everything written so far durable.
func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	if err := s.vol.Sync(); err != nil {
		writeError(w, statusOf(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"synced": true})
}

// idleReader renews the connection's read deadline before each read of a
// body, so a body may take as long as it needs while it keeps moving,
// and a stalled one is cut off after idle.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	_ = ir.rc.SetReadDeadline(time.Now().Add(ir.idle)) // unsupported (HTTP/2 tests): no deadline
	return ir.r.Read(p)
}

// idleWriter does the same for a response body.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (iw *idleWriter) Write(p []byte) (int, error) {
	_ = iw.rc.SetWriteDeadline(time.Now().Add(iw.idle))
	return iw.ResponseWriter.Write(p)
}

func (iw *idleWriter) Unwrap() http.ResponseWriter { return iw.ResponseWriter }
