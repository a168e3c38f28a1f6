package api

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mpaged/mpaged/fs/ext"
)

// volumePath is the volume path a /v1 URL names: the decoded rest of the
// URL path from the slash that ends the route's prefix ("/" for none).
// The routes are prefix patterns ("/v1/files/"), not wildcards: the mux
// then builds no path values, and this is a substring, not a copy.
func volumePath(r *http.Request) string {
	if pre := r.Pattern; pre != "" && strings.HasPrefix(r.URL.Path, pre) {
		return r.URL.Path[len(pre)-1:]
	}
	return "" // not reached through its route's prefix: the volume refuses it (400)
}

// etag names one version of a file: inode and generation say which file,
// size and mtime (with nanoseconds where the inode keeps them) which
// version of it. Like nginx's, it cannot tell apart two same-size
// versions written within one mtime tick.
func etag(fi ext.FileInfo) string {
	var buf [80]byte
	return string(appendETag(buf[:0], &fi))
}

// appendETag appends fi's ETag to b: `"ino-generation-size-mtime"`, each
// in hex (the mtime in nanoseconds, signed).
func appendETag(b []byte, fi *ext.FileInfo) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, uint64(fi.Ino), 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(fi.Generation), 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, fi.Size, 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, fi.ModTime.UnixNano(), 16)
	return append(b, '"')
}

// getFile serves a file's bytes (net/http's ServeContent: Range with 206
// and multi-range, 416, ETag and the conditional headers, HEAD) straight
// from the page cache in chunks, or a directory's listing. A GET of one
// small range takes a shorter path with the same answer
// (serveSmallRange).
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	p := volumePath(r)
	// One path walk for the common case, a file: a directory is the
	// open's refusal.
	f, err := s.vol.OpenFile(p)
	if errors.Is(err, ext.ErrIsDir) {
		fi, err := s.vol.Stat(p)
		if err != nil {
			writeError(w, statusOf(err))
			return
		}
		s.listDir(w, r, p, fi)
		return
	}
	if err != nil {
		writeError(w, statusOf(err))
		return
	}
	defer f.Close()
	fi := f.Stat()
	if start, length, ok := smallRangeOf(r, fi.Size); ok && s.serveSmallRange(w, r, p, f, &fi, start, length) {
		return
	}
	w.Header().Set("ETag", etag(fi))
	if path.Ext(p) == "" {
		// No extension to go by: do not let ServeContent read the
		// head of the file to sniff a type.
		w.Header().Set("Content-Type", octetStream)
	}
	jw := &jsonErrors{ResponseWriter: &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w),
		idle: s.cfg.IdleTimeout, pace: newPace(s.cfg.IdleTimeout, s.cfg.MinRate)}}
	body := &errReader{r: io.NewSectionReader(f, 0, fi.Size)}
	http.ServeContent(jw, r, path.Base(p), fi.ModTime, body)
	if jw.finish(body.err) {
		s.log.Error("get: the first read failed; answered with the error", "path", p, "err", body.err)
		return
	}
	if body.err != nil {
		// The status is out: the client sees a body cut short. Say why.
		s.log.Error("get: read failed mid-body; the response was cut short", "path", p, "err", body.err)
	}
}

