package mpage

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaged/mpaged/internal/invariants"
)

// MappingConfig describes one file's address space.
type MappingConfig struct {
	Device *Device
	Cache  *Cache
	Mapper BlockMapper
	// BlockSize is the file system block size: 512, 1024, 2048 or 4096.
	BlockSize int
	// Size is the file's initial i_size.
	Size int64
	// Name labels errors ("inode 12").
	Name string
	// Owner is the file system's object behind the mapping (its inode).
	// If it implements InodeWriter, the background Flusher calls it after
	// writing the mapping's pages; if PreWriter, before. Optional.
	Owner any
	// Meta is the volume's metadata mapping (one whose block n is device
	// block n), if it caches blocks this file's mapper allocates: blocks
	// the mapper answers New for are forgotten there (ForgetBlocks), and
	// after a write Bio that ends at a Boundary block, the block after it
	// is written if dirty (WriteBlockIfDirty). Optional.
	Meta *Mapping
}

// InodeWriter is implemented by a mapping's Owner that keeps per-file
// metadata outside the page cache (an inode whose block map or size
// writeback allocation changed): WriteInode puts it where the next
// writeback finds it, normally the dirty pages of a metadata mapping, and
// says whether there was anything to write. It is the kernel's
// write_inode. The Flusher calls it with no mpage lock held; it may block
// on the owner's own locks.
type InodeWriter interface {
	WriteInode() (written bool, err error)
}

// PreWriter is implemented by a mapping's Owner that must act before
// background writeback writes the mapping's pages: a file system whose
// metadata pages may point at blocks that have to be on the device first.
// The Flusher calls BeforeWriteback with no mpage lock held; an error
// skips the mapping for this visit and counts as a failed write (backed
// off and retried).
type PreWriter interface {
	BeforeWriteback() error
}

// Mapping is one file's page cache: its pages ordered by index with dirty
// and writeback tags, its size, its block mapper, its writeback position,
// its write-error state and its readahead state.
//
// Locking: mu guards the page index, the tags, the error state and the
// writeback index. Page flags are atomic; a page's Data and per-block state
// belong to whoever holds the page Locked (or, for Data, has it under
// Writeback). Lock order: a page lock may be held when taking mu; mu is
// never held while sleeping on a page. mu comes before Cache.mu and
// Cache.dmu (the dirty-mapping list).
type Mapping struct {
	dev     *Device
	cache   *Cache
	mapper  BlockMapper
	blkbits uint8
	name    string
	size    atomic.Int64
	// Optional mapper hooks, found once.
	forget   BlockForgetter
	boundary BoundaryWriter
	meta     *Mapping    // MappingConfig.Meta, or nil
	inode    InodeWriter // the Owner's write_inode, or nil
	pre      PreWriter   // the Owner's hook before background writeback, or nil
	// journal is the BlockJournal metadata blocks join when marked
	// dirty (SetJournal); nil without one.
	journal atomic.Pointer[journalBox]

	mu sync.Mutex
	// pages is the page index; a page's dirty and writeback tags are
	// marks in it, counted in nPages, nDirty and nWriteback.
	pages                      pageTree
	nPages, nDirty, nWriteback int
	writebackIndex             uint64
	failed                     int   // pages whose last write failed (writeErr set)
	lastErr                    error // the most recent write error, while failed > 0
	closed                     bool
	// inodeDirty: MarkInodeDirty was called and the Flusher has not yet
	// taken the mark. It keeps the mapping on the dirty list.
	inodeDirty bool

	// The cache's list of dirty mappings (Cache.dmu guards these): the
	// links, whether the mapping is on it, and when it went from clean to
	// dirty (the kernel's dirtied_when; dirtying more pages does not move
	// it).
	dprev, dnext *Mapping
	onDirty      bool
	dirtiedWhen  time.Time
	// flush is the Flusher's per-mapping state, guarded by its pass lock.
	flush flushState

	ra readahead
}

