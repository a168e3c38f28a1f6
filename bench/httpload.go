package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// loadGen is the load generator both servers are driven by: workers that
// each own an http.Transport (so one keep-alive connection each, opened
// before the clock starts), latency per request into an HDR histogram, and
// every body checked: a whole-file GET against the file's CRC-32C, a
// ranged GET byte for byte against the file's content at its offset.
type loadGen struct {
	// url is the bench file's URL on the server.
	url  string
	file *benchFile
	// dials counts the connections opened, across workers.
	dials atomic.Int64
}

func newLoadGen(url string, file *benchFile) *loadGen { return &loadGen{url: url, file: file} }

// client is one worker's: its own Transport, keep-alive on, no
// compression, no proxy (a fresh Transport reads no proxy settings).
func (g *loadGen) client(conns int) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			g.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true,
		ReadBufferSize:        64 << 10,
		WriteBufferSize:       4 << 10,
	}
	return &http.Client{Transport: tr}
}

// connect opens the worker's connection before the clock starts: a HEAD
// of the file, which reads no data.
func (g *loadGen) connect(ctx context.Context, c *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, g.url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w: HEAD %s: %v", ErrRunner, g.url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HEAD %s: %s", ErrRunner, g.url, resp.Status)
	}
	return nil
}

// getWhole GETs the whole file once and checks its length and checksum.
// Hooks bracket the timed part (the request, to the body's last byte);
// Visit sees the body in order.
func (g *loadGen) getWhole(ctx context.Context, h Hooks) (Measurement, error) {
	c := g.client(1)
	defer c.CloseIdleConnections()
	if err := g.connect(ctx, c); err != nil {
		return Measurement{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		return Measurement{}, err
	}
	buf := make([]byte, 1<<20)
	if h.Begin != nil {
		h.Begin()
	}
	start := time.Now()
	n, crc, err := g.fetchWhole(c, req, buf, h.Visit)
	elapsed := time.Since(start)
	if h.End != nil {
		h.End()
	}
	if err != nil {
		return Measurement{}, fmt.Errorf("%w: GET %s: %w", ErrRunner, g.url, err)
	}
	if n != g.file.Size || crc != g.file.CRC {
		return Measurement{}, fmt.Errorf("%w: GET %s: %d bytes, CRC-32C %08x; the file has %d bytes, CRC-32C %08x",
			ErrRunner, g.url, n, crc, g.file.Size, g.file.CRC)
	}
	hist := newLatencyHistogram()
	_ = hist.RecordValue(min(max(int64(elapsed), 1), maxLatency))
	return Measurement{ReadOps: 1, ReadBytes: n, Elapsed: elapsed, ReadLatency: hist}, nil
}

// fetchWhole does one GET and streams its body through the checksum.
func (g *loadGen) fetchWhole(c *http.Client, req *http.Request, buf []byte, visit func(int64, []byte)) (int64, uint32, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %s", resp.Status)
	}
	if resp.ContentLength != g.file.Size {
		return 0, 0, fmt.Errorf("Content-Length %d, want %d", resp.ContentLength, g.file.Size)
	}
	var n int64
	var crc uint32
	for {
		m, err := resp.Body.Read(buf)
		if m > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:m])
			if visit != nil {
				visit(n, buf[:m])
			}
			n += int64(m)
		}
		if errors.Is(err, io.EOF) {
			return n, crc, nil
		}
		if err != nil {
			return n, crc, err
		}
	}
}

