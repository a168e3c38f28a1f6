package mpage

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Background writeback.
//
// Without a Flusher, dirty pages reach the device only when someone asks:
// a sync (WriteAndWait, a file system's fsync), or a writer throttled at
// the cache's dirty limit writing its own pages. A daemon holding many
// files open needs the kernel's flusher threads as well: something that
// writes data that has been dirty for a while, and starts writing when the
// cache fills with dirty pages, before writers must wait.
//
// The Cache keeps every Mapping with dirty pages on a list in the order
// they became dirty, stamped with that time (the kernel's b_dirty list and
// dirtied_when; dirtying more pages of a dirty mapping moves neither). A
// pass of the Flusher:
//
//  1. writes the mappings dirty for ExpireAge or longer, oldest first;
//  2. while the cache's dirty pages exceed the background threshold,
//     writes the dirty mappings round robin: the one the Flusher wrote
//     longest ago first (never written ones in dirtied order), so one
//     written in step 1, or in the last pass, goes to the back and
//     several big files share the device instead of the oldest hogging
//     it;
//
// each mapping at most PagesPerPass pages per pass, as one SyncNone,
// Nonblocking WritePages: the walk resumes where the last one stopped
// (the writeback index) and the pass ends when the device is congested.
// After a mapping's pages, its Owner's InodeWriter (if any) writes the
// per-file metadata that writeback allocation changed; that lands in a
// metadata mapping, which a later visit writes like any other. An owner
// whose inode changed when no page of it was left dirty (another writer's
// writeback allocated) says so with Mapping.MarkInodeDirty, which lists
// the mapping as a dirty page would (the kernel's I_DIRTY_SYNC).
//
// What it promises: dirty data, once written by nobody else, is sent to
// the device about ExpireAge to ExpireAge+Interval after it was first
// dirtied (longer if the device is congested, the mapping is failing, or
// a file has more dirty data than PagesPerPass per Interval), and the
// cache's dirty pages are pushed back towards the background threshold.
// What it does not: it is not fsync. It neither waits for its writes nor
// flushes the device's cache, so nothing it writes is known to be durable;
// it keeps no order between files, or between data and the metadata that
// points at it; and there is no journal, so an image caught between passes
// by a crash needs e2fsck. Durability is still WriteAndWait plus
// Device.Flush (a file system's Sync).
//
// A failed write leaves its pages dirty and the error on the mapping
// (Mapping.Err), as for any writeback. The Flusher counts the failure,
// logs it (at most one line per errorLogEvery), backs the mapping off for
// 1, 2, 4 then 8 Intervals, and carries on with the other mappings.

// Flusher defaults.
const (
	// DefaultFlushInterval is how often the Flusher wakes by itself.
	DefaultFlushInterval = time.Second
	// DefaultExpireAge is how long data may stay dirty. The kernel's 30
	// seconds suits a desktop; a daemon acknowledging writes it has not
	// stored has no journal to replay and answers fsync, whose latency
	// grows with the dirty data a file has piled up. 5 seconds bounds
	// both, and is ext4's journal commit interval.
	DefaultExpireAge = 5 * time.Second
	// DefaultPagesPerPass is the per-mapping budget of a pass: 4 MiB, the
	// kernel's MAX_WRITEBACK_PAGES, a few full Bios.
	DefaultPagesPerPass = 1024
)

// errorLogEvery is the shortest gap between two logged write errors, by
// the Flusher's clock; errors in between are counted in the next line.
const errorLogEvery = 30 * time.Second

// maxBackoffShift caps a failing mapping's back-off at 8 Intervals.
const maxBackoffShift = 3