// NewMapping creates an empty mapping.
func NewMapping(cfg MappingConfig) (*Mapping, error) {
	if cfg.Device == nil || cfg.Cache == nil || cfg.Mapper == nil {
		return nil, fmt.Errorf("mpage: mapping %s needs a device, a cache and a mapper", cfg.Name)
	}
	var bits uint8
	switch cfg.BlockSize {
	case 512:
		bits = 9
	case 1024:
		bits = 10
	case 2048:
		bits = 11
	case 4096:
		bits = 12
	default:
		return nil, fmt.Errorf("mpage: mapping %s: block size %d not in 512..4096", cfg.Name, cfg.BlockSize)
	}
	if cfg.Size < 0 {
		return nil, fmt.Errorf("mpage: mapping %s: %w: size %d", cfg.Name, ErrRange, cfg.Size)
	}
	m := &Mapping{
		dev: cfg.Device, cache: cfg.Cache, mapper: cfg.Mapper, blkbits: bits, name: cfg.Name,
		pages: pageTree{nodes: &cfg.Cache.nodes},
	}
	m.size.Store(cfg.Size)
	m.forget, _ = cfg.Mapper.(BlockForgetter)
	m.boundary, _ = cfg.Mapper.(BoundaryWriter)
	m.meta = cfg.Meta
	m.inode, _ = cfg.Owner.(InodeWriter)
	m.pre, _ = cfg.Owner.(PreWriter)
	m.ra.init()
	return m, nil
}

// Size is i_size.
func (m *Mapping) Size() int64 { return m.size.Load() }

// SetSize sets i_size. Shrinking does not drop pages; Truncate does.
func (m *Mapping) SetSize(n int64) { m.size.Store(n) }

// BlockSize is the file system block size.
func (m *Mapping) BlockSize() int { return 1 << m.blkbits }

// BlkBits is log2(BlockSize).
func (m *Mapping) BlkBits() uint { return uint(m.blkbits) }

// Device is the mapping's device.
func (m *Mapping) Device() *Device { return m.dev }

// Name labels the mapping in errors.
func (m *Mapping) Name() string { return m.name }

// Mapper is the mapping's block mapper.
func (m *Mapping) Mapper() BlockMapper { return m.mapper }

func (m *Mapping) blocksPerPage() int { return PageSize >> m.blkbits }

// WritebackIndex is the page index where the next cyclic (SyncNone,
// no range) writeback walk starts.
func (m *Mapping) WritebackIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writebackIndex
}

// Pages is the number of cached pages.
func (m *Mapping) Pages() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nPages
}

// DirtiedWhen is when the mapping last went from clean (no dirty pages,
// no inode mark) to dirty, by the cache's clock; false while it is clean.
func (m *Mapping) DirtiedWhen() (time.Time, bool) {
	c := m.cache
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return m.dirtiedWhen, m.onDirty
}

// DirtyPages is the number of pages tagged dirty.
func (m *Mapping) DirtyPages() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nDirty
}

// findPage returns the cached page at index with a reference the caller
// must drop with Release, or nil.
func (m *Mapping) findPage(index uint64) *Page {
	m.mu.Lock()
	p := m.pages.get(index)
	if p != nil {
		p.refs.Add(1)
	}
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	p.set(Referenced)
	return p
}

// Release drops a reference (findPage, grabPage, a Reader's result; a
// BlockRef's Release calls it). The last reference to a page that was
// removed from its mapping frees it: until then a holder may still read
// its Data.
func (p *Page) Release() {
	n := p.refs.Add(-1)
	if n < 0 {
		panic("mpage: page released more often than referenced")
	}
	if n == 0 && p.detached.Load() {
		p.cache.freePage(p)
	}
}

