package api

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/mpaged/mpaged/fs/ext"
)

// A GET of one small byte range (the ranged-read workload: 4 KiB at a
// time) is answered here instead of by http.ServeContent: the range is
// read from the page cache into a pooled buffer first, and only then
// are the header and the body written, gathered into one write on a
// connection from WrapListener. It answers exactly what ServeContent
// would (the same status and headers, Date aside) and only where that
// is simple to be sure of; every other request — HEAD, several ranges,
// any conditional header, a range that is not satisfiable or is larger
// than smallRangeMax, a name whose type ServeContent would sniff —
// goes to ServeContent.

// smallRangeMax is the largest range answered by serveSmallRange: the
// body is held whole in memory, and the answer gathered for one write.
const smallRangeMax = 64 << 10

// answerMax is what a gathered answer may take: the body and a header
// well within the rest (net/http writes ours in a few hundred bytes; a
// larger header only costs one more write).
const answerMax = smallRangeMax + 4<<10

// smallBufs hold a range's bytes, then (separately) the gathered answer.
var smallBufs = sync.Pool{New: func() any { b := make([]byte, answerMax); return &b }}

// conditionalHeaders are the request headers that make ServeContent
// evaluate a precondition (RFC 9110 13.1): a request with any of them
// takes ServeContent's path.
var conditionalHeaders = [...]string{"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"}

// smallRangeOf returns the single range a GET asks for, when the fast
// path may answer it (ok false: ServeContent answers).
func smallRangeOf(r *http.Request, size int64) (start, length int64, ok bool) {
	if r.Method != http.MethodGet {
		return 0, 0, false
	}
	h := r.Header
	for _, k := range conditionalHeaders {
		if len(h[k]) != 0 {
			return 0, 0, false
		}
	}
	rng := h["Range"]
	if len(rng) == 0 {
		return 0, 0, false
	}
	start, length, ok = singleRange(rng[0], size)
	return start, length, ok && length <= smallRangeMax
}

// singleRange parses a Range header of exactly one satisfiable byte
// range in its plain forms, "bytes=first-last", "bytes=first-" and
// "bytes=-suffix" (decimal digits, no spaces), against a file of size
// bytes; it resolves it as ServeContent does (a last byte past the end
// is the end, a suffix longer than the file is the whole file). Anything
// else — several ranges, spaces, signs, a range past the end, an empty
// result — is not ok, and is left to ServeContent's rules.
func singleRange(h string, size int64) (start, length int64, ok bool) {
	const unit = "bytes="
	if len(h) <= len(unit) || h[:len(unit)] != unit {
		return 0, 0, false
	}
	spec := h[len(unit):]
	dash := -1
	for i := 0; i < len(spec); i++ {
		if spec[i] == '-' {
			dash = i
			break
		}
	}
	if dash < 0 {
		return 0, 0, false
	}
	first, last := spec[:dash], spec[dash+1:]
	if first == "" { // a suffix: the last N bytes
		n, ok := decimal(last)
		if !ok || n == 0 || size == 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, true
	}
	s, ok := decimal(first)
	if !ok || s >= size {
		return 0, 0, false
	}
	end := size - 1
	if last != "" {
		e, ok := decimal(last)
		if !ok || e < s {
			return 0, 0, false
		}
		end = min(e, end)
	}
	return s, end - s + 1, true
}

// decimal parses a non-negative decimal of at most 18 digits (so it
// cannot overflow); anything else is not ok.
func decimal(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// contentTypeOf is the type ServeContent would send for p without
// sniffing: ours for a name without an extension, the extension's
// otherwise ("" where ServeContent would read the file's head to guess).
func contentTypeOf(p string) string {
	ext := path.Ext(p)
	if ext == "" {
		return octetStream
	}
	return mime.TypeByExtension(ext)
}

const octetStream = "application/octet-stream"

// serveSmallRange answers a GET of [start, start+length) of f, which fi
// describes, with 206 and the range in one write; false when it did not
// answer (nothing written: ServeContent's path is to answer).
func (s *Server) serveSmallRange(w http.ResponseWriter, r *http.Request, p string, f *ext.File, fi *ext.FileInfo, start, length int64) bool {
	ctype := contentTypeOf(p)
	if ctype == "" {
		return false
	}
	bp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(bp)
	body := (*bp)[:length]
	n, err := f.ReadAt(body, start)
	if n < len(body) {
		if err == nil || errors.Is(err, io.EOF) {
			// The file shrank since it was opened: ServeContent's
			// path answers as it always has (a body cut short).
			return false
		}
		s.log.Error("get: the first read failed; answered with the error", "path", p, "err", err)
		writeError(w, statusOf(err))
		return true
	}
	setRangeHeaders(w.Header(), fi, ctype, start, length)
	bc := batchConnOf(r)
	if bc == nil {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(body)
		return true
	}
	ap := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(ap)
	bc.hold(*ap)
	// Runs before ap goes back to the pool (defers run last first): a
	// panic between hold and release must not leave the connection
	// gathering into a buffer another request may be given.
	defer bc.drop()
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(body)
	_ = http.NewResponseController(w).Flush() // the answer, into the gathering
	if err := bc.release(s.cfg.IdleTimeout); err != nil {
		s.log.Debug("get: the client went away before the range was sent", "path", p, "err", err)
	}
	return true
}

// setRangeHeaders sets what ServeContent sends with a single range
// (Last-Modified unless the time is zero or the epoch, Content-Type,
// Content-Range, Accept-Ranges, Content-Length), and the ETag. Values
// share one string and one slice: two allocations, not one per header.
func setRangeHeaders(h http.Header, fi *ext.FileInfo, ctype string, start, length int64) {
	var buf [192]byte
	b := appendETag(buf[:0], fi)
	etagEnd := len(b)
	b = append(b, "bytes "...)
	b = strconv.AppendInt(b, start, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, start+length-1, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, fi.Size, 10)
	rangeEnd := len(b)
	b = strconv.AppendInt(b, length, 10)
	lengthEnd := len(b)
	mod := fi.ModTime
	if !mod.IsZero() && !mod.Equal(time.Unix(0, 0)) {
		b = mod.UTC().AppendFormat(b, http.TimeFormat)
	}
	all := string(b)
	vals := make([]string, 6)
	vals[0], vals[1], vals[2] = all[:etagEnd], all[etagEnd:rangeEnd], all[rangeEnd:lengthEnd]
	vals[3], vals[4] = ctype, "bytes"
	h["Etag"] = vals[0:1:1]
	h["Content-Range"] = vals[1:2:2]
	h["Content-Length"] = vals[2:3:3]
	h["Content-Type"] = vals[3:4:4]
	h["Accept-Ranges"] = vals[4:5:5]
	if lengthEnd < len(all) {
		vals[5] = all[lengthEnd:]
		h["Last-Modified"] = vals[5:6:6]
	}
}