// FlusherConfig configures a Flusher. Zero fields take defaults.
type FlusherConfig struct {
	// Cache is the page cache to write back. Required; one Flusher per
	// cache at a time.
	Cache *Cache
	// Interval is how often the Flusher runs a pass by itself. Default
	// DefaultFlushInterval.
	Interval time.Duration
	// ExpireAge: data dirty for this long is written. Default
	// DefaultExpireAge.
	ExpireAge time.Duration
	// BackgroundRatio is the share of the cache that may be dirty before
	// the Flusher writes regardless of age. Below the cache's DirtyRatio,
	// where writers are throttled; default half of it (the kernel's 10%
	// against 20%).
	BackgroundRatio float64
	// PagesPerPass is the most pages a pass writes of one mapping.
	// Default DefaultPagesPerPass.
	PagesPerPass int
	// Now is the clock for dirtied times and ages. If set, it replaces
	// the Cache's clock (CacheConfig.Now), so both come from one clock:
	// set it before anything is dirtied. Tests inject one.
	Now func() time.Time
	// Logf receives write errors, rate-limited. Nil discards them.
	Logf func(format string, args ...any)
	// OnPass, if set, is called after each pass the Flusher's goroutine
	// runs, with what the pass did (debug logs; tests). It runs on that
	// goroutine: it must not call Stop, which waits for it.
	OnPass func(PassStats)
}

// PassStats is what one pass did.
type PassStats struct {
	// Expired and Background are the pages sent because their mapping
	// had been dirty for ExpireAge, and because the cache was over its
	// background threshold.
	Expired, Background int64
	// Inodes is how many InodeWriter calls wrote an inode.
	Inodes int
	// Errors is how many mappings were found failing (and backed off).
	Errors int
	// Congested: the pass stopped because the device was congested.
	Congested bool
	// Stopped: the pass stopped (or did not start) because the Flusher
	// is stopping.
	Stopped bool
	// More: the pass left work it would do at once: an expired mapping
	// used its whole budget, or the cache is still over the background
	// threshold after the pass wrote what it could.
	More bool
}

// Flusher is the background writeback of one Cache: a goroutine that runs
// a pass every Interval, or sooner when kicked. See the package's
// background writeback notes (flusher.go) for what a pass does and what it
// promises.
type Flusher struct {
	c        *Cache
	stats    *Stats
	interval time.Duration
	expire   time.Duration
	bgThresh int64
	budget   int64
	now      func() time.Time
	logf     func(string, ...any)
	onPass   func(PassStats)

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards started and stopped
	started bool
	stopped bool

	// Guarded by the cache's flushMu.
	batch    []*Mapping
	lastLog  time.Time
	unlogged int
}

// flushState is a Flusher's bookkeeping on one mapping, guarded by the
// cache's flushMu.
type flushState struct {
	pass    uint64 // the pass written counts for
	written int64  // pages sent in that pass
	turn    uint64 // when it was last written (Cache.flushTurn), for round robin
	fails   int    // consecutive visits that found the mapping failing
	retryAt time.Time
}

// NewFlusher builds a Flusher and attaches it to its cache: WriteAt's
// dirty balancing kicks it from then on. Start runs it.
func NewFlusher(cfg FlusherConfig) (*Flusher, error) {
	c := cfg.Cache
	if c == nil {
		return nil, fmt.Errorf("mpage: flusher needs a cache")
	}
	f := &Flusher{c: c, stats: c.stats, interval: cfg.Interval, expire: cfg.ExpireAge,
		budget: int64(cfg.PagesPerPass), logf: cfg.Logf, onPass: cfg.OnPass,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if f.interval <= 0 {
		f.interval = DefaultFlushInterval
	}
	if f.expire <= 0 {
		f.expire = DefaultExpireAge
	}
	if f.budget <= 0 {
		f.budget = DefaultPagesPerPass
	}
	if f.logf == nil {
		f.logf = func(string, ...any) {}
	}
	switch r := cfg.BackgroundRatio; {
	case r == 0:
		f.bgThresh = c.dirtyLimit / 2
	case r < 0 || r >= 1:
		return nil, fmt.Errorf("mpage: flusher: background ratio %v not in (0, 1)", r)
	default:
		f.bgThresh = int64(r * float64(c.limit))
		if f.bgThresh >= c.dirtyLimit {
			return nil, fmt.Errorf("mpage: flusher: background ratio %v reaches the cache's dirty limit (%d of %d pages)", r, c.dirtyLimit, c.limit)
		}
	}
	if !c.flusher.CompareAndSwap(nil, f) {
		return nil, ErrFlusherAttached
	}
	if cfg.Now != nil {
		now := cfg.Now
		c.clock.Store(&now)
	}
	f.now = c.now
	c.bgThresh.Store(f.bgThresh)
	return f, nil
}

// BackgroundThreshold is the number of dirty pages past which the Flusher
// writes regardless of age.
func (f *Flusher) BackgroundThreshold() int64 { return f.bgThresh }

// Start runs the Flusher's goroutine. Later calls, and calls after Stop,
// do nothing.
func (f *Flusher) Start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.stopped {
		return
	}
	f.started = true
	go f.run()
}