// grabPage returns the page at index locked and referenced, creating it
// (not Uptodate) if it is not cached. created says which.
func (m *Mapping) grabPage(index uint64) (p *Page, created bool, err error) {
	for {
		if p = m.findPage(index); p != nil {
			p.lock()
			if p.mapping == m {
				return p, false, nil
			}
			// Evicted or truncated while we slept: start over.
			p.Unlock()
			p.Release()
			continue
		}
		// Created the way ReadPages creates a window's pages, one page
		// long: allocPages then insertNew.
		var np [1]*Page
		if _, err := m.cache.allocPages(np[:], true); err != nil {
			return nil, false, fmt.Errorf("mpage: %s page %d: %w", m.name, index, err)
		}
		idx := [1]uint64{index}
		kept, err := m.insertNew(idx[:], np[:])
		if kept == 1 {
			return np[0], true, nil
		}
		// Lost a race with another creator (the page was freed), or
		// the mapping closed.
		if err != nil {
			return nil, false, err
		}
	}
}

// setDirty marks p dirty and tags it. The caller holds the page lock.
func (m *Mapping) setDirty(p *Page) {
	if b := p.bufs; b != nil {
		// Dirty every block, as the seeds' __set_page_dirty_buffers does:
		// a page whose blocks are all mapped and contiguous can then go
		// multipage again instead of being confused (not_dirty) forever.
		// The page is uptodate, so its blocks are.
		var s bufState = bufDirty
		if p.Has(Uptodate) {
			s |= bufUptodate
		}
		// Under the buffers' lock: completions of per-block writes and of
		// failed multipage writes change these bits from the ring's side.
		b.mu.Lock()
		for i := range m.blocksPerPage() {
			b.state[i] |= s
		}
		b.mu.Unlock()
	}
	m.tagDirty(p)
}

// tagDirty sets Dirty and the mapping's dirty tag, leaving per-block state
// alone. The caller holds the page lock.
func (m *Mapping) tagDirty(p *Page) {
	if p.Has(Dirty) {
		return
	}
	m.mu.Lock()
	if !p.testAndSet(Dirty) && p.mapping == m {
		m.addDirtyTag(p)
	}
	m.mu.Unlock()
}

// addDirtyTag puts p, just set Dirty, in the dirty tree and counts it; the
// mapping's first dirty page puts the mapping on the cache's dirty list.
// The caller holds mu. This is the write path: no allocation, and the
// cache's list lock only on the clean-to-dirty flip.
func (m *Mapping) addDirtyTag(p *Page) {
	if !m.pages.setMark(p, markDirty) {
		return
	}
	m.nDirty++
	m.cache.dirtyPages.Add(1)
	if m.nDirty == 1 && !m.inodeDirty {
		m.cache.linkDirty(m)
	}
}

// dropDirtyTag takes p, just cleared of Dirty, out of the dirty tree; the
// last one takes the mapping off the dirty list, unless its inode is
// dirty. The caller holds mu.
func (m *Mapping) dropDirtyTag(p *Page) {
	if !m.pages.clearMark(p, markDirty) {
		return
	}
	m.nDirty--
	m.cache.dirtyPages.Add(-1)
	if m.nDirty == 0 && !m.inodeDirty {
		m.cache.unlinkDirty(m)
	}
}

// MarkInodeDirty says the Owner has per-file metadata to write (the
// kernel's I_DIRTY_SYNC): an InodeWriter's block map or size changed by
// writeback allocation that someone else's writeback did. Like a dirty
// page, it keeps the mapping on the cache's dirty list (stamped now if it
// was clean) until the Flusher has called WriteInode. A no-op for
// mappings whose Owner is not an InodeWriter.
func (m *Mapping) MarkInodeDirty() {
	if m.inode == nil {
		return
	}
	m.mu.Lock()
	if !m.inodeDirty && !m.closed {
		m.inodeDirty = true
		if m.nDirty == 0 {
			m.cache.linkDirty(m)
		}
	}
	m.mu.Unlock()
}

// ClearInodeDirty withdraws the inode mark: the Flusher calls it before
// WriteInode, an owner that writes its inode itself (a sync) may call it
// before it reads what it writes, so that a mark made meanwhile stands.
// The mapping leaves the dirty list if no page is dirty either. It
// reports whether the mark was set.
func (m *Mapping) ClearInodeDirty() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.inodeDirty
	m.inodeDirty = false
	if was && m.nDirty == 0 {
		m.cache.unlinkDirty(m)
	}
	return was
}

