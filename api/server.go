package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mpaged/mpaged/fs/ext"
)

// Config configures a Server. Zero fields take the defaults named.
type Config struct {
	Volume *ext.Volume
	// ReadOnlyReason, if set, serves a writable volume read-only and says
	// why (the daemon could not check or repair it).
	ReadOnlyReason string
	// Token, if set, is the bearer token every /v1 request must carry
	// (Authorization: Bearer TOKEN). Health, readiness and metrics stay
	// open: probes and scrapers run on the same host or network.
	Token string
	// MaxBodyBytes bounds a PUT body (default 64 GiB).
	MaxBodyBytes int64
	// MaxConcurrent bounds /v1 requests served at once (default 64);
	// QueueTimeout is how long one beyond it waits for a turn before a
	// 503 (default 10 s).
	MaxConcurrent int
	QueueTimeout  time.Duration
	// IdleTimeout bounds a stall inside a request body or response: each
	// chunk read or written renews it (default 30 s); it also bounds, up
	// to 10 s, how long a client may take to send its headers. MinRate is the
	// least a body must move per second, averaged over each IdleTimeout
	// (default 1 KiB/s): a client that trickles holds one of the
	// MaxConcurrent slots, so it is cut off too.
	IdleTimeout time.Duration
	MinRate     int64
	// Logger receives one line per request and the errors the API could
	// not answer with. Nil discards.
	Logger *slog.Logger
	// Instrument wraps each route's handler with metrics under a fixed
	// route name (metrics.Instrument). Nil leaves them bare.
	Instrument func(route string, h http.Handler) http.Handler
	// Metrics, if set, is served at GET /metrics.
	Metrics http.Handler
}

// Server is the HTTP API over one volume.
type Server struct {
	cfg      Config
	vol      *ext.Volume
	log      *slog.Logger
	token    [sha256.Size]byte
	slots    chan struct{}
	shutting atomic.Bool
	handler  http.Handler
}

// New builds a Server for cfg.Volume.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 30
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.MinRate <= 0 {
		cfg.MinRate = 1 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Instrument == nil {
		cfg.Instrument = func(_ string, h http.Handler) http.Handler { return h }
	}
	s := &Server{cfg: cfg, vol: cfg.Volume, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxConcurrent)}
	if cfg.Token != "" {
		s.token = sha256.Sum256([]byte(cfg.Token))
	}
	s.handler = s.routes()
	return s
}

// Handler is the API's root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// SetShuttingDown makes /readyz answer 503 and new /v1 requests too;
// requests already admitted run to their end.
func (s *Server) SetShuttingDown() { s.shutting.Store(true) }

// NewHTTPServer is an http.Server for the API with its header limits and
// timeouts: slow or idle clients are cut off; bodies are bounded per
// chunk by IdleTimeout instead of a whole-request deadline, so large
// transfers work at any steady speed. Serve it a listener from
// WrapListener, so that small answers go out in one write.
func (s *Server) NewHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		ConnContext:       ConnContext,
		ReadHeaderTimeout: min(10*time.Second, s.cfg.IdleTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// route is one path pattern and its handlers by method.
type route struct {
	name    string // metrics label: fixed, never the URL
	pattern string
	methods map[string]http.HandlerFunc
	v1      bool // auth, shutdown and concurrency rules apply
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range []route{
		{"files", "/v1/files/", map[string]http.HandlerFunc{
			http.MethodGet: s.getFile, http.MethodHead: s.getFile, http.MethodPut: s.putFile, http.MethodDelete: s.deleteFile}, true},
		{"mkdir", "/v1/mkdir/", map[string]http.HandlerFunc{http.MethodPost: s.mkdir}, true},
		{"fsync", "/v1/fsync/", map[string]http.HandlerFunc{http.MethodPost: s.fsync}, true},
		{"sync", "/v1/sync", map[string]http.HandlerFunc{http.MethodPost: s.sync}, true},
		{"healthz", "/healthz", map[string]http.HandlerFunc{http.MethodGet: s.healthz, http.MethodHead: s.healthz}, false},
		{"readyz", "/readyz", map[string]http.HandlerFunc{http.MethodGet: s.readyz, http.MethodHead: s.readyz}, false},
	} {
		mux.Handle(rt.pattern, s.cfg.Instrument(rt.name, s.dispatch(rt)))
	}
	mux.Handle(davPrefix+"/", s.cfg.Instrument("dav", s.davRoute()))
	if s.cfg.Metrics != nil {
		mux.Handle("/metrics", s.cfg.Metrics)
	}
	mux.Handle("/", s.cfg.Instrument("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apiError(http.StatusNotFound, "not_found", "no such route: "+r.URL.Path))
	})))
	return s.accessLog(refuseDotSegments(mux))
}

