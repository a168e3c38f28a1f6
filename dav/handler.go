package dav

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/webdav"

	"github.com/mpaged/mpaged/fs/ext"
)

// Config configures a Handler.
type Config struct {
	Volume *ext.Volume
	// Prefix is the URL path the handler is mounted at, without a
	// trailing slash ("/dav").
	Prefix string
	// ReadOnly says whether writes are refused, and why (nil:
	// Volume.ReadOnly). The daemon serves some writable volumes
	// read-only.
	ReadOnly func() (bool, string)
	// Logger receives the errors behind failed requests. Nil discards.
	Logger *slog.Logger
}

// Handler serves a volume over WebDAV (x/net/webdav over FS, with an
// in-memory lock system). It refuses hostile paths and, on a read-only
// volume, every method that writes; it answers a failure of the volume
// itself with the status /v1 gives it (507 ENOSPC, 500 EIO) where webdav
// would pick a generic one. Authentication and limits are its caller's
// (package api).
type Handler struct {
	cfg Config
	fs  *FS
	dav *webdav.Handler
	log *slog.Logger
}

// New builds a Handler for cfg.Volume.
func New(cfg Config) *Handler {
	if cfg.ReadOnly == nil {
		cfg.ReadOnly = cfg.Volume.ReadOnly
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, fs: NewFS(cfg.Volume), log: cfg.Logger}
	h.dav = &webdav.Handler{Prefix: cfg.Prefix, FileSystem: h.fs, LockSystem: webdav.NewMemLS(), Logger: h.logError}
	return h
}

// FS is the FileSystem the handler serves.
func (h *Handler) FS() *FS { return h.fs }

