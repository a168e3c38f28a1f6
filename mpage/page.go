package mpage

import (
	"sync"
	"sync/atomic"

	"github.com/mpaged/mpaged/internal/invariants"
)

// PageSize is the size of a page-cache page: one alloc frame.
const PageSize = 4096

// PageShift is log2(PageSize).
const PageShift = 12

// PageFlags are a page's state bits. They change atomically; the
// transitions that matter are documented where they happen.
type PageFlags uint32

const (
	// Locked: someone owns the page for I/O setup or modification. Reads
	// hold it from cache insertion until the completion unlocks.
	Locked PageFlags = 1 << iota
	// Uptodate: Data holds the file's bytes.
	Uptodate
	// Error: the last I/O on the page failed.
	Error
	// Dirty: Data is newer than the device.
	Dirty
	// Writeback: a write of the page is in flight.
	Writeback
	// MappedToDisk: every block of the page is mapped (no holes).
	MappedToDisk
	// Readahead: reaching this page should start the next readahead
	// window (the async marker).
	Readahead
	// Referenced: used since the CLOCK hand last passed.
	Referenced
	// waiters: someone sleeps on this page's wait bucket; unlockers only
	// take the bucket lock when it is set.
	waiters
	// writeErr: the page's last write failed and it is counted in its
	// mapping's failed pages. Kept apart from Error, which a failed read
	// sets too: sharing it lost write failures (and cleared other pages'
	// when a read-failed page was written or dropped). Set under the
	// mapping's mu; whoever clears it (a successful write, or removal
	// from the mapping) takes the page out of the count.
	writeErr
)

// private flags never shown by Flags.
const private = waiters | writeErr

var flagNames = []struct {
	f    PageFlags
	name string
}{
	{Locked, "locked"}, {Uptodate, "uptodate"}, {Error, "error"}, {Dirty, "dirty"},
	{Writeback, "writeback"}, {MappedToDisk, "mapped"}, {Readahead, "readahead"},
}

// String lists the public flags, for tests and debugging.
func (f PageFlags) String() string {
	s := ""
	for _, n := range flagNames {
		if f&n.f != 0 {
			if s != "" {
				s += ","
			}
			s += n.name
		}
	}
	if s == "" {
		return "-"
	}
	return s
}

// Page is one page-cache page of a Mapping.
type Page struct {
	// Index is the page's offset in the file in pages. Fixed while the
	// page is in a mapping.
	Index uint64
	// Data is the page's frame. Whoever holds the page Locked, or has it
	// under Writeback, may not have it changed under them.
	Data []byte

	flags   atomic.Uint32
	mapping *Mapping
	// bufs is the per-block state, non-nil once the page has gone through
	// the per-block path ("the page has buffers"). Guarded by Locked.
	bufs *buffers
	// pending counts per-block I/Os outstanding on the page.
	pending atomic.Int32
	// refs counts users outside the cache; a page with refs is not evicted.
	refs atomic.Int32
	// pins counts BlockRef.Pin holds (a journal's transaction): while
	// non-zero, writeback leaves the page dirty and does not write it.
	pins atomic.Int32
	// mapErr is the mapping failure that failed the page's last
	// per-block read, for its readers (readError); nil otherwise.
	mapErr atomic.Pointer[MapError]
	// detached: removed from its mapping; the last Release frees it.
	detached atomic.Bool
	cache    *Cache
	// clock links the page into the cache's CLOCK ring; guarded by the
	// cache lock.
	prev, next *Page
}

// Flags returns the current flags.
func (p *Page) Flags() PageFlags { return PageFlags(p.flags.Load()) &^ private }

// Has reports whether all of f are set.
func (p *Page) Has(f PageFlags) bool { return PageFlags(p.flags.Load())&f == f }

func (p *Page) set(f PageFlags)   { p.flags.Or(uint32(f)) }
func (p *Page) clear(f PageFlags) { p.flags.And(^uint32(f)) }

// testAndSet sets f and reports whether it was set before.
func (p *Page) testAndSet(f PageFlags) bool { return PageFlags(p.flags.Or(uint32(f)))&f != 0 }

// testAndClear clears f and reports whether it was set before.
func (p *Page) testAndClear(f PageFlags) bool { return PageFlags(p.flags.And(^uint32(f)))&f != 0 }

// Mapping is the page's owner, or nil once removed.
func (p *Page) Mapping() *Mapping { return p.mapping }

// Waiting on a page uses a hashed table of buckets, as the kernel's page
// wait queues do: a sleeper never gets a goroutine or channel of its own,
// and a waker takes a bucket lock only when the page's waiters bit says
// someone may sleep there.
const waitBuckets = 256

type waitBucket struct {
	mu   sync.Mutex
	cond sync.Cond
	// async lists the callbacks waiting for a page of this bucket to be
	// unlocked (ReadPageAsync): a waiter that may not sleep, the seeds'
	// wait queue entry with a wake function. Guarded by mu.
	async *pageWaiter
}

// pageWaiter is an asynchronous wait for a page's lock to be released,
// embedded in whatever waits (a PageRead), so waiting allocates nothing.
// It is on one bucket's list from waitUnlockedAsync until the Unlock that
// runs its wake, which is called once, without the bucket lock, on the
// unlocker's goroutine (often the ring's completion side): it must not
// block.
type pageWaiter struct {
	page *Page
	wake pageWaker
	next *pageWaiter
}

