package drills

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/dustin/go-humanize"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/internal/voltest"
)

// The load drill's shape: clients, working set against cache, and the
// memory the daemon may use beyond its frame pool.
const (
	loadClients   = 64
	loadFiles     = 48      // read-only files, loadFileSize each
	loadFileSize  = 1 << 20 // 48 MiB read working set
	loadPutSize   = 256 << 10
	loadCache     = 16 << 20
	loadCacheFlag = "16MiB"
	// loadOverhead is what the daemon may hold beyond the frame pool:
	// the Go runtime and heap (page and Bio structs, the ring's request
	// slots), 64 connections' HTTP buffers (bufio 4+4 KiB, ServeContent's
	// 32 KiB copy buffer, a PUT's body chunk) and the binary's text. It is
	// the "about 64 MiB" README's --cache row promises.
	loadOverhead = 64 << 20
	// loadGoroutines bounds the daemon's goroutines: at most three per
	// connection (the conn's serve loop, its background reader, a body
	// pipe) plus a fixed hundred (runtime, ring workers, flusher, metrics).
	loadGoroutines = 3*loadClients + 100
)

// loadOp is one kind of request the clients mix.
type loadOp int

const (
	opRanged loadOp = iota
	opWhole
	opPut
	numLoadOps
)

func (o loadOp) String() string { return [...]string{"ranged GET", "whole GET", "PUT"}[o] }

// loadStats are the drill's counts, shared by the clients.
type loadStats struct {
	requests, ok, verified, wrong, errors5xx, other, hangs atomic.Int64
	mu                                                     sync.Mutex
	lat                                                    [numLoadOps]*hdrhistogram.Histogram
}

func (s *loadStats) record(op loadOp, d time.Duration) {
	s.mu.Lock()
	s.lat[op].RecordValue(d.Microseconds())
	s.mu.Unlock()
}

// TestLoad: 64 clients mix ranged GETs, whole GETs and PUTs against the
// real daemon, whose cache is a third of the read working set, for 10 s
// (60 s long): no 5xx, every body right, the daemon's RSS under its frame
// pool plus loadOverhead, its goroutines bounded; p50/p99 per op kind.
func TestLoad(t *testing.T) {
	dur := pick(10*time.Second, 60*time.Second)
	r := newRand("load")
	files := make([][]byte, loadFiles)
	tree := map[string]string{}
	for i := range files {
		files[i] = randBytes(r, loadFileSize)
		tree[fmt.Sprintf("r/%02d", i)] = string(files[i])
	}
	img := voltest.MakeImage(t, "256M", tree)
	d := testenv.StartDaemon(t, t.TempDir(), "--volume", img, "--cache", loadCacheFlag, "--log-level", "warn")
	for i := range loadClients {
		d.Must(http.StatusCreated, http.MethodPost, fmt.Sprintf("/v1/mkdir/w%02d", i), nil)
	}
	run := runLoad(t, d, files, dur)
	st := run.st
	row := Row{Drill: "load", Rounds: st.requests.Load(), Acknowledged: st.ok.Load(), Hangs: st.hangs.Load()}
	defer func() { summary.Add(row) }()
	checkLastPuts(t, d, img, run.last, st, &row)
	row.Verified, row.Lost = st.verified.Load(), st.wrong.Load()
	bound := engine.FrameBytes(loadCache) + loadOverhead
	lat := func(op loadOp) string {
		h := st.lat[op]
		return fmt.Sprintf("%s p50 %s p99 %s", op, time.Duration(h.ValueAtQuantile(50))*time.Microsecond,
			time.Duration(h.ValueAtQuantile(99))*time.Microsecond)
	}
	row.Note = fmt.Sprintf("%d clients %v, cache %s of a %s working set; %s; %s; %s; RSS peak %s (bound %s), goroutines peak %d (bound %d); %d/s",
		loadClients, dur, loadCacheFlag, humanize.IBytes(loadFiles*loadFileSize), lat(opRanged), lat(opWhole), lat(opPut),
		humanize.IBytes(uint64(run.peakRSS)), humanize.IBytes(uint64(bound)), run.peakG, loadGoroutines,
		int(float64(st.requests.Load())/dur.Seconds()))
	t.Log(row.Note)
	if n := st.errors5xx.Load(); n != 0 {
		t.Errorf("%d answers were 5xx", n)
	}
	if n := st.other.Load(); n != 0 {
		t.Errorf("%d requests failed otherwise (unexpected status or transport error)", n)
	}
	if row.Hangs != 0 {
		t.Errorf("%d requests outlived the client's 30 s timeout", row.Hangs)
	}
	if run.peakRSS > bound {
		t.Errorf("daemon RSS peaked at %s, over the frame pool plus %s (%s)", humanize.IBytes(uint64(run.peakRSS)),
			humanize.IBytes(loadOverhead), humanize.IBytes(uint64(bound)))
	}
	if run.peakG > loadGoroutines {
		t.Errorf("daemon goroutines peaked at %d, over %d", run.peakG, loadGoroutines)
	}
	if st.requests.Load() < loadClients {
		t.Errorf("only %d requests in %v", st.requests.Load(), dur)
	}
}