// errReader keeps the first read error of a body that ServeContent
// streams (it drops copy errors, and the status has gone out by then).
type errReader struct {
	r   io.ReadSeeker
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

func (e *errReader) Seek(off int64, whence int) (int64, error) { return e.r.Seek(off, whence) }

// dirEntry is one line of a directory listing.
type dirEntry struct {
	Name string `json:"name"`
	// Href is the name as a URL path segment: names that are not valid
	// UTF-8 lose bytes in JSON strings, the escaped segment does not.
	Href    string    `json:"href"`
	Type    string    `json:"type"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"`
	ModTime time.Time `json:"mtime"`
	Inode   uint32    `json:"inode"`
}

// dirError is an entry that could not be described (a corrupt inode):
// the rest of the listing is still given.
type dirError struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

type dirListing struct {
	Path    string     `json:"path"`
	Entries []dirEntry `json:"entries"`
	Errors  []dirError `json:"errors,omitempty"`
}

func (s *Server) listDir(w http.ResponseWriter, r *http.Request, p string, fi ext.FileInfo) {
	infos, bad := s.vol.ReadDirInfo(p)
	out := dirListing{Path: p, Entries: make([]dirEntry, 0, len(infos))}
	for _, e := range unjoin(bad) {
		var pe *fs.PathError
		if !errors.As(e, &pe) || pe.Op != "stat" {
			writeError(w, statusOf(bad)) // the directory itself failed
			return
		}
		out.Errors = append(out.Errors, dirError{Name: path.Base(pe.Path), Error: e.Error()})
	}
	for _, efi := range infos {
		if ext.IsStagingEntry(fi.Ino, efi.Name) {
			continue // not served, also in the root listed through a link
		}
		out.Entries = append(out.Entries, dirEntry{Name: efi.Name, Href: url.PathEscape(efi.Name), Type: efi.Type.String(), Size: efi.Size,
			Mode: efi.Mode.String(), ModTime: efi.ModTime, Inode: efi.Ino})
	}
	w.Header().Set("ETag", etag(fi))
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "application/json")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// unjoin lists the errors inside an errors.Join (none for nil).
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// putFile creates or replaces a file: atomically through a temporary
// file and a rename, or in place with ?offset=N.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	if e := s.writable(); e != nil {
		writeError(w, e)
		return
	}
	p := volumePath(r)
	if strings.HasSuffix(p, "/") {
		writeError(w, apiError(http.StatusConflict, "is_a_directory", p+": a PUT names a file, not a directory"))
		return
	}
	q, e := parsePutQuery(r)
	if e != nil {
		writeError(w, e)
		return
	}
	// A fragment sent with Content-Range would otherwise become the
	// whole file (RFC 9110 9.3.4: a server without partial PUT answers
	// 400); ?offset=N is the way to write in place.
	if r.Header.Get("Content-Range") != "" {
		writeError(w, apiError(http.StatusBadRequest, "content_range", "PUT with Content-Range is not supported: use ?offset=N to write in place"))
		return
	}
	if e := s.checkBodyLength(r); e != nil {
		writeError(w, e)
		return
	}
	// Checked early, so a doomed PUT fails before its body is read; a
	// replacement checks the preconditions again at the rename itself.
	cur, e := s.statForWrite(p)
	if e == nil {
		e = checkPreconditions(r, cur)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	body := s.newBodyReader(w, r)
	var fi ext.FileInfo
	var existed bool
	var err error
	if q.inPlace {
		existed = cur != nil
		fi, err = s.writeInPlace(p, q, body)
	} else {
		fi, existed, err = s.vol.ReplaceFile(p, body, 0o644, func(now *ext.FileInfo) error {
			if e := checkPreconditions(r, now); e != nil {
				return e
			}
			return nil
		})
	}
	if err != nil {
		writeError(w, s.bodyError(r, p, err))
		return
	}
	w.Header().Set("ETag", etag(fi))
	if existed {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Location", r.URL.Path)
	writeJSON(w, http.StatusCreated, map[string]any{"path": p, "size": fi.Size})
}

// putQuery is what a PUT's query string asks for.
type putQuery struct {
	inPlace bool
	offset  int64
	sync    bool
}

func parsePutQuery(r *http.Request) (putQuery, *Error) {
	var q putQuery
	v := r.URL.Query()
	if o := v.Get("offset"); o != "" || v.Has("offset") {
		n, err := strconv.ParseInt(o, 10, 64)
		if err != nil || n < 0 {
			return q, apiError(http.StatusBadRequest, "bad_offset", fmt.Sprintf("offset %q: want a byte offset >= 0", o))
		}
		q.inPlace, q.offset = true, n
	}
	sync, e := boolParam(r, "sync")
	q.sync = sync
	return q, e
}

// boolParam reads ?name=1|0|true|false (absent: false).
func boolParam(r *http.Request, name string) (bool, *Error) {
	v := r.URL.Query()
	if !v.Has(name) {
		return false, nil
	}
	switch v.Get(name) {
	case "", "1", "true", "yes":
		return true, nil
	case "0", "false", "no":
		return false, nil
	}
	return false, apiError(http.StatusBadRequest, "bad_parameter", fmt.Sprintf("%s=%q: want 1 or 0", name, v.Get(name)))
}

// checkBodyLength wants a declared length (Content-Length or chunked)
// within the limit.
func (s *Server) checkBodyLength(r *http.Request) *Error {
	if r.Header.Get("Content-Length") == "" && len(r.TransferEncoding) == 0 {
		return apiError(http.StatusLengthRequired, "length_required", "a PUT needs Content-Length (or a chunked body)")
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return apiError(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("body of %d bytes is over the limit of %d", r.ContentLength, s.cfg.MaxBodyBytes))
	}
	return nil
}

// statForWrite describes the regular file p names (nil: none); a
// directory or a missing parent is a conflict.
func (s *Server) statForWrite(p string) (*ext.FileInfo, *Error) {
	fi, err := s.vol.Stat(p)
	switch {
	case err == nil && fi.IsDir():
		return nil, apiError(http.StatusConflict, "is_a_directory", p+" is a directory")
	case err == nil:
		return &fi, nil
	case isNotFound(err):
		dir := path.Dir(p)
		dfi, derr := s.vol.Stat(dir)
		if derr != nil || !dfi.IsDir() {
			return nil, apiError(http.StatusConflict, "no_parent", "the directory "+dir+" does not exist")
		}
		return nil, nil
	}
	return nil, statusOf(err)
}

// isNotFound reports a name that does not exist, which a write may make;
// the staging directory is answered as missing but made nothing in.
func isNotFound(err error) bool {
	if errors.Is(err, ext.ErrHidden) {
		return false
	}
	e := statusOf(err)
	return e.Status == http.StatusNotFound
}

// checkPreconditions applies If-Match and If-None-Match to a write of a
// file that cur describes (nil: none).
func checkPreconditions(r *http.Request, cur *ext.FileInfo) *Error {
	failed := apiError(http.StatusPreconditionFailed, "precondition_failed", "the file does not match the request's precondition")
	if im := r.Header.Get("If-Match"); im != "" {
		if cur == nil || !etagListHas(im, etag(*cur)) {
			return failed
		}
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && cur != nil {
		if strings.TrimSpace(inm) == "*" || etagListHas(inm, etag(*cur)) {
			return failed
		}
	}
	return nil
}

// etagListHas reports whether a header's ETag list holds tag (or "*").
// Writes use the strong comparison: a weak tag never matches.
func etagListHas(list, tag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == tag {
			return true
		}
	}
	return false
}

// bodyError names what went wrong while a body was copied: the client's
// side (too large, gone) or the volume's.
func (s *Server) bodyError(r *http.Request, p string, err error) *Error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return apiError(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over the limit of %d bytes", mbe.Limit))
	case isClientError(err) && (errors.Is(err, errTooSlow) || errors.Is(err, os.ErrDeadlineExceeded)):
		s.log.Warn("put: client too slow; nothing replaced", "path", p, "remote", r.RemoteAddr)
		return apiError(http.StatusRequestTimeout, "too_slow", "the request body stalled or moved below the minimum rate")
	case isClientError(err):
		s.log.Warn("put: body not complete; nothing replaced", "path", p, "remote", r.RemoteAddr, "err", err)
		return apiError(http.StatusBadRequest, "incomplete_body", "the request body ended early: "+err.Error())
	}
	return statusOf(err)
}

// deleteFile unlinks a file or removes an empty directory.
func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	if e := s.writable(); e != nil {
		writeError(w, e)
		return
	}
	p := volumePath(r)
	if p == "/" {
		writeError(w, apiError(http.StatusConflict, "invalid_operation", "the root directory cannot be removed"))
		return
	}
	fi, err := s.vol.Lstat(p)
	if err == nil {
		if e := checkPreconditions(r, &fi); e != nil {
			writeError(w, e)
			return
		}
		if fi.IsDir() {
			err = s.vol.Rmdir(p)
		} else {
			err = s.vol.Unlink(p)
		}
	}
	if err != nil {
		writeError(w, statusOf(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writable refuses writes to a volume served read-only (shutdown is
// refused earlier, at admission).
func (s *Server) writable() *Error {
	if ro, why := s.readOnly(); ro {
		return apiError(http.StatusServiceUnavailable, "read_only", "the volume is served read-only: "+why)
	}
	return nil
}