// writeMethods change the volume or its locks and properties.
var writeMethods = map[string]bool{
	"PUT": true, "DELETE": true, "MKCOL": true, "COPY": true, "MOVE": true,
	"PROPPATCH": true, "LOCK": true, "UNLOCK": true,
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if msg := hostilePath(r); msg != "" {
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	if writeMethods[r.Method] {
		if ro, why := h.cfg.ReadOnly(); ro {
			http.Error(w, "the volume is served read-only: "+why, http.StatusForbidden)
			return
		}
	}
	if r.Method == "LOCK" {
		r.Header.Set("Timeout", lockTimeout(r.Header.Get("Timeout")))
	}
	if r.Method == "PROPFIND" || r.Method == "PROPPATCH" || r.Method == "LOCK" {
		body, status, msg := checkXMLBody(r.Body)
		if status != 0 {
			http.Error(w, msg, status)
			return
		}
		r.Body = body
	}
	if r.Method == "PROPFIND" && isDepthInfinity(r) {
		// A walk of the whole volume in one request, which symbolic
		// links to ancestors can make exponential: refused as RFC 4918
		// 9.1 allows (Apache's DavDepthInfinity Off does the same).
		w.Header().Set("Content-Type", "application/xml; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?>`+"\n"+`<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>`+"\n")
		return
	}
	st := &reqState{putLength: -1, verb: r.Method}
	if r.Method == http.MethodPut {
		// Files are replaced whole: a fragment would become the file
		// (RFC 9110 9.3.4: a server without partial PUT answers 400).
		if r.Header.Get("Content-Range") != "" {
			http.Error(w, "partial PUT (Content-Range) is not supported: files are replaced whole", http.StatusBadRequest)
			return
		}
		st.putLength = r.ContentLength
	}
	if r.Method == "COPY" || r.Method == "MOVE" {
		if status, msg := h.copyMoveNames(r, st); status != 0 {
			http.Error(w, msg, status)
			return
		}
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && path.Ext(r.URL.Path) == "" {
		// As /v1: no extension to go by, so no sniffing of the file's
		// head (ServeContent keeps a type already set).
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	sw := &statusWriter{ResponseWriter: w, st: st}
	h.dav.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
}

// copyMoveNames notes a COPY's or MOVE's source and destination on st (see
// FS.RemoveAll, which keeps a file that is to be replaced until the
// replacement lands), and answers a MOVE of a missing source with 404
// itself: webdav would delete the destination before it found out. A
// source and Destination that are one name or of which one contains the
// other are 403.
func (h *Handler) copyMoveNames(r *http.Request, st *reqState) (int, string) {
	src, ok := strings.CutPrefix(r.URL.Path, h.cfg.Prefix)
	if !ok {
		return 0, "" // webdav answers the mismatch
	}
	st.src = clean(src)
	if d := r.Header.Get("Destination"); d == "" {
		return 0, "" // webdav answers 400
	} else if u, err := url.Parse(d); err == nil {
		// webdav strips the prefix as a string: "/davx" would be "/x".
		dst, ok := strings.CutPrefix(u.Path, h.cfg.Prefix)
		if !ok || dst != "" && !strings.HasPrefix(dst, "/") {
			return http.StatusBadGateway, "the Destination is not under " + h.cfg.Prefix + "/: " + u.Path
		}
		st.dst = clean(dst)
		// webdav compares the names as strings: /f and /f/ are one file.
		if within(st.dst, st.src) || within(st.src, st.dst) {
			return http.StatusForbidden, "the source and the Destination are or contain one another"
		}
	}
	if r.Method == "MOVE" && !hidden(st.src) {
		if _, err := h.cfg.Volume.Lstat(st.src); errors.Is(err, ext.ErrNotFound) {
			return http.StatusNotFound, "nothing to move at " + r.URL.Path
		}
	}
	return 0, ""
}

// within reports whether name is dir or under it. A COPY or MOVE whose
// Destination contains its source would delete the source first (webdav
// removes an overwritten destination tree before it starts), and a COPY
// into its own subtree copies what it makes, level on level.
func within(name, dir string) bool {
	return name == dir || dir == "/" || strings.HasPrefix(name, dir+"/")
}

// hostilePath refuses what /v1 refuses (NUL bytes, empty, "." and ".."
// segments), in the request path and in a COPY or MOVE Destination:
// webdav would clean such paths to some other name.
func hostilePath(r *http.Request) string {
	if bad(r.URL.Path) {
		return "paths may not hold NUL bytes or empty, . or .. segments: " + r.URL.Path
	}
	if d := r.Header.Get("Destination"); d != "" {
		u, err := url.Parse(d)
		if err != nil {
			return "bad Destination: " + err.Error()
		}
		if bad(u.Path) {
			return "the Destination may not hold NUL bytes or empty, . or .. segments: " + u.Path
		}
	}
	return ""
}

// maxLockTimeout is the longest lock granted (RFC 4918 lets the server
// choose): locks live in memory, and one taken by a client that went away
// keeps its file locked until it expires.
const maxLockTimeout = time.Hour

// lockTimeout is the Timeout header a LOCK is granted: the one asked for
// if it is within maxLockTimeout, maxLockTimeout for none, Infinite or
// longer. A malformed one is left for webdav to refuse (400).
func lockTimeout(asked string) string {
	granted := fmt.Sprintf("Second-%d", int64(maxLockTimeout/time.Second))
	first, _, _ := strings.Cut(asked, ",")
	first = strings.TrimSpace(first)
	if first == "" || first == "Infinite" {
		return granted
	}
	digits, ok := strings.CutPrefix(first, "Second-")
	if !ok {
		return asked
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return asked
	}
	if n > uint64(maxLockTimeout/time.Second) {
		return granted
	}
	return first
}

// maxXMLBody bounds a PROPFIND, PROPPATCH or LOCK body, which is read
// whole to be checked: property names and values or a lock's owner, never
// file content.
const maxXMLBody = 1 << 20

// checkXMLBody reads a PROPFIND, PROPPATCH or LOCK body and refuses (400) what
// x/net/webdav would take but XML Namespaces 1.0 forbids: a prefix
// declared with an empty name (xmlns:p=""). It returns the body to hand
// on.
func checkXMLBody(body io.ReadCloser) (io.ReadCloser, int, string) {
	b, err := io.ReadAll(io.LimitReader(body, maxXMLBody+1))
	body.Close()
	switch {
	case err != nil:
		return nil, http.StatusBadRequest, "reading the body: " + err.Error()
	case len(b) > maxXMLBody:
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("an XML body over %d bytes", maxXMLBody)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.RawToken()
		if err != nil {
			break // EOF, or a syntax error webdav answers itself
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Space == "xmlns" && a.Value == "" {
					return nil, http.StatusBadRequest, "the namespace prefix " + a.Name.Local + " is declared empty"
				}
			}
		}
	}
	return io.NopCloser(bytes.NewReader(b)), 0, ""
}

func bad(p string) bool {
	return strings.ContainsRune(p, 0) || strings.Contains(p, "//") || strings.Contains(p, "/./") ||
		strings.Contains(p, "/../") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}

func (h *Handler) logError(r *http.Request, err error) {
	if err == nil {
		return
	}
	level := slog.LevelDebug
	if e := stateOf(r.Context()).volumeErr(); e != nil {
		level, err = slog.LevelError, e
	}
	h.log.LogAttrs(r.Context(), level, "dav: request failed", slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.String("err", err.Error()))
}

// reqState is what one request's FileSystem calls tell its handler.
type reqState struct {
	putLength int64  // a PUT's declared body length (-1: none or chunked)
	verb      string // the request's method
	// src and dst are a COPY's or MOVE's source and destination, as
	// volume paths ("": not one, or a Destination webdav refuses).
	src, dst string

	mu  sync.Mutex
	err error // the first failure of the volume or the body, for the status
}

type stateKey struct{}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// putLength is the declared PUT body length of ctx's request (-1: none).
func putLength(ctx context.Context) int64 {
	if st := stateOf(ctx); st != nil {
		return st.putLength
	}
	return -1
}

// noteErr records err on ctx's request if it decides the status
// (statusOf), keeping the first such.
func noteErr(ctx context.Context, err error) {
	st := stateOf(ctx)
	if st == nil || statusOf(err) == 0 {
		return
	}
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.mu.Unlock()
}

// method is the request's method ("" without a request).
func (st *reqState) method() string {
	if st == nil {
		return ""
	}
	return st.verb
}

func (st *reqState) volumeErr() error {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// statusOf is the status /v1 gives err when it is a failure of the volume
// or of the request body rather than a refusal webdav words itself (0).
func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage
	case errors.As(err, &mbe), errors.Is(err, ext.ErrTooLarge), errors.Is(err, syscall.EFBIG):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout
	case errors.Is(err, ErrShortBody), errors.Is(err, io.ErrUnexpectedEOF), isSourceError(err):
		return http.StatusBadRequest
	case errors.Is(err, ext.ErrIsDir):
		return http.StatusConflict // a PUT naming a collection (webdav says 404)
	case errors.Is(err, ext.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, syscall.EIO), errors.Is(err, ext.ErrCorrupt):
		return http.StatusInternalServerError
	}
	return 0
}

// isSourceError reports a body that failed (a client gone or too slow)
// rather than the volume. A COPY's source failing is the volume's error
// and was noted first, by the source's Read.
func isSourceError(err error) bool {
	var se *sourceError
	return errors.As(err, &se)
}

// statusWriter answers an error status with the status of the volume's
// failure behind it, if one was noted (webdav answers a failed PUT with
// 405 whatever the cause). Success answers, and multistatus bodies, pass
// through untouched.
type statusWriter struct {
	http.ResponseWriter
	st      *reqState
	swallow bool // our own error text was written: drop webdav's
}

func (sw *statusWriter) WriteHeader(code int) {
	if code >= 400 {
		if err := sw.st.volumeErr(); err != nil {
			if s := statusOf(err); s != 0 && s != code {
				sw.swallow = true
				sw.Header().Set("Content-Type", "text/plain; charset=utf-8")
				sw.ResponseWriter.WriteHeader(s)
				_, _ = io.WriteString(sw.ResponseWriter, http.StatusText(s)+": "+err.Error()+"\n")
				return
			}
		}
	}
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(p []byte) (int, error) {
	if sw.swallow {
		return len(p), nil
	}
	return sw.ResponseWriter.Write(p)
}

// ReadFrom keeps the writer beneath's own ReadFrom (large chunks for a
// GET's body, copied from the page cache).
func (sw *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if sw.swallow {
		return io.Copy(io.Discard, r)
	}
	if rf, ok := sw.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{sw.ResponseWriter}, r)
}

// Unwrap lets http.ResponseController reach the connection.
func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// isDepthInfinity reports whether a PROPFIND asks for Depth: infinity,
// which is also what a missing Depth header means (RFC 4918 9.1).
func isDepthInfinity(r *http.Request) bool {
	d := strings.TrimSpace(r.Header.Get("Depth"))
	return d == "" || strings.EqualFold(d, "infinity")
}