// Kick wakes the Flusher for a pass now rather than at the next Interval.
// Cheap and non-blocking: kicks while one is pending merge.
func (f *Flusher) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Stop ends the Flusher: a pass in progress stops before its next mapping
// (the page walk under way finishes), and Stop waits for it, or until ctx
// is done (then it returns ctx's error and the pass ends by itself later).
// The cache is detached: it can take a new Flusher. Stop writes nothing
// itself; syncing before shutdown is the caller's. Safe to call more than
// once.
func (f *Flusher) Stop(ctx context.Context) error {
	f.mu.Lock()
	if !f.stopped {
		f.stopped = true
		close(f.stop)
		if f.c.flusher.CompareAndSwap(f, nil) {
			f.c.bgThresh.Store(math.MaxInt64)
		}
	}
	started := f.started
	f.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mpage: flusher stop: %w", ctx.Err())
	}
}

func (f *Flusher) stopping() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

// run is the Flusher's goroutine: a pass per Interval or kick. A pass that
// left work goes again at once; one stopped by congestion waits for the
// next Interval, kicks or not, so the device can drain.
func (f *Flusher) run() {
	defer close(f.done)
	t := time.NewTimer(f.interval)
	defer t.Stop()
	kick := f.kick
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		case <-kick:
		}
		ps := f.RunPass()
		if f.onPass != nil {
			f.onPass(ps)
		}
		if ps.Stopped {
			return
		}
		kick = f.kick
		if ps.Congested {
			kick = nil
		} else if ps.More {
			f.Kick()
		}
		t.Reset(f.interval)
	}
}

// Why a page was written.
type flushReason uint8

const (
	flushExpired flushReason = iota
	flushBackground
)

// RunPass runs one pass now, in the caller's goroutine, and says what it
// did. Passes of a cache never overlap: RunPass waits for one in progress.
// After Stop it returns at once with Stopped set.
func (f *Flusher) RunPass() PassStats {
	c := f.c
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	var ps PassStats
	if f.stopping() {
		ps.Stopped = true
		return ps
	}
	c.flushPass++
	f.stats.FlusherPasses.Add(1)
	now := f.now()
	if f.writeExpired(now, &ps) {
		f.writeBackground(now, &ps)
	}
	// Drop the references: a closed mapping must not stay reachable.
	clear(f.batch)
	f.batch = f.batch[:0]
	if ps.Congested {
		f.stats.FlusherCongested.Add(1)
	}
	return ps
}

// writeExpired writes the mappings dirty since ExpireAge ago or longer.
// False if the pass must stop.
func (f *Flusher) writeExpired(now time.Time, ps *PassStats) bool {
	c := f.c
	cutoff := now.Add(-f.expire)
	f.batch = f.batch[:0]
	c.dmu.Lock()
	// The list is in dirtied order: the expired ones are its head.
	for m := c.dirtyHead; m != nil && !m.dirtiedWhen.After(cutoff); m = m.dnext {
		f.batch = append(f.batch, m)
	}
	c.dmu.Unlock()
	for _, m := range f.batch {
		if !f.visit(m, now, flushExpired, ps) {
			return false
		}
	}
	return true
}

// overBackground reports whether the cache's dirty pages exceed the
// background threshold.
func (f *Flusher) overBackground() bool { return f.c.dirtyPages.Load() > f.bgThresh }

