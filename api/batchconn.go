package api

import (
	"context"
	"net"
	"net/http"
	"time"
)

// net/http writes a response through a 4 KiB buffer on the connection:
// a 4 KiB body and its header are at least two write(2)s, the buffer's
// worth and then the rest, each a system call and a trip through the
// TCP stack. A batchConn lets the handler of a small answer gather both
// writes and send them as one.

// WrapListener wraps ln so that each connection it accepts can gather a
// small answer into one write. Serve it with the http.Server from
// NewHTTPServer (or one whose ConnContext is ConnContext); without
// either, answers go out as net/http writes them.
func WrapListener(ln net.Listener) net.Listener { return batchListener{ln} }

type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

// ConnContext is the http.Server hook that lets handlers find their
// connection's batchConn; NewHTTPServer sets it.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if bc, ok := c.(*batchConn); ok {
		return context.WithValue(ctx, batchConnKey{}, bc)
	}
	return ctx
}

type batchConnKey struct{}

// batchConnOf is the connection r arrived on, if it can gather (nil
// otherwise).
func batchConnOf(r *http.Request) *batchConn {
	bc, _ := r.Context().Value(batchConnKey{}).(*batchConn)
	return bc
}

// batchConn holds the writes made between hold and release and sends
// them in one. Only the goroutine serving the connection's current
// request writes to it (net/http serves HTTP/1 requests one after
// another, each on the connection's goroutine), and only that handler
// calls hold and release, so it needs no lock.
type batchConn struct {
	net.Conn
	held []byte // nil: not gathering
}

// hold starts gathering into buf (whose capacity bounds the gathered
// bytes: a write beyond it sends what was gathered, then itself).
func (c *batchConn) hold(buf []byte) { c.held = buf[:0] }

func (c *batchConn) Write(p []byte) (int, error) {
	if c.held == nil {
		return c.Conn.Write(p)
	}
	if len(c.held)+len(p) <= cap(c.held) {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if err := c.send(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// send writes what was gathered and keeps gathering.
func (c *batchConn) send() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	if err != nil {
		c.fail()
	}
	return err
}

// release sends what was gathered, under a write deadline idle from now,
// and stops gathering. The buffer given to hold is the caller's again.
// A failed write closes the connection: net/http did not see it fail,
// and must not serve another request on a connection that lost part of
// an answer.
func (c *batchConn) release(idle time.Duration) error {
	if len(c.held) > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(idle))
	}
	err := c.send()
	c.held = nil
	return err
}

// drop stops gathering and discards what was gathered (nothing after
// release). The handler defers it so that a panic leaves no reference to
// the buffer it gave hold.
func (c *batchConn) drop() { c.held = nil }

func (c *batchConn) fail() { _ = c.Conn.Close() }

// CloseWrite passes net/http's half-close (sent before it closes a
// connection after an error, so the client reads the answer before a
// reset) to the connection beneath.
func (c *batchConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
