package api

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"syscall"

	"github.com/mpaged/mpaged/fs/ext"
)

// Error is an API error: the status it answers with, a stable code and a
// message for humans.
type Error struct {
	Status int
	Code   string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// apiError builds an *Error.
func apiError(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Msg: msg}
}

// errShuttingDown answers requests that arrive after shutdown began.
// errHidden answers a path spelled into the volume's staging directory
// (ext.IsStagingPath), which /v1 does not serve: it does not exist for
// clients, whatever the method.
var errHidden = apiError(http.StatusNotFound, "not_found", "the staging directory ("+ext.StagingDir+") is not served")

var errShuttingDown = apiError(http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")

// statusOf maps an error from the volume to its status and code. The
// order matters: a path error wraps its cause, and the errno sentinels of
// fs/ext wrap syscall errnos.
func statusOf(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return apiError(http.StatusInsufficientStorage, "ENOSPC", msg)
	case errors.Is(err, ext.ErrHidden):
		// A link into the staging directory: answered as its name is
		// (errHidden), before the EACCES it wraps.
		return apiError(http.StatusNotFound, "not_found", msg)
	case errors.Is(err, ext.ErrInvalidPath):
		return apiError(http.StatusBadRequest, "invalid_path", msg)
	case errors.Is(err, ext.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return apiError(http.StatusNotFound, "not_found", msg)
	case errors.Is(err, ext.ErrExist):
		return apiError(http.StatusConflict, "exists", msg)
	case errors.Is(err, ext.ErrNotDir):
		return apiError(http.StatusConflict, "not_a_directory", msg)
	case errors.Is(err, ext.ErrIsDir):
		return apiError(http.StatusConflict, "is_a_directory", msg)
	case errors.Is(err, ext.ErrNotEmpty), errors.Is(err, syscall.ENOTEMPTY):
		return apiError(http.StatusConflict, "not_empty", msg)
	case errors.Is(err, ext.ErrNotRegular):
		return apiError(http.StatusConflict, "not_regular", msg)
	case errors.Is(err, ext.ErrLoop):
		return apiError(http.StatusBadRequest, "symlink_loop", msg)
	case errors.Is(err, ext.ErrTooLarge), errors.Is(err, syscall.EFBIG):
		return apiError(http.StatusRequestEntityTooLarge, "too_large", msg)
	case errors.Is(err, ext.ErrTooManyLinks):
		return apiError(http.StatusConflict, "too_many_links", msg)
	case errors.Is(err, ext.ErrReadOnly):
		return apiError(http.StatusServiceUnavailable, "read_only", msg)
	case errors.Is(err, ext.ErrClosed):
		return errShuttingDown
	case errors.Is(err, ext.ErrIntoItself), errors.Is(err, ext.ErrBusy):
		// The file system's refusals of a name-space change; the same
		// errnos from the device are I/O errors (below).
		return apiError(http.StatusConflict, "invalid_operation", msg)
	case errors.Is(err, syscall.EIO):
		return apiError(http.StatusInternalServerError, "EIO", msg)
	case errors.Is(err, ext.ErrCorrupt):
		return apiError(http.StatusInternalServerError, "corrupt", msg)
	}
	return apiError(http.StatusInternalServerError, "internal", msg)
}

// codeOfStatus is the code of an error status that net/http produced
// itself (ServeContent's 412 and 416).
func codeOfStatus(status int) string {
	switch status {
	case http.StatusPreconditionFailed:
		return "precondition_failed"
	case http.StatusRequestedRangeNotSatisfiable:
		return "range_not_satisfiable"
	}
	return "error"
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeError answers with e as JSON.
func writeError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("ETag")
	h.Del("Last-Modified")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: e.Msg, Code: e.Code})
}

// jsonErrors rewrites the error answers net/http writes itself (text, from
// ServeContent: 412, 416) as JSON, so every error the API gives has one
// shape. A success status is held back until the first body byte has been
// read from the volume (or until finish): a GET whose first read fails is
// then still answered with a JSON error instead of a 200 cut short. A read
// that fails after the first byte can only cut the body short.
type jsonErrors struct {
	http.ResponseWriter
	swallow bool // an error body was written: drop net/http's text
	held    int  // a success status not sent yet
	first   [1]byte
}

func (j *jsonErrors) WriteHeader(status int) {
	if j.swallow {
		return
	}
	if status < 400 {
		if j.held == 0 {
			j.held = status
		}
		return
	}
	j.swallow, j.held = true, 0
	writeError(j.ResponseWriter, apiError(status, codeOfStatus(status), http.StatusText(status)))
}

// sendHeld sends the held success status, if any.
func (j *jsonErrors) sendHeld() {
	if j.held != 0 {
		j.ResponseWriter.WriteHeader(j.held)
		j.held = 0
	}
}

func (j *jsonErrors) Write(p []byte) (int, error) {
	if j.swallow {
		return len(p), nil
	}
	j.sendHeld()
	return j.ResponseWriter.Write(p)
}

// ReadFrom passes a body copy (ServeContent's io.CopyN) on to the writer
// beneath, so its large chunks are kept. While the status is held the
// first byte is read here: an error before it leaves the answer to finish.
func (j *jsonErrors) ReadFrom(r io.Reader) (int64, error) {
	if j.swallow {
		return io.Copy(io.Discard, r)
	}
	var n int64
	if j.held != 0 {
		if _, err := io.ReadFull(r, j.first[:]); err != nil {
			if err == io.EOF {
				err = nil
			}
			return 0, err
		}
		j.sendHeld()
		if _, err := j.ResponseWriter.Write(j.first[:]); err != nil {
			return 0, err
		}
		n = 1
	}
	var m int64
	var err error
	if rf, ok := j.ResponseWriter.(io.ReaderFrom); ok {
		m, err = rf.ReadFrom(r)
	} else {
		m, err = io.Copy(struct{ io.Writer }{j.ResponseWriter}, r)
	}
	return n + m, err
}

// finish ends an answer whose body may not have started: readErr, the
// body's first read error, replaces a held status with the JSON error
// (true: the error was the answer); otherwise the held status goes out.
func (j *jsonErrors) finish(readErr error) bool {
	if j.held == 0 {
		return false
	}
	if readErr != nil {
		j.held, j.swallow = 0, true
		h := j.Header()
		h.Del("Content-Range")
		h.Del("Accept-Ranges")
		writeError(j.ResponseWriter, statusOf(readErr))
		return true
	}
	j.sendHeld()
	return false
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (j *jsonErrors) Unwrap() http.ResponseWriter { return j.ResponseWriter }
