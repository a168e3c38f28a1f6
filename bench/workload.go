package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/mpaged/mpaged/mpage"
)

// Pattern is how a workload walks its region.
type Pattern uint8

const (
	// Sequential: one stream from offset 0, wrapping at the region's end.
	Sequential Pattern = iota
	// Random: a permutation of the region's blocks, each once per pass.
	Random
)

func (p Pattern) String() string {
	if p == Random {
		return "random"
	}
	return "sequential"
}

// Workload is one workload's config; Run is its run function.
type Workload struct {
	Name    string
	Pattern Pattern
	// ReadPercent is the share of reads: 100, 0, or in between (mix).
	ReadPercent int
	BlockSize   int
	Depth       int
	// Region is the byte range [0, Region) of the target it uses.
	Region int64
	// Duration bounds a run; 0 is one pass over the region.
	Duration time.Duration
	// Seed makes the random permutation and the write data repeatable.
	Seed uint64
	// Rep is the repetition this run belongs to (0-based), set by the
	// schedule; it names profiles.
	Rep int
	// HTTP is what an HTTP workload asks of a server; nil for the block
	// workloads. Only HTTP runners apply to HTTP workloads.
	HTTP *HTTPWorkload
}

// workloadSpec is a workload's definition before the config sizes it.
type workloadSpec struct {
	name        string
	pattern     Pattern
	readPercent int
	depth       int
}

// workloadSpecs are the workloads in the order they run: reads first, on
// the data the harness filled the target with, then writes and the mix.
var workloadSpecs = []workloadSpec{
	{"seqread", Sequential, 100, 32},
	{"randread", Random, 100, 128},
	{"seqwrite", Sequential, 0, 32},
	{"randwrite", Random, 0, 32},
	{"mix", Random, 70, 32},
}

func workloadNames() []string {
	var out []string
	for _, s := range workloadSpecs {
		out = append(out, s.name)
	}
	return out
}

// workloads builds the selected workloads of cfg (normalized), in run order.
func (c Config) workloads() []Workload {
	var out []Workload
	for i, s := range workloadSpecs {
		if len(c.Workloads) > 0 && !slices.Contains(c.Workloads, s.name) {
			continue
		}
		w := Workload{Name: s.name, Pattern: s.pattern, ReadPercent: s.readPercent, BlockSize: c.BlockSize,
			Depth: s.depth, Region: c.Size, Duration: c.Duration, Seed: uint64(i + 1)}
		if s.pattern == Random {
			w.BlockSize = randomBlockSize
		}
		if c.Depth > 0 {
			w.Depth = c.Depth
		}
		out = append(out, w)
	}
	return append(out, c.httpWorkloads()...)
}

// Reads and Writes say which directions the workload has.
func (w Workload) Reads() bool  { return w.ReadPercent > 0 }
func (w Workload) Writes() bool { return w.ReadPercent < 100 }

// Workers is how many goroutines Run uses on f: one stream for sequential
// workloads (readahead and writeback give the depth); for random ones one
// goroutine keeping Depth reads in flight through an mpage.Reader when f
// is a PageFile, else Depth goroutines, each with one blocking call in
// flight.
func (w Workload) Workers(f File) int {
	if w.Pattern == Sequential || w.asyncOn(f) != nil {
		return 1
	}
	return max(w.Depth, 1)
}

// File is what a workload runs on: an engine file (fs/raw), or anything
// with positioned reads and writes and a sync.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// PageFile is an engine file whose page cache random workloads read
// asynchronously (mpage.Reader): fs/raw's File.
type PageFile interface {
	File
	Mapping() *mpage.Mapping
}

// asyncOn is the mapping a random workload with reads of one page each
// reads through asynchronously, or nil.
func (w Workload) asyncOn(f File) *mpage.Mapping {
	pf, ok := f.(PageFile)
	if !ok || w.Pattern != Random || !w.Reads() || w.BlockSize != mpage.PageSize {
		return nil
	}
	return pf.Mapping()
}

// Hooks let a runner bracket the timed part of Run and tests see the data.
type Hooks struct {
	// Begin runs right before the clock starts, after Run's own setup
	// (buffers, permutation): counters snapshotted here see only the
	// workload.
	Begin func()
	// End runs right after the clock stops.
	End func()
	// Visit sees the bytes of every read (off, data). It runs in the
	// workers, inside the timed part: tests only.
	Visit func(off int64, b []byte)
}

// Measurement is what Run saw.
type Measurement struct {
	ReadOps, WriteOps     int64
	ReadBytes, WriteBytes int64
	Elapsed               time.Duration
	// ReadLatency and WriteLatency are histograms of per-call latency in
	// nanoseconds (ReadAt, WriteAt; the final Sync is in Elapsed only).
	ReadLatency, WriteLatency *hdrhistogram.Histogram
}