// pageWaker is what an asynchronous waiter runs once its page is unlocked.
type pageWaker interface {
	pageUnlocked(p *Page)
}

var waitTable = func() *[waitBuckets]waitBucket {
	t := new([waitBuckets]waitBucket)
	for i := range t {
		t[i].cond.L = &t[i].mu
	}
	return t
}()

func (p *Page) bucket() *waitBucket {
	// Hash the Page's address, which stays put while anyone can sleep on
	// it (sleepers hold a reference). Not its Index or mapping: removal
	// sets mapping to nil under the lock, and the Unlock that follows
	// would then wake a different bucket than the sleepers are in.
	h := uint64(pageAddr(p)) * 0x9e3779b97f4a7c15
	return &waitTable[(h>>32)%waitBuckets]
}

// waitUntilClear sleeps until none of f is set.
func (p *Page) waitUntilClear(f PageFlags) {
	if PageFlags(p.flags.Load())&f == 0 {
		return
	}
	b := p.bucket()
	b.mu.Lock()
	for {
		// Set waiters before checking, under the bucket lock: a waker
		// that clears f after our check sees waiters and must take the
		// lock we hold, so it cannot broadcast before we sleep.
		p.set(waiters)
		if PageFlags(p.flags.Load())&f == 0 {
			break
		}
		b.cond.Wait()
	}
	b.mu.Unlock()
}

// clearAndWake clears f and wakes sleepers if any may be waiting, and runs
// the asynchronous waiters of the page once it is unlocked.
func (p *Page) clearAndWake(f PageFlags) {
	old := PageFlags(p.flags.And(^uint32(f)))
	if old&waiters == 0 {
		return
	}
	b := p.bucket()
	b.mu.Lock()
	p.clear(waiters)
	b.cond.Broadcast()
	var woken *pageWaiter
	if b.async != nil {
		woken = b.takeAsync(p)
	}
	b.mu.Unlock()
	for w := woken; w != nil; {
		next := w.next
		w.next = nil
		w.wake.pageUnlocked(p)
		w = next
	}
}

// takeAsync unlinks and returns p's asynchronous waiters if p is unlocked
// now; if it is not (this wake was for Writeback, or p was locked again),
// they stay and p keeps its waiters bit, so the Unlock to come finds them.
// Under b.mu.
func (b *waitBucket) takeAsync(p *Page) *pageWaiter {
	found := false
	for w := b.async; w != nil && !found; w = w.next {
		found = w.page == p
	}
	if !found {
		return nil
	}
	// waiters before the check, as a sleeper sets it: an Unlock after
	// the check sees it and comes for them; one before, we see.
	p.set(waiters)
	if p.Has(Locked) {
		return nil
	}
	var woken *pageWaiter
	link := &b.async
	for w := *link; w != nil; w = *link {
		if w.page != p {
			link = &w.next
			continue
		}
		*link = w.next
		w.next = woken // order among one page's waiters does not matter
		woken = w
	}
	return woken
}

// waitUnlockedAsync queues w to have its wake run when p is unlocked, and
// reports true; false (w not queued) when p is unlocked already. The
// caller holds a reference on p until the wake has run.
func (p *Page) waitUnlockedAsync(w *pageWaiter) bool {
	if !p.Has(Locked) {
		return false
	}
	b := p.bucket()
	b.mu.Lock()
	// As waitUntilClear: waiters is set before the check, under the
	// bucket lock, so an Unlock after the check must take the lock and
	// find w queued.
	p.set(waiters)
	if !p.Has(Locked) {
		b.mu.Unlock()
		return false
	}
	w.page = p
	w.next = b.async
	b.async = w
	b.mu.Unlock()
	return true
}

// lock takes the page lock, sleeping while another holder has it.
func (p *Page) lock() {
	for p.testAndSet(Locked) {
		p.waitUntilClear(Locked)
	}
}

// TryLock takes the page lock if it is free.
func (p *Page) TryLock() bool { return !p.testAndSet(Locked) }

// Unlock releases the page lock and wakes waiters. Completion handlers call
// it; it never blocks for long (a bucket lock at most).
func (p *Page) Unlock() {
	if !p.Has(Locked) {
		panic("mpage: unlock of an unlocked page")
	}
	p.clearAndWake(Locked)
}

// WaitWriteback sleeps until the page is not under writeback.
func (p *Page) WaitWriteback() { p.waitUntilClear(Writeback) }

// WaitUnlocked sleeps until the page lock is free, without taking it.
func (p *Page) WaitUnlocked() { p.waitUntilClear(Locked) }

// endWriteback clears Writeback, drops the mapping's writeback tag and wakes
// waiters.
func (p *Page) endWriteback() {
	if invariants.Enabled {
		invariants.Check(p.Has(Writeback), "page %d: writeback ended on a page not under writeback (flags %v)", p.Index, p.Flags())
	}
	if m := p.mapping; m != nil {
		m.untagWriteback(p)
	}
	p.clearAndWake(Writeback)
}

// zero clears Data[from:to].
func (p *Page) zero(from, to int) {
	clear(p.Data[from:to])
}