// SetPageDirty marks a locked, uptodate page dirty after its Data changed.
func (m *Mapping) SetPageDirty(p *Page) { m.setDirty(p) }

// clearDirtyForIO clears Dirty before a write starts, so a modification
// during the write dirties the page again. True if it was dirty.
func (m *Mapping) clearDirtyForIO(p *Page) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !p.testAndClear(Dirty) {
		return false
	}
	m.dropDirtyTag(p)
	return true
}

// setWriteback tags p as under writeback. The caller holds the page lock.
func (m *Mapping) setWriteback(p *Page) {
	if invariants.Enabled {
		invariants.Check(p.Has(Locked|Uptodate), "page %d: writeback started without the page lock or on a page not uptodate (flags %v)", p.Index, p.Flags())
		invariants.Check(!p.Has(Dirty) || p.bufs != nil, "page %d: writeback started on a page still tagged dirty", p.Index)
	}
	m.mu.Lock()
	if p.testAndSet(Writeback) {
		m.mu.Unlock()
		panic("mpage: writeback started on a page already under writeback")
	}
	if m.pages.setMark(p, markWriteback) {
		m.nWriteback++
	}
	m.mu.Unlock()
	m.cache.writebackPages.Add(1)
}

func (m *Mapping) untagWriteback(p *Page) {
	m.mu.Lock()
	if m.pages.clearMark(p, markWriteback) {
		m.nWriteback--
	}
	m.mu.Unlock()
	m.cache.writebackPages.Add(-1)
	m.cache.wakeThrottled()
}

// writeFailed records a failed write of p and dirties it again so the next
// writeback retries it. Runs on the completion side.
func (m *Mapping) writeFailed(p *Page, err error) {
	m.dev.stats.WriteRetries.Add(1)
	m.dev.stats.WritebackErrno[errnoIndex(err)].Add(1)
	m.mu.Lock()
	p.set(Error)
	if !p.testAndSet(writeErr) {
		m.failed++
	}
	m.lastErr = err
	if !p.testAndSet(Dirty) && p.mapping == m {
		m.addDirtyTag(p)
	}
	m.mu.Unlock()
}

// writeRecovered notes that a page whose write had failed reached the
// device.
func (m *Mapping) writeRecovered() {
	m.mu.Lock()
	if m.failed--; m.failed <= 0 {
		m.failed, m.lastErr = 0, nil
	}
	m.mu.Unlock()
}

// dropWriteErr takes p's failed write out of the mapping's error count:
// the data that failed is gone (discarded or removed), nothing is left to
// retry.
func (m *Mapping) dropWriteErr(p *Page) {
	m.mu.Lock()
	m.dropWriteErrLocked(p)
	m.mu.Unlock()
}

func (m *Mapping) dropWriteErrLocked(p *Page) {
	if p.testAndClear(writeErr) {
		if m.failed--; m.failed <= 0 {
			m.failed, m.lastErr = 0, nil
		}
	}
}

// Err is the mapping's write error: the latest write failure, for as long as
// any page's data has failed to reach the device. fsync reports it; unlike
// Linux it is not consumed by being reported.
func (m *Mapping) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed > 0 {
		return fmt.Errorf("mpage: %s: %d pages not written: %w", m.name, m.failed, m.lastErr)
	}
	return nil
}

// lookupTag collects up to len(out) pages carrying mark (markPresent: any
// page) in [index, end], in index order, with references, and returns
// how many.
func (m *Mapping) lookupTag(mark int, index, end uint64, out []*Page) int {
	m.mu.Lock()
	n := m.pages.gang(index, end, mark, out)
	for _, p := range out[:n] {
		p.refs.Add(1)
	}
	m.mu.Unlock()
	return n
}