// Ops and Bytes sum both directions.
func (m Measurement) Ops() int64   { return m.ReadOps + m.WriteOps }
func (m Measurement) Bytes() int64 { return m.ReadBytes + m.WriteBytes }

// maxLatency bounds the histograms; slower calls are counted at the bound.
const maxLatency = int64(60 * time.Second)

func newLatencyHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, maxLatency, 3) }

// Run runs w on f until its duration passes (or, with Duration 0, for one
// pass over the region) or ctx is done, then syncs f if it wrote. Elapsed
// covers the calls and the sync.
func (w Workload) Run(ctx context.Context, f File, h Hooks) (Measurement, error) {
	if err := w.check(); err != nil {
		return Measurement{}, err
	}
	gen := newOffsets(w)
	rec := &latencyRecorder{read: newLatencyHistogram(), write: newLatencyHistogram()}
	workers := make([]*worker, w.Workers(f))
	for i := range workers {
		workers[i] = newWorker(w, i, gen, rec, h.Visit)
	}
	if m := w.asyncOn(f); m != nil {
		workers[0].async = newAsyncReads(m, w.Depth)
	}
	start := runTimed(ctx, w.Duration, h, len(workers), func(i int, stop *atomic.Bool) { workers[i].run(f, stop) })
	var err error
	for _, wk := range workers {
		err = errors.Join(err, wk.err)
	}
	if err == nil && w.Writes() {
		if serr := f.Sync(); serr != nil {
			err = fmt.Errorf("%s: sync: %w", w.Name, serr)
		}
	}
	elapsed := time.Since(start)
	if h.End != nil {
		h.End()
	}
	m := Measurement{Elapsed: elapsed, ReadLatency: rec.read, WriteLatency: rec.write}
	for _, wk := range workers {
		wk.flush()
		m.ReadOps += wk.readOps
		m.WriteOps += wk.writeOps
		m.ReadBytes += wk.readBytes
		m.WriteBytes += wk.writeBytes
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return m, err
}

func (w Workload) check() error {
	switch {
	case w.BlockSize <= 0 || w.Region < int64(w.BlockSize) || w.Region%int64(w.BlockSize) != 0:
		return fmt.Errorf("%w: workload %s: region %d is not a whole number of %d-byte blocks", ErrConfig, w.Name, w.Region, w.BlockSize)
	case w.Region/int64(w.BlockSize) > 1<<32:
		return fmt.Errorf("%w: workload %s: more than 2^32 blocks", ErrConfig, w.Name)
	case w.ReadPercent < 0 || w.ReadPercent > 100:
		return fmt.Errorf("%w: workload %s: read percent %d", ErrConfig, w.Name, w.ReadPercent)
	}
	return nil
}

// stopWhen sets stop when d passes (d > 0) or ctx is done; release ends
// the watch.
// runTimed runs n workers at once, from h.Begin until they return: each
// stops when stop turns true, as the duration d passes or ctx is done. It
// returns when the clock started.
func runTimed(ctx context.Context, d time.Duration, h Hooks, n int, worker func(i int, stop *atomic.Bool)) time.Time {
	var stop atomic.Bool
	if h.Begin != nil {
		h.Begin()
	}
	start := time.Now()
	release := stopWhen(ctx, d, &stop)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker(i, &stop)
		}()
	}
	wg.Wait()
	release()
	return start
}

func stopWhen(ctx context.Context, d time.Duration, stop *atomic.Bool) (release func()) {
	done := make(chan struct{})
	var timeout <-chan time.Time
	var timer *time.Timer
	if d > 0 {
		timer = time.NewTimer(d)
		timeout = timer.C
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-timeout:
		case <-done:
		}
		stop.Store(true)
	}()
	return func() {
		close(done)
		if timer != nil {
			timer.Stop()
		}
	}
}

// offsets hands out block offsets: one stream (sequential) or a shared
// permutation (random), each block once per pass. With one pass only it
// runs dry at the region's end.
type offsets struct {
	next   atomic.Uint64
	blocks uint64
	bs     int64
	perm   []uint32 // nil: sequential
	wrap   bool
}

func newOffsets(w Workload) *offsets {
	o := &offsets{blocks: uint64(w.Region / int64(w.BlockSize)), bs: int64(w.BlockSize), wrap: w.Duration > 0}
	if w.Pattern == Random {
		rng := rand.New(rand.NewPCG(w.Seed, 0x6d706167))
		o.perm = make([]uint32, o.blocks)
		for i := range o.perm {
			o.perm[i] = uint32(i)
		}
		rng.Shuffle(len(o.perm), func(i, j int) { o.perm[i], o.perm[j] = o.perm[j], o.perm[i] })
	}
	return o
}