// getRanges runs w (RangeGet): Concurrency workers each GET RangeSize
// bytes at offsets from one shared random permutation of the file's
// RangeSize blocks (each block once per pass, as randread visits the
// device), until w.Duration passes or ctx is done.
func (g *loadGen) getRanges(ctx context.Context, w Workload, h Hooks) (Measurement, error) {
	hw := w.HTTP
	size := int64(hw.RangeSize)
	if hw.Concurrency < 1 || size < 1 || g.file.Size < size {
		return Measurement{}, fmt.Errorf("%w: %s: concurrency %d, ranges of %d bytes in a %d-byte file", ErrConfig, w.Name, hw.Concurrency, size, g.file.Size)
	}
	gen := newOffsets(Workload{Pattern: Random, BlockSize: hw.RangeSize, Region: g.file.Size / size * size, Duration: w.Duration, Seed: w.Seed})
	workers := make([]*rangeWorker, hw.Concurrency)
	for i := range workers {
		workers[i] = &rangeWorker{g: g, c: g.client(hw.Concurrency), hist: newLatencyHistogram(),
			body: make([]byte, size+1), want: make([]byte, size), visit: h.Visit}
		defer workers[i].c.CloseIdleConnections()
		if err := g.connect(ctx, workers[i].c); err != nil {
			return Measurement{}, err
		}
	}
	start := runTimed(ctx, w.Duration, h, len(workers), func(i int, stop *atomic.Bool) { workers[i].run(ctx, gen, stop) })
	elapsed := time.Since(start)
	if h.End != nil {
		h.End()
	}
	m := Measurement{Elapsed: elapsed, ReadLatency: newLatencyHistogram()}
	var err error
	for _, wk := range workers {
		err = errors.Join(err, wk.err)
		m.ReadOps += wk.ops
		m.ReadBytes += wk.bytes
		m.ReadLatency.Merge(wk.hist)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return m, err
}

// rangeWorker is one connection of a ranged run.
type rangeWorker struct {
	g          *loadGen
	c          *http.Client
	hist       *hdrhistogram.Histogram
	body, want []byte // body has a byte more than a range: a longer body shows
	visit      func(int64, []byte)
	ops, bytes int64
	err        error
}

func (wk *rangeWorker) run(ctx context.Context, gen *offsets, stop *atomic.Bool) {
	for !stop.Load() {
		off, ok := gen.take()
		if !ok {
			return
		}
		t0 := time.Now()
		n, err := wk.fetch(ctx, off)
		lat := int64(time.Since(t0))
		if err == nil {
			err = wk.check(off, n)
		}
		if err != nil {
			if ctx.Err() == nil {
				wk.err = fmt.Errorf("%w: GET %s range at %d: %w", ErrRunner, wk.g.url, off, err)
			}
			stop.Store(true)
			return
		}
		_ = wk.hist.RecordValue(min(max(lat, 1), maxLatency))
		wk.ops++
		wk.bytes += int64(n)
		if wk.visit != nil {
			wk.visit(off, wk.body[:n])
		}
	}
}

// fetch GETs the range at off into wk.body and reads the body to its end,
// so the connection is kept for the next request.
func (wk *rangeWorker) fetch(ctx context.Context, off int64) (int, error) {
	size := len(wk.want)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wk.g.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+int64(size)-1, 10))
	resp, err := wk.c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, wk.body)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil // shorter than a range and a byte: check says what is wrong
	}
	if err != nil {
		return n, err
	}
	if resp.StatusCode != http.StatusPartialContent {
		return n, fmt.Errorf("status %s, want 206", resp.Status)
	}
	want := fmt.Sprintf("bytes %d-%d/%d", off, off+int64(size)-1, wk.g.file.Size)
	if got := resp.Header.Get("Content-Range"); got != want {
		return n, fmt.Errorf("Content-Range %q, want %q", got, want)
	}
	return n, nil
}

// check compares a range's body with the file's bytes at off.
func (wk *rangeWorker) check(off int64, n int) error {
	if n != len(wk.want) {
		return fmt.Errorf("%d bytes, want %d", n, len(wk.want))
	}
	if _, err := wk.g.file.ReadAt(wk.want, off); err != nil {
		return err
	}
	if !bytes.Equal(wk.body[:n], wk.want) {
		i := 0
		for wk.body[i] == wk.want[i] {
			i++
		}
		return fmt.Errorf("body differs from the file at byte %d of the range", i)
	}
	return nil
}