// writeBackground writes dirty mappings while the cache is over the
// background threshold, the one served longest ago first (round robin
// across passes: a mapping written, in this pass or the last, waits for
// the others), never served ones in dirtied order.
func (f *Flusher) writeBackground(now time.Time, ps *PassStats) {
	if !f.overBackground() {
		return
	}
	c := f.c
	f.batch = f.batch[:0]
	c.dmu.Lock()
	for m := c.dirtyHead; m != nil; m = m.dnext {
		f.batch = append(f.batch, m)
	}
	c.dmu.Unlock()
	slices.SortStableFunc(f.batch, func(a, b *Mapping) int { return cmp.Compare(a.flush.turn, b.flush.turn) })
	for _, m := range f.batch {
		if !f.overBackground() {
			return
		}
		if !f.visit(m, now, flushBackground, ps) {
			return
		}
	}
	if f.overBackground() && ps.Background > 0 {
		ps.More = true
	}
}

// visit writes up to what is left of m's budget for this pass, then its
// inode. False if the pass must stop (the Flusher is stopping or the
// device is congested).
func (f *Flusher) visit(m *Mapping, now time.Time, why flushReason, ps *PassStats) bool {
	if f.stopping() {
		ps.Stopped = true
		return false
	}
	st := &m.flush
	if pass := f.c.flushPass; st.pass != pass {
		st.pass, st.written = pass, 0
	}
	budget := f.budget - st.written
	if budget <= 0 || now.Before(st.retryAt) {
		return true
	}
	if pw := m.pre; pw != nil {
		if err := pw.BeforeWriteback(); err != nil {
			f.failed(m, now, fmt.Errorf("mpage: %s: before background writeback: %w", m.name, err), ps)
			return true
		}
	}
	// An earlier write that failed and is not redone yet: this visit
	// retries it, and the mapping backs off whatever comes of it.
	prior := m.Err()
	wbc := WritebackControl{SyncMode: SyncNone, NrToWrite: budget, Nonblocking: true}
	err := m.WritePages(&wbc)
	if err != nil {
		err = fmt.Errorf("mpage: %s: background writeback: %w", m.name, err)
	}
	st.written += wbc.Written
	if wbc.Written > 0 {
		c := f.c
		c.flushTurn++
		st.turn = c.flushTurn
	}
	f.count(why, wbc.Written, ps)
	if why == flushExpired && wbc.Written >= budget {
		ps.More = true // expired data may be left
	}
	if iw := m.inode; iw != nil {
		marked := m.ClearInodeDirty()
		wrote, ierr := iw.WriteInode()
		if wrote {
			ps.Inodes++
			f.stats.FlusherInodeWrites.Add(1)
		}
		if ierr != nil {
			if marked {
				m.MarkInodeDirty() // still to write: stay listed
			}
			if err == nil {
				err = fmt.Errorf("mpage: %s: write inode: %w", m.name, ierr)
			}
		}
	}
	if err == nil {
		err = prior
	}
	if err != nil {
		f.failed(m, now, err, ps)
	} else {
		st.fails = 0
	}
	if wbc.EncounteredCongestion {
		ps.Congested = true
		return false
	}
	return true
}

func (f *Flusher) count(why flushReason, pages int64, ps *PassStats) {
	if pages == 0 {
		return
	}
	if why == flushExpired {
		ps.Expired += pages
		f.stats.FlusherExpiredPages.Add(uint64(pages))
	} else {
		ps.Background += pages
		f.stats.FlusherBackgroundPages.Add(uint64(pages))
	}
}

// failed backs a failing mapping off for 1, 2, 4, then 8 Intervals (it is
// skipped until then, this pass included), counts and logs the error.
func (f *Flusher) failed(m *Mapping, now time.Time, err error, ps *PassStats) {
	st := &m.flush
	st.fails++
	backoff := f.interval << min(st.fails-1, maxBackoffShift)
	st.retryAt = now.Add(backoff)
	ps.Errors++
	f.stats.FlusherErrors.Add(1)
	if !f.lastLog.IsZero() && now.Sub(f.lastLog) < errorLogEvery {
		f.unlogged++
		return
	}
	if f.unlogged > 0 {
		f.logf("mpage: flusher: %v (failing %d times, retried in %v; %d more errors since the last report)", err, st.fails, backoff, f.unlogged)
	} else {
		f.logf("mpage: flusher: %v (failing %d times, retried in %v)", err, st.fails, backoff)
	}
	f.lastLog, f.unlogged = now, 0
}
