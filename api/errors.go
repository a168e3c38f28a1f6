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
// shape. Success answers pass through untouched.
type jsonErrors struct {
	http.ResponseWriter
	swallow bool // an error body was written: drop net/http's text
}

func (j *jsonErrors) WriteHeader(status int) {
	if j.swallow {
		return
	}
	if status < 400 {
		j.ResponseWriter.WriteHeader(status)
		return
	}
	j.swallow = true
	writeError(j.ResponseWriter, apiError(status, codeOfStatus(status), http.StatusText(status)))
}

func (j *jsonErrors) Write(p []byte) (int, error) {
	if j.swallow {
		return len(p), nil
	}
	return j.ResponseWriter.Write(p)
}

// ReadFrom passes a body copy (ServeContent's io.CopyN) on to the writer
// beneath, so its large chunks are kept.
func (j *jsonErrors) ReadFrom(r io.Reader) (int64, error) {
	if j.swallow {
		return io.Copy(io.Discard, r)
	}
	if rf, ok := j.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{j.ResponseWriter}, r)
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (j *jsonErrors) Unwrap() http.ResponseWriter { return j.ResponseWriter }
