package mpage

import (
	"errors"
	"fmt"
	"time"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/internal/invariants"
)

// Page allocation and eviction. Pages are allocated and evicted in
// batches, as the kernel reclaims in clusters: a reader creating a window
// of pages takes the cache lock to pick its victims once per batch, each
// victim's mapping lock once per run of victims of that mapping, and reuses
// the victims' pages and frames for its own pages instead of handing the
// frames back to the pool and taking them out again. A reused page stays
// where its victim was on the CLOCK ring, just behind the hand, which is
// where a new page is linked: it is Locked (so no hand takes it) and in no
// mapping until its new owner inserts it. Invariant: a page on the CLOCK
// ring is in a mapping, or Locked.

// evictBatch is the most pages one reclaim pass evicts (the kernel's
// SWAP_CLUSTER_MAX).
const evictBatch = 32

// allocPages fills out with unlinked pages with frames and returns how
// many: all of out unless frames ran short. It evicts clean pages so that
// the cache, with out added, stays within its limit, and more when the
// frame pool is empty. When nothing can be had it fails with ErrNoFrames,
// at once without wait, else after waiting up to NoFrameWait for
// writeback to clean something (it then returns at least one page).
func (c *Cache) allocPages(out []*Page, wait bool) (int, error) {
	// Evict down to the limit, not just as many pages as out: the cache
	// can pass its limit while every page is locked for I/O, and should
	// come back once they are not.
	over := int(c.count.Load()) + len(out) - c.limit
	n := 0
	for over > 0 {
		evicted, reused := c.reclaim(min(over, evictBatch), out[n:])
		if evicted == 0 {
			break
		}
		n += reused
		over -= evicted
	}
	var deadline time.Time
	for n < len(out) {
		frame, err := c.frames.Get()
		if err == nil {
			out[n] = c.pageFor(frame)
			n++
			continue
		}
		if !errors.Is(err, alloc.ErrNoFrames) {
			return n, err
		}
		if _, reused := c.reclaim(min(len(out)-n, evictBatch), out[n:]); reused > 0 {
			n += reused
			continue
		}
		if n > 0 {
			return n, nil
		}
		if !wait || !deadline.IsZero() && time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: %v", ErrNoFrames, err)
		}
		// Everything is dirty, locked or referenced: wait for writeback
		// to clean something, for a while.
		if deadline.IsZero() {
			deadline = time.Now().Add(c.noFrameWait)
		}
		c.waitProgress(time.Millisecond)
	}
	return n, nil
}

func (c *Cache) pageFor(frame []byte) *Page {
	c.mu.Lock()
	var p *Page
	if n := len(c.spare); n > 0 {
		p = c.spare[n-1]
		c.spare = c.spare[:n-1]
	}
	c.mu.Unlock()
	if p == nil {
		p = &Page{cache: c}
	}
	p.Data = frame
	return p
}

// reset clears what a page carries between uses, but its frame, and sets
// its flags to flags in one store: a reused page on the CLOCK ring is never
// seen unlocked.
func (p *Page) reset(flags PageFlags) {
	// A page is freed unpinned (a pin holds a reference); a mapping
	// failure is rare: loads, not stores, on the eviction path.
	if invariants.Enabled {
		invariants.Check(p.pins.Load() == 0, "page %d: freed while pinned", p.Index)
	}
	p.Index, p.mapping, p.bufs = 0, nil, nil
	p.pending.Store(0)
	p.refs.Store(0)
	if p.mapErr.Load() != nil {
		p.mapErr.Store(nil)
	}
	p.detached.Store(false)
	p.flags.Store(uint32(flags))
}

// freePage returns p's frame and keeps the struct for reuse. p must be out
// of every mapping and unreferenced; a page reclaim reused and nobody
// inserted leaves the CLOCK ring here, before its flags are cleared, under
// the lock the hand moves under, so no hand finds it unlocked and in no
// mapping.
func (c *Cache) freePage(p *Page) {
	c.frames.Put(p.Data)
	c.mu.Lock()
	c.unlinkLocked(p)
	p.Data = nil
	p.reset(0)
	if len(c.spare) < 4096 {
		c.spare = append(c.spare, p)
	}
	c.mu.Unlock()
}

// reclaim evicts up to max clean, unlocked, unreferenced pages, giving
// pages used since the hand last passed a second chance. The first
// len(reuse) of them go, with their frames, into reuse as new unlinked
// pages; the rest are freed. It returns how many it evicted and reused.
func (c *Cache) reclaim(max int, reuse []*Page) (evicted, reused int) {
	var victims [evictBatch]*Page
	for tries := 0; evicted == 0 && tries < 4; tries++ {
		k := c.pickVictims(victims[:max])
		if k == 0 {
			return 0, 0
		}
		evicted = evictVictims(victims[:k])
	}
	for i, p := range victims[:evicted] {
		if i < len(reuse) {
			p.reset(Locked | Referenced) // still locked: on the ring, taken
			reuse[i] = p
			reused++
		} else {
			c.freePage(p)
		}
	}
	c.stats.Evictions.Add(uint64(evicted))
	return evicted, reused
}

// pickVictims locks up to len(out) pages the CLOCK hand finds clean,
// unlocked, unreferenced and not used since it last passed, under one hold
// of the cache lock, and returns how many.
func (c *Cache) pickVictims(out []*Page) int {
	n := 0
	c.mu.Lock()
	limit := 2*int(c.count.Load()) + 1
	for scanned := 0; n < len(out) && c.hand != nil && scanned < limit; scanned++ {
		p := c.hand
		c.hand = p.next
		if p.Flags()&(Locked|Dirty|Writeback) != 0 || p.refs.Load() > 0 {
			continue
		}
		if p.testAndClear(Referenced) {
			continue
		}
		if p.TryLock() {
			if invariants.Enabled {
				invariants.Check(p.mapping != nil, "page %d: on the CLOCK ring unlocked and in no mapping (flags %v)", p.Index, p.Flags())
			}
			out[n] = p
			n++
		}
	}
	c.mu.Unlock()
	return n
}

// evictVictims takes locked victims out of their mappings, unless someone
// took a reference or dirtied one meanwhile (those are unlocked and
// dropped from the list), and returns how many were taken, first in
// victims. Each run of victims of one mapping takes its lock once. The
// page lock pins a victim's mapping, which is read without the lock.
func evictVictims(victims []*Page) int {
	kept := 0
	var spared [evictBatch]*Page
	nSpared := 0
	for i := 0; i < len(victims); {
		m := victims[i].mapping
		m.mu.Lock()
		for ; i < len(victims) && victims[i].mapping == m; i++ {
			p := victims[i]
			if p.refs.Load() > 0 || p.Flags()&(Dirty|Writeback) != 0 {
				spared[nSpared] = p
				nSpared++
				continue
			}
			m.deletePage(p)
			victims[kept] = p
			kept++
		}
		m.mu.Unlock()
	}
	// Unlocked outside the mapping locks: an Unlock may run waiters'
	// callbacks.
	for _, p := range spared[:nSpared] {
		p.Unlock()
	}
	return kept
}
