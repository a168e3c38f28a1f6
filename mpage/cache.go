package mpage

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaged/mpaged/alloc"
)

// CacheConfig bounds a page cache.
type CacheConfig struct {
	// Frames supplies page memory.
	Frames *alloc.FramePool
	// LimitBytes is the cache's size: past it, clean unlocked pages are
	// evicted (CLOCK) to make room. Default 256 MiB.
	LimitBytes int64
	// DirtyRatio is the share of the limit that may be dirty or under
	// writeback before writers are throttled. Default 0.4.
	DirtyRatio float64
	// Stats receives eviction and throttling counts (share the Device's).
	Stats *Stats
	// NoFrameWait bounds how long page allocation waits for writeback to free
	// memory when every page is dirty or busy. Default 10s.
	NoFrameWait time.Duration
	// Now is the clock that stamps when a mapping became dirty (what the
	// Flusher ages dirty data by). Default time.Now; a Flusher with its
	// own Now replaces it.
	Now func() time.Time
}

// Cache is a page cache shared by the mappings of one or more volumes: it
// owns their pages' frames, keeps every page on a CLOCK ring for eviction,
// and counts dirty and writeback pages for throttling.
type Cache struct {
	frames      *alloc.FramePool
	limit       int
	dirtyLimit  int64
	stats       *Stats
	noFrameWait time.Duration
	// nodes are the page-index nodes of every mapping of the cache.
	nodes radixPool

	mu   sync.Mutex
	hand *Page // CLOCK hand; pages form a circular list through prev/next
	// count is the pages on the ring; written under mu, read without it
	// for estimates.
	count atomic.Int64
	spare []*Page // page structs to reuse, so steady state allocates none

	dirtyPages     atomic.Int64
	writebackPages atomic.Int64

	// dmu guards the list of mappings with dirty pages, oldest dirtied
	// first (intrusive, through Mapping.dprev/dnext). Taken after a
	// Mapping's mu, and alone by the Flusher.
	dmu           sync.Mutex
	dirtyHead     *Mapping
	dirtyTail     *Mapping
	dirtyMappings int
	clock         atomic.Pointer[func() time.Time]

	// flusher is the background Flusher attached to the cache, kicked
	// when dirty pages pass bgThresh (math.MaxInt64 without one).
	flusher  atomic.Pointer[Flusher]
	bgThresh atomic.Int64
	// flushMu serialises writeback passes (of whichever Flusher) and
	// guards every Mapping's flush state, flushPass (the number of the
	// pass in progress) and flushTurn (of the last mapping written, for
	// round robin). Taken before any Mapping lock.
	flushMu   sync.Mutex
	flushPass uint64
	flushTurn uint64

	// Writers over the dirty limit and allocators out of memory sleep on
	// progress until a writeback ends.
	throttled atomic.Int32
	pmu       sync.Mutex
	progress  sync.Cond
	gen       uint64
	// timer bounds progress waits; timerAt is when it fires (zero: not
	// armed). Guarded by pmu.
	timer   *time.Timer
	timerAt time.Time
}

// NewCache builds a cache.
func NewCache(cfg CacheConfig) (*Cache, error) {
	if cfg.Frames == nil {
		return nil, fmt.Errorf("mpage: cache needs a frame pool")
	}
	limit := cfg.LimitBytes
	if limit <= 0 {
		limit = 256 << 20
	}
	ratio := cfg.DirtyRatio
	if ratio <= 0 || ratio > 1 {
		ratio = 0.4
	}
	c := &Cache{
		frames:      cfg.Frames,
		limit:       int(max(limit/PageSize, 16)),
		stats:       cfg.Stats,
		noFrameWait: cfg.NoFrameWait,
	}
	c.dirtyLimit = int64(float64(c.limit) * ratio)
	if c.dirtyLimit < 4 {
		c.dirtyLimit = 4
	}
	if c.stats == nil {
		c.stats = new(Stats)
	}
	if c.noFrameWait <= 0 {
		c.noFrameWait = 10 * time.Second
	}
	c.progress.L = &c.pmu
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	c.clock.Store(&now)
	c.bgThresh.Store(math.MaxInt64)
	return c, nil
}

// CacheStats is a snapshot of a cache's occupancy.
type CacheStats struct {
	Pages, Limit          int
	Dirty, Writeback      int64
	DirtyLimit            int64
	FramesInUse, FramesMx int64
	// DirtyMappings is how many mappings have dirty pages.
	DirtyMappings int
}

// Stats reports occupancy.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	n := int(c.count.Load())
	c.mu.Unlock()
	fs := c.frames.Stats()
	return CacheStats{Pages: n, Limit: c.limit, Dirty: c.dirtyPages.Load(), Writeback: c.writebackPages.Load(),
		DirtyLimit: c.dirtyLimit, FramesInUse: fs.InUse, FramesMx: fs.Frames, DirtyMappings: c.DirtyMappings()}
}

// DirtyMappings is how many mappings have dirty pages.
func (c *Cache) DirtyMappings() int {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.dirtyMappings
}

// now reads the cache's clock.
func (c *Cache) now() time.Time { return (*c.clock.Load())() }

// linkDirty appends m, which just got its first dirty page, to the dirty
// list and stamps it. The stamp is taken under dmu, so the list stays in
// stamp order with a clock that does not go back (the Flusher stops at the
// first mapping too young to expire). The caller holds m.mu.
func (c *Cache) linkDirty(m *Mapping) {
	c.dmu.Lock()
	if !m.onDirty {
		m.onDirty = true
		m.dirtiedWhen = c.now()
		m.dprev, m.dnext = c.dirtyTail, nil
		if c.dirtyTail != nil {
			c.dirtyTail.dnext = m
		} else {
			c.dirtyHead = m
		}
		c.dirtyTail = m
		c.dirtyMappings++
	}
	c.dmu.Unlock()
}