// loadRun is what a load run leaves: the counts, each client's last
// acknowledged PUT, the daemon's peaks.
type loadRun struct {
	st             *loadStats
	last           [][]byte
	peakRSS, peakG int64
}

// runLoad runs the clients against d for dur while watching the daemon.
func runLoad(t *testing.T, d *testenv.Daemon, files [][]byte, dur time.Duration) loadRun {
	st := &loadStats{}
	for i := range st.lat {
		st.lat[i] = hdrhistogram.New(1, 60_000_000, 3)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadClients, MaxConnsPerHost: loadClients}}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var peakRSS, peakG atomic.Int64
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		watchDaemon(ctx, t, d, &peakRSS, &peakG)
	}()
	run := loadRun{st: st, last: make([][]byte, loadClients)}
	var wg sync.WaitGroup
	for c := range loadClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := loadClient{id: c, url: d.URL, http: client, st: st, files: files,
				r: rand.New(rand.NewPCG(*seedFlag, uint64(c)))}
			run.last[c] = cl.run(ctx)
		}()
	}
	wg.Wait()
	<-watchDone
	// The high-water mark catches a peak between two samples.
	run.peakRSS = max(peakRSS.Load(), vmHWM(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid)))
	run.peakG = peakG.Load()
	return run
}

// checkLastPuts: every client's file is its last acknowledged PUT, on
// the daemon and, after a clean shutdown, on the image.
func checkLastPuts(t *testing.T, d *testenv.Daemon, img string, last [][]byte, st *loadStats, row *Row) {
	for c, want := range last {
		if want == nil {
			continue
		}
		path := fmt.Sprintf("/w%02d/f", c)
		if got := d.Must(http.StatusOK, http.MethodGet, "/v1/files"+path, nil); !bytes.Equal(got, want) {
			st.wrong.Add(1)
			t.Errorf("%s: not the last acknowledged PUT", path)
		}
	}
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		row.Crashes++
		t.Fatalf("daemon exit %d:\n%s", code, d.Stderr.String())
	}
	for c, want := range last {
		if want == nil {
			continue
		}
		if got := debugfsCat(t, img, fmt.Sprintf("/w%02d/f", c)); !bytes.Equal(got, want) {
			st.wrong.Add(1)
			t.Errorf("client %d's file on the image is not its last acknowledged PUT", c)
		} else {
			st.verified.Add(1)
		}
	}
}

// watchDaemon samples the daemon's RSS and go_goroutines until ctx ends.
func watchDaemon(ctx context.Context, t *testing.T, d *testenv.Daemon, peakRSS, peakG *atomic.Int64) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if rss := d.RSS(); rss > peakRSS.Load() {
			peakRSS.Store(rss)
		}
		if g := int64(scalarValue(t, scrapeMetrics(t, d.URL), "go_goroutines")); g > peakG.Load() {
			peakG.Store(g)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// loadClient is one of the drill's clients.
type loadClient struct {
	id    int
	url   string
	http  *http.Client
	st    *loadStats
	files [][]byte
	r     *rand.Rand
}

// run sends requests until ctx ends and returns its last acknowledged
// PUT body.
func (c *loadClient) run(ctx context.Context) []byte {
	var last []byte
	for ctx.Err() == nil {
		op := opRanged
		switch x := c.r.IntN(100); {
		case x >= 80:
			op = opPut
		case x >= 45:
			op = opWhole
		}
		if body := c.one(op); body != nil {
			last = body
		}
	}
	return last
}

// one sends one request of op, checks it, and returns a PUT's body once
// it is acknowledged.
func (c *loadClient) one(op loadOp) []byte {
	i := c.r.IntN(len(c.files))
	want := c.files[i]
	var req *http.Request
	var put []byte
	switch op {
	case opRanged:
		off := c.r.IntN(len(want))
		end := min(off+c.r.IntN(64<<10), len(want)-1)
		want = want[off : end+1]
		req, _ = http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/files/r/%02d", c.url, i), nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
	case opWhole:
		req, _ = http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/files/r/%02d", c.url, i), nil)
	case opPut:
		put = randBytes(c.r, 1+c.r.IntN(loadPutSize))
		req, _ = http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/files/w%02d/f", c.url, c.id), bytes.NewReader(put))
	}
	c.st.requests.Add(1)
	start := time.Now()
	resp, err := c.http.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	c.st.record(op, time.Since(start))
	switch {
	case err != nil && time.Since(start) >= c.http.Timeout:
		c.st.hangs.Add(1)
		return nil
	case err != nil:
		c.st.other.Add(1)
		return nil
	case resp.StatusCode >= 500:
		c.st.errors5xx.Add(1)
		return nil
	case op == opPut && (resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusNoContent):
		c.st.ok.Add(1)
		return put
	case op != opPut && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent):
		c.st.ok.Add(1)
		if bytes.Equal(body, want) {
			c.st.verified.Add(1)
		} else {
			c.st.wrong.Add(1)
		}
		return nil
	}
	c.st.other.Add(1)
	return nil
}