// Truncate drops every page at or past the page holding byte size, and
// zeroes the tail of the page that straddles it, then sets i_size. Pages
// under writeback are waited for first. Blocks are the file system's to
// free.
func (m *Mapping) Truncate(size int64) error {
	if size < 0 {
		return fmt.Errorf("mpage: %s: %w: truncate to %d", m.name, ErrRange, size)
	}
	m.size.Store(size)
	first := uint64((size + PageSize - 1) >> PageShift)
	if off := int(size & (PageSize - 1)); off != 0 {
		if err := m.truncatePartial(uint64(size>>PageShift), off, size); err != nil {
			return err
		}
	}
	var batch [16]*Page
	for {
		n := m.lookupTag(markPresent, first, ^uint64(0), batch[:])
		if n == 0 {
			return nil
		}
		for _, p := range batch[:n] {
			p.lock()
			p.WaitWriteback()
			if p.mapping == m {
				m.remove(p)
			}
			p.Unlock()
			p.Release()
		}
	}
}

// truncatePartial zeroes page idx from off on. When the block holding the
// new EOF is mapped, the bytes past EOF in it must read as zero should the
// file grow again, on the device too (the seeds' block_truncate_page): the
// page is read if need be, zeroed and dirtied. A hole needs the cached page
// zeroed at most; blocks wholly past EOF are the file system's to free.
func (m *Mapping) truncatePartial(idx uint64, off int, size int64) error {
	mapped := false
	if size&(1<<m.blkbits-1) != 0 {
		bm := BlockMap{Block: uint64(size >> m.blkbits), Len: 1}
		if merr := m.mapBlocks(&bm); merr != nil {
			return fmt.Errorf("mpage: %s: truncate to %d: %w", m.name, size, merr)
		}
		mapped = bm.Flags&(Mapped|MapUptodate) == Mapped
	}
	var p *Page
	if mapped {
		var err error
		if p, err = m.prepareWrite(idx, 0, 0); err != nil {
			return fmt.Errorf("mpage: %s: truncate to %d: %w", m.name, size, err)
		}
	} else {
		if p = m.findPage(idx); p == nil {
			return nil
		}
		p.lock()
	}
	p.WaitWriteback()
	if p.mapping == m {
		p.zero(off, PageSize)
		p.invalidateBlocksFrom(off, m)
		if mapped {
			m.setDirty(p)
		}
	}
	p.Unlock()
	p.Release()
	return nil
}

// remove takes a locked, referenced page out of the mapping and gives its
// frame back. The caller's reference stays valid until Release.
func (m *Mapping) remove(p *Page) {
	m.mu.Lock()
	if p.testAndClear(Dirty) {
		m.dropDirtyTag(p)
	}
	// The data that failed to reach the device is gone with the page:
	// nothing is left to report.
	m.dropWriteErrLocked(p)
	m.deletePage(p)
	m.mu.Unlock()
	m.cache.unlink(p)
	p.detached.Store(true)
}

// deletePage takes p, untagged, out of the index. The caller holds mu.
func (m *Mapping) deletePage(p *Page) {
	if invariants.Enabled {
		invariants.Check(!m.pages.marked(p, markDirty) && !m.pages.marked(p, markWriteback), "page %d: removed from its mapping still tagged (flags %v)", p.Index, p.Flags())
	}
	if !m.pages.delete(p) {
		panic("mpage: removal of a page not in its mapping's index")
	}
	m.nPages--
	p.mapping = nil
}

// Close drops every clean page; it fails if pages are still dirty or under
// writeback (write them back first).
func (m *Mapping) Close() error {
	m.mu.Lock()
	if m.nDirty > 0 || m.nWriteback > 0 {
		d, w := m.nDirty, m.nWriteback
		m.mu.Unlock()
		return fmt.Errorf("mpage: close %s: %d dirty and %d writeback pages", m.name, d, w)
	}
	m.closed = true
	// A closed mapping leaves the dirty list whatever its inode mark says
	// (its owner writes the inode itself when closing): the list would
	// keep it alive.
	m.inodeDirty = false
	m.cache.unlinkDirty(m)
	m.mu.Unlock()
	var batch [16]*Page
	for {
		n := m.lookupTag(markPresent, 0, ^uint64(0), batch[:])
		if n == 0 {
			return nil
		}
		for _, p := range batch[:n] {
			p.lock()
			if p.mapping == m {
				m.remove(p)
			}
			p.Unlock()
			p.Release()
		}
	}
}