// unlinkDirty takes m off the dirty list if it is on it. The caller holds
// m.mu.
func (c *Cache) unlinkDirty(m *Mapping) {
	c.dmu.Lock()
	if m.onDirty {
		if m.dprev != nil {
			m.dprev.dnext = m.dnext
		} else {
			c.dirtyHead = m.dnext
		}
		if m.dnext != nil {
			m.dnext.dprev = m.dprev
		} else {
			c.dirtyTail = m.dprev
		}
		m.dprev, m.dnext, m.onDirty = nil, nil, false
		c.dirtyMappings--
	}
	c.dmu.Unlock()
}

// kickFlusher wakes the attached Flusher, if any.
func (c *Cache) kickFlusher() {
	if f := c.flusher.Load(); f != nil {
		f.Kick()
	}
}

// link puts new pages on the CLOCK ring, behind the hand, under one hold
// of the cache lock. A page reclaim reused is on the ring already, in the
// place behind the hand where its victim was.
func (c *Cache) link(pages ...*Page) {
	c.mu.Lock()
	for _, p := range pages {
		if p.next == nil {
			c.linkLocked(p)
		}
	}
	c.mu.Unlock()
}

func (c *Cache) linkLocked(p *Page) {
	// A new page starts referenced: the hand passes it once before it can
	// go. Otherwise, once readers have referenced every older page, the
	// first unreferenced pages the hand finds are the readahead pages just
	// read for the reader, which it would evict before their first use.
	p.set(Referenced)
	if c.hand == nil {
		p.prev, p.next = p, p
		c.hand = p
	} else {
		p.next = c.hand
		p.prev = c.hand.prev
		p.prev.next = p
		c.hand.prev = p
	}
	c.count.Add(1)
}

// unlink takes p off the CLOCK ring.
func (c *Cache) unlink(p *Page) {
	c.mu.Lock()
	c.unlinkLocked(p)
	c.mu.Unlock()
}

func (c *Cache) unlinkLocked(p *Page) {
	if p.next == nil {
		return
	}
	if p.next == p {
		c.hand = nil
	} else {
		p.prev.next = p.next
		p.next.prev = p.prev
		if c.hand == p {
			c.hand = p.next
		}
	}
	p.prev, p.next = nil, nil
	c.count.Add(-1)
}

// wakeThrottled wakes writers and allocators waiting for writeback progress;
// cheap when nobody waits.
func (c *Cache) wakeThrottled() {
	if c.throttled.Load() == 0 {
		return
	}
	c.pmu.Lock()
	c.gen++
	c.progress.Broadcast()
	c.pmu.Unlock()
}

// waitProgress sleeps until a writeback ends or d passes (or a shorter
// wait of someone else's does: callers check again and loop).
func (c *Cache) waitProgress(d time.Duration) {
	c.throttled.Add(1)
	defer c.throttled.Add(-1)
	c.pmu.Lock()
	gen := c.gen
	c.armProgressTimer(d)
	for c.gen == gen {
		c.progress.Wait()
	}
	c.pmu.Unlock()
}

// armProgressTimer makes the cache's one progress timer fire within d: a
// timer per wait would allocate on every throttled write. Under pmu.
func (c *Cache) armProgressTimer(d time.Duration) {
	at := time.Now().Add(d)
	if !c.timerAt.IsZero() && !c.timerAt.After(at) {
		return // it fires before that anyway
	}
	c.timerAt = at
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.progressTick)
		return
	}
	c.timer.Reset(d)
}

// progressTick is the progress timer's function: it wakes every waiter.
func (c *Cache) progressTick() {
	c.pmu.Lock()
	c.timerAt = time.Time{}
	c.gen++
	c.progress.Broadcast()
	c.pmu.Unlock()
}

// overDirty reports whether dirty plus writeback pages exceed the limit.
func (c *Cache) overDirty() bool {
	return c.dirtyPages.Load()+c.writebackPages.Load() > c.dirtyLimit
}

// balanceDirty throttles a writer of m while the cache is over its dirty
// limit: it writes m's dirty pages itself, then waits for writeback to end,
// as the kernel's balance_dirty_pages does. Past the Flusher's background
// threshold, below that limit, it first kicks the Flusher, so background
// writeback starts before writers have to wait.
func (c *Cache) balanceDirty(m *Mapping) {
	if c.dirtyPages.Load() > c.bgThresh.Load() {
		c.kickFlusher()
	}
	for waited := 0; c.overDirty(); waited++ {
		c.stats.ThrottleWaits.Add(1)
		// Write as much as the cache is over half its dirty limit (at
		// least one Bio), from this writer's own mapping: a throttled
		// writer that sent one Bio and waited for it kept one in flight,
		// and a device with latency (not zram) ran at that depth. Other
		// mappings' pages, and pages already under writeback, are the
		// flusher's and the completions' to clean.
		n := max(int64(m.dev.maxVecs), c.dirtyPages.Load()-c.dirtyLimit/2)
		wbc := WritebackControl{SyncMode: SyncNone, NrToWrite: n}
		_ = m.WritePages(&wbc)
		if !c.overDirty() {
			return
		}
		if wbc.Written == 0 && c.writebackPages.Load() == 0 {
			// The dirt is in other mappings and nothing is in flight:
			// waiting here would wait forever. Their owners (or the
			// background flusher) must write it.
			return
		}
		c.waitProgress(50 * time.Millisecond)
		if waited > 1000 {
			return
		}
	}
}
