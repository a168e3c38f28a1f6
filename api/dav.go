package api

import (
	"net/http"
	"time"

	"github.com/mpaged/mpaged/dav"
)

// davPrefix is where WebDAV is mounted.
const davPrefix = "/dav"

// davRoute serves package dav at /dav/ under the /v1 rules: the bearer
// token, shutdown, the concurrency limit, MaxBodyBytes, and the idle
// timeout and minimum rate on request and response bodies.
func (s *Server) davRoute() http.Handler {
	h := dav.New(dav.Config{Volume: s.vol, Prefix: davPrefix, ReadOnly: s.readOnly, Logger: s.log})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mpaged"`)
			writeError(w, apiError(http.StatusUnauthorized, "unauthorized", "a valid bearer token is required"))
			return
		}
		if r.Method == http.MethodPut {
			if e := s.checkBodyLength(r); e != nil {
				writeError(w, e)
				return
			}
		}
		if e := s.admit(r); e != nil {
			writeError(w, e)
			return
		}
		defer s.release()
		// Every WebDAV method may carry a body (PROPFIND, LOCK and
		// PROPPATCH bodies are XML): all are bounded alike.
		r.Body = struct {
			*idleReader
			closer
		}{s.newBodyReader(w, r), closer{r.Body}}
		h.ServeHTTP(&idleWriter{ResponseWriter: w, rc: http.NewResponseController(w),
			idle: s.cfg.IdleTimeout, pace: newPace(s.cfg.IdleTimeout, s.cfg.MinRate)}, r)
	})
}

// closer closes a request body beneath the readers that wrap it.
type closer struct{ body interface{ Close() error } }

func (c closer) Close() error { return c.body.Close() }
