package api_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/metrics"
)

// rangeFileBlocks is the size of the file the ranged-GET benchmark and
// tests read, in 4 KiB blocks; every block's bytes differ.
const rangeFileBlocks = 64

func rangeFileContent() string {
	var b bytes.Buffer
	for i := range rangeFileBlocks * 4096 / 8 {
		fmt.Fprintf(&b, "%07x\n", i*7919)
	}
	return b.String()
}

// daemonStack serves content at /v1/files/f through the API as the
// daemon stacks it: metrics middleware on every route, a logger at warn
// (the bench's --log-level) unless cfg has one, no token.
func daemonStack(tb testing.TB, content string, cfg api.Config) *apitest.Env {
	cfg.Instrument = metrics.New(metrics.Options{}).Instrument
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return apitest.New(tb, apitest.Options{Tree: map[string]string{"f": content}, Cfg: cfg})
}

// rawClient sends pre-built requests on one keep-alive connection and
// reads the answers with a parser of its own, so that a benchmark's
// allocations are the server's, not a client's.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
	body []byte
}

func dialRaw(tb testing.TB, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{conn: c, br: bufio.NewReaderSize(c, 16<<10), body: make([]byte, 1<<20)}
}

// rangeRequest is a GET of 4 KiB at block blk of /v1/files/f.
func rangeRequest(blk int) []byte {
	off := blk * 4096
	return fmt.Appendf(nil, "GET /v1/files/f HTTP/1.1\r\nHost: bench\r\nRange: bytes=%d-%d\r\n\r\n", off, off+4095)
}

// do sends req and reads one answer: its status and body (valid until
// the next call).
func (c *rawClient) do(req []byte) (int, []byte, error) {
	if _, err := c.conn.Write(req); err != nil {
		return 0, nil, err
	}
	status, length := 0, -1
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if length < 0 || length > len(c.body) {
				return status, nil, fmt.Errorf("answer %d with length %d", status, length)
			}
			_, err := io.ReadFull(c.br, c.body[:length])
			return status, c.body[:length], err
		case status == 0:
			if len(line) < 12 {
				return 0, nil, fmt.Errorf("status line %q", line)
			}
			status, err = strconv.Atoi(string(line[9:12]))
		case len(line) > 16 && bytes.EqualFold(line[:16], []byte("Content-Length: ")):
			length, err = strconv.Atoi(string(line[16:]))
		}
		if err != nil {
			return 0, nil, err
		}
	}
}

// BenchmarkRangeGET is a 4 KiB ranged GET of a cached file through the
// daemon's handler stack over a real loopback connection, one client
// (serial) or one connection per parallel goroutine (parallel). The
// client parses answers without allocating: allocs/op are the server's.
func BenchmarkRangeGET(b *testing.B) {
	content := rangeFileContent()
	e := daemonStack(b, content, api.Config{})
	reqs := make([][]byte, rangeFileBlocks)
	for i := range reqs {
		reqs[i] = rangeRequest(i)
	}
	e.Get("/v1/files/f") // every page cached
	// check is one request and its answer checked (an error rather than
	// b.Fatal: RunParallel's goroutines may not call FailNow).
	check := func(c *rawClient, i int) error {
		status, body, err := c.do(reqs[i%rangeFileBlocks])
		if err != nil || status != http.StatusPartialContent {
			return fmt.Errorf("range %d: %d %v", i, status, err)
		}
		if off := i % rangeFileBlocks * 4096; string(body) != content[off:off+4096] {
			return fmt.Errorf("range %d: wrong bytes", i)
		}
		return nil
	}
	b.Run("serial", func(b *testing.B) {
		c := dialRaw(b, e.TS.Listener.Addr().String())
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := check(c, i); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			c := dialRaw(b, e.TS.Listener.Addr().String())
			i := int(next.Add(1)) * 13
			for pb.Next() {
				if err := check(c, i); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