// take returns the next offset, false when a one-pass run is done.
func (o *offsets) take() (int64, bool) {
	i := o.next.Add(1) - 1
	if i >= o.blocks {
		if !o.wrap {
			return 0, false
		}
		i %= o.blocks
	}
	if o.perm != nil {
		i = uint64(o.perm[i])
	}
	return int64(i) * o.bs, true
}

// latencyRecorder is the run's histograms; workers batch samples so the
// lock is taken once per batch.
type latencyRecorder struct {
	mu          sync.Mutex
	read, write *hdrhistogram.Histogram
}

func (r *latencyRecorder) add(h *hdrhistogram.Histogram, samples []int64) {
	r.mu.Lock()
	for _, v := range samples {
		_ = h.RecordValue(min(max(v, 1), maxLatency))
	}
	r.mu.Unlock()
}

const sampleBatch = 512

// worker is one goroutine of a run, with its own buffer, random source and
// counters.
type worker struct {
	w                     Workload
	gen                   *offsets
	rec                   *latencyRecorder
	visit                 func(int64, []byte)
	buf                   []byte
	rng                   *rand.Rand
	readSamples           []int64
	writeSamples          []int64
	readOps, writeOps     int64
	readBytes, writeBytes int64
	err                   error
	// async, if set, is how the worker reads: its reads in flight.
	async *asyncReads
}

func newWorker(w Workload, i int, gen *offsets, rec *latencyRecorder, visit func(int64, []byte)) *worker {
	wk := &worker{w: w, gen: gen, rec: rec, visit: visit, buf: make([]byte, w.BlockSize),
		rng:          rand.New(rand.NewPCG(w.Seed, uint64(i))),
		readSamples:  make([]int64, 0, sampleBatch),
		writeSamples: make([]int64, 0, sampleBatch)}
	if w.Writes() {
		// Incompressible data: zram (and a compressing device) must store
		// what fio's random buffers would make it store.
		var src [32]byte
		src[0], src[1] = byte(w.Seed), byte(i)
		_, _ = rand.NewChaCha8(src).Read(wk.buf)
	}
	return wk
}

func (wk *worker) run(f File, stop *atomic.Bool) {
	if wk.async != nil {
		wk.runAsync(f, stop)
		return
	}
	for !stop.Load() {
		off, ok := wk.gen.take()
		if !ok {
			return
		}
		read := wk.nextIsRead()
		t0 := time.Now()
		var n int
		var err error
		if read {
			n, err = f.ReadAt(wk.buf, off)
		} else {
			n, err = f.WriteAt(wk.buf, off)
		}
		if !wk.done(read, off, n, err, t0, stop) {
			return
		}
		if read && wk.visit != nil {
			wk.visit(off, wk.buf[:n])
		}
	}
}

// nextIsRead draws the direction of the next operation.
func (wk *worker) nextIsRead() bool {
	return wk.w.ReadPercent == 100 || (wk.w.ReadPercent > 0 && wk.rng.IntN(100) < wk.w.ReadPercent)
}

// done counts an operation that started at t0 and moved n bytes, or
// records its error and stops the run (false).
func (wk *worker) done(read bool, off int64, n int, err error, t0 time.Time, stop *atomic.Bool) bool {
	lat := int64(time.Since(t0))
	if err != nil && !(read && n == len(wk.buf) && errors.Is(err, io.EOF)) {
		op := "write"
		if read {
			op = "read"
		}
		wk.err = fmt.Errorf("%w: %s: %s of %d bytes at %d: %w", ErrRunner, wk.w.Name, op, len(wk.buf), off, err)
		stop.Store(true)
		return false
	}
	if read {
		wk.readOps++
		wk.readBytes += int64(n)
		wk.readSamples = wk.sample(wk.readSamples, lat, wk.rec.read)
	} else {
		wk.writeOps++
		wk.writeBytes += int64(n)
		wk.writeSamples = wk.sample(wk.writeSamples, lat, wk.rec.write)
	}
	return true
}

func (wk *worker) sample(s []int64, v int64, h *hdrhistogram.Histogram) []int64 {
	s = append(s, v)
	if len(s) == cap(s) {
		wk.rec.add(h, s)
		s = s[:0]
	}
	return s
}

// flush records the samples still batched.
func (wk *worker) flush() {
	wk.rec.add(wk.rec.read, wk.readSamples)
	wk.rec.add(wk.rec.write, wk.writeSamples)
	wk.readSamples, wk.writeSamples = wk.readSamples[:0], wk.writeSamples[:0]
}