// refuseDotSegments answers 400 for a path with "." or ".." segments or
// an empty one ("//"), which net/http's mux would otherwise redirect to
// the cleaned path: a client that follows the redirect would then write
// or delete a file it did not name.
func refuseDotSegments(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; !strings.HasPrefix(p, "/") || hasDotSegment(p) {
			// A target that is not a path ("*", found by FuzzHTTP)
			// would get a bare 400 from the mux: say why, in JSON.
			writeError(w, apiError(http.StatusBadRequest, "invalid_path", "paths start with / and may not hold empty, . or .. segments: "+p))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hasDotSegment reports whether the URL path p (which starts with "/")
// has an empty segment (other than a trailing slash's), a "." or a "..".
func hasDotSegment(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}

// dispatch picks the route's handler by method (405 with Allow
// otherwise) behind the /v1 rules: token, shutdown, concurrency.
func (s *Server) dispatch(rt route) http.Handler {
	allow := make([]string, 0, len(rt.methods))
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete} {
		if rt.methods[m] != nil {
			allow = append(allow, m)
		}
	}
	allowHeader := strings.Join(allow, ", ")
	pathed := rt.v1 && strings.HasSuffix(rt.pattern, "/") // the rest of the URL is a volume path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only a PUT reads its body (renewing this deadline as it goes):
		// any other request's body is not drained, the connection closes
		// after the answer, and the deadline bounds what net/http reads.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if r.Method != http.MethodPut && r.ContentLength != 0 {
			w.Header().Set("Connection", "close")
		}
		h := rt.methods[r.Method]
		if rt.v1 && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mpaged"`)
			writeError(w, apiError(http.StatusUnauthorized, "unauthorized", "a valid bearer token is required"))
			return
		}
		if h == nil {
			w.Header().Set("Allow", allowHeader)
			writeError(w, apiError(http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; allowed: "+allowHeader))
			return
		}
		if rt.v1 {
			if err := s.admit(r); err != nil {
				writeError(w, err)
				return
			}
			defer s.release()
		}
		if pathed && ext.IsStagingPath(volumePath(r)) {
			// Spelled: refused here. Through a link: the volume's
			// ext.ErrHidden, answered alike (statusOf).
			writeError(w, errHidden)
			return
		}
		h(w, r)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") { // schemes are case-insensitive (RFC 9110)
		return false
	}
	// Comparing digests keeps the comparison constant-time whatever the
	// lengths.
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], s.token[:]) == 1
}

// admit takes a concurrency slot, waiting up to QueueTimeout, or refuses
// the request while shutting down. An admitted request gives its slot
// back with release.
func (s *Server) admit(r *http.Request) *Error {
	if s.shutting.Load() {
		return errShuttingDown
	}
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(s.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-t.C:
		return apiError(http.StatusServiceUnavailable, "busy", "too many requests in progress; retry later")
	case <-r.Context().Done():
		return apiError(http.StatusServiceUnavailable, "busy", "client went away while waiting for a turn")
	}
}

// release gives back the slot admit took.
func (s *Server) release() { <-s.slots }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 200 while requests are taken, 503 once shutdown began; it
// says whether the volume is served read-only, and why.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ro, why := s.readOnly()
	body := map[string]any{"status": "ready", "read_only": ro}
	if ro {
		body["read_only_reason"] = why
	}
	status := http.StatusOK
	if s.shutting.Load() {
		status, body["status"] = http.StatusServiceUnavailable, "shutting down"
	}
	writeJSON(w, status, body)
}

// readOnly says whether writes are refused, and why.
func (s *Server) readOnly() (bool, string) {
	if s.cfg.ReadOnlyReason != "" {
		return true, s.cfg.ReadOnlyReason
	}
	return s.vol.ReadOnly()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// statusWriter records what a handler answered, for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (sw *statusWriter) WriteHeader(code int) {
	if sw.status == 0 {
		sw.status = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(p []byte) (int, error) {
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	n, err := sw.ResponseWriter.Write(p)
	sw.bytes += int64(n)
	return n, err
}

func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// accessLog writes one line per request (when the logger takes Info;
// otherwise it costs nothing).
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.Enabled(r.Context(), slog.LevelInfo) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes),
			slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr))
	})
}
