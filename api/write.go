package api

import (
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

// writeInPlace writes the body at q.offset of p (created if missing),
// without truncating.
func (s *Server) writeInPlace(p string, q putQuery, body io.Reader) (ext.FileInfo, error) {
	f, err := s.vol.OpenWrite(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return ext.FileInfo{}, err
	}
	defer f.Close()
	if _, err := f.WriteFrom(body, q.offset); err != nil {
		return ext.FileInfo{}, err
	}
	if q.sync {
		if err := f.Sync(); err != nil {
			return ext.FileInfo{}, err
		}
	}
	return f.Stat(), nil
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

// fsync makes a file's data, and the metadata that reaches it, durable;
// for a directory it syncs the whole volume (Volume.Sync).
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

// errTooSlow cuts off a client whose body moves slower than MinRate: it
// holds a concurrency slot, so a trickle must not keep it.
var errTooSlow = errors.New("the client moved less data than the minimum rate over the idle timeout")

// pace checks that a body moves at least minBytes in each window.
type pace struct {
	window   time.Duration
	minBytes int64
	start    time.Time
	n        int64
}

func newPace(window time.Duration, minRate int64) pace {
	return pace{window: window, minBytes: minRate * int64(window) / int64(time.Second), start: time.Now()}
}

// account adds n bytes moved and says whether the last full window fell
// short.
func (p *pace) account(n int) error {
	p.n += int64(n)
	if now := time.Now(); now.Sub(p.start) >= p.window {
		if p.n < p.minBytes {
			return errTooSlow
		}
		p.start, p.n = now, 0
	}
	return nil
}

// newBodyReader is r's body under the API's limits: MaxBodyBytes, the
// idle timeout renewed by each read, MinRate.
func (s *Server) newBodyReader(w http.ResponseWriter, r *http.Request) *idleReader {
	return &idleReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), rc: http.NewResponseController(w),
		idle: s.cfg.IdleTimeout, pace: newPace(s.cfg.IdleTimeout, s.cfg.MinRate)}
}

// idleReader renews the connection's read deadline before each read of a
// body, so a body may take as long as it needs while it keeps moving at
// MinRate, and a stalled or trickling one is cut off.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	pace pace
}

// Read marks every failure but a clean end as the client's (a body cut
// short, a stall, one over the limit), so it is told apart from the
// volume's errors however deep it is wrapped.
func (ir *idleReader) Read(p []byte) (int, error) {
	_ = ir.rc.SetReadDeadline(time.Now().Add(ir.idle)) // unsupported (HTTP/2 tests): no deadline
	n, err := ir.r.Read(p)
	if perr := ir.pace.account(n); perr != nil && err == nil {
		err = perr
	}
	if err != nil && err != io.EOF {
		err = &clientError{err}
	}
	return n, err
}

// idleWriter does the same for a response body.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
	pace pace
}

func (iw *idleWriter) Write(p []byte) (int, error) {
	_ = iw.rc.SetWriteDeadline(time.Now().Add(iw.idle))
	n, err := iw.ResponseWriter.Write(p)
	if perr := iw.pace.account(n); perr != nil && err == nil {
		err = perr
	}
	return n, err
}

// bodyChunk is how much of a file one write to the client carries:
// net/http copies a body 32 KiB at a time, a write(2) each; bigger chunks
// mean fewer system calls per byte, and larger reads from the cache.
const bodyChunk = 256 << 10

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, bodyChunk); return &b }}

// ReadFrom streams r to the client in bodyChunk writes.
func (iw *idleWriter) ReadFrom(r io.Reader) (int64, error) {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	var total int64
	for {
		n, rerr := io.ReadFull(r, *bp)
		if n > 0 {
			m, werr := iw.Write((*bp)[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, rerr
		}
	}
}

func (iw *idleWriter) Unwrap() http.ResponseWriter { return iw.ResponseWriter }
