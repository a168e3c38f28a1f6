package mpage

import (
	"fmt"
	"syscall"

	"github.com/mpaged/mpaged/uring"
)

// Metadata blocks: the engine's buffer helpers.
//
// A file system keeps its metadata (superblock, group descriptors,
// bitmaps, inode tables, directory and indirect blocks) in one mapping over
// the whole device, whose file block n is device block n (a LinearMapper
// from 0; "the metadata mapping"). The methods here work on its blocks,
// not its pages, as the kernel's buffer helpers do on a block device's
// buffers: a file system reads a block (ReadBlock, the seeds' bread),
// locks it to change its bytes (BlockRef.Lock, Data), marks it dirty
// (MarkDirty, mark_buffer_dirty), releases it (Release, brelse), forgets
// blocks that become file data (ForgetBlocks, bforget and
// unmap_underlying_metadata), writes the block after a boundary
// (WriteBlockIfDirty, write_boundary_block), and writes one block now and
// waits for it (SyncBlock, sync_dirty_buffer). It never drives the page
// protocol (page lookup, the page lock, uptodate checks, writeback waits)
// itself.
//
// A block smaller than a page shares its page with other blocks, some of
// which may be file data written through the files' own mappings: only
// the blocks marked dirty here are ever written from the metadata mapping
// (SetBlocksDirty's per-block state).
//
// Journal hook: with a BlockJournal installed (SetJournal), MarkDirty hands
// the block to it (JoinBlock) after marking it dirty, and ForgetBlocks
// tells it about each forgotten block. The journal pins the blocks of a
// transaction (BlockRef.Pin) so writeback leaves them dirty on the page
// until the transaction has committed, writes their bytes to the journal
// with BlockRef.WriteTo, and unpins them afterwards (checkpoint), when
// writeback, or SyncBlock, writes them home. With no journal installed
// nothing of this runs: MarkDirty is SetBlocksDirty, and writeback tests
// one counter per page.
//
// Lock order: a block's lock is its page's lock. It is taken one at a time
// (never while holding another page lock of the same mapping), may be
// taken while holding a file system lock, a mapper's lock or a file page's
// lock (the engine holds one while it calls the mapper and ForgetBlocks),
// and is held while JoinBlock runs: a journal must not take a page lock,
// or sleep on anything that waits for one, from JoinBlock.

// BlockJournal is a running journal that metadata blocks join when they
// are dirtied (the seeds' later jbd2 get_write_access and
// dirty_metadata, in one call). Its methods run with no mpage lock held
// except where said.
type BlockJournal interface {
	// JoinBlock is called by MarkDirty, with the block's page locked
	// and the block already marked dirty, so the running transaction
	// takes the block. It should pin the block (ref.Pin) the first time
	// the transaction sees it. It must not block on page locks.
	JoinBlock(ref BlockRef)
	// ForgetBlock is called by ForgetBlocks for each block that leaves
	// the metadata for file data (the seeds' jbd2 forget/revoke): a copy
	// of it in the journal must not be replayed over the new data. No
	// mpage lock is held.
	ForgetBlock(block uint64)
}

// journalBox holds a BlockJournal for an atomic pointer.
type journalBox struct{ j BlockJournal }

// SetJournal installs j as the mapping's journal, or removes it (nil).
// Blocks a previous journal pinned stay pinned until it unpins them.
func (m *Mapping) SetJournal(j BlockJournal) {
	if j == nil {
		m.journal.Store(nil)
		return
	}
	m.journal.Store(&journalBox{j: j})
}

// BlockRef is a reference to one block of a mapping: the page holding it,
// referenced, so it stays cached until Release. The block's bytes belong
// to whoever holds its lock (Lock). A BlockRef is a small value, passed
// and returned by value; its zero value refers to nothing.
type BlockRef struct {
	m     *Mapping
	p     *Page
	block uint64
}

// Block is the block number (in a metadata mapping, the device block).
func (r BlockRef) Block() uint64 { return r.block }

// Mapping is the mapping the block belongs to.
func (r BlockRef) Mapping() *Mapping { return r.m }

// off is the block's byte offset in its page.
func (r BlockRef) off() int { return int(r.block<<r.m.blkbits) & (PageSize - 1) }

// Data is the block's bytes, in the page. Stable only under Lock.
func (r BlockRef) Data() []byte {
	off := r.off()
	return r.p.Data[off : off+1<<r.m.blkbits : off+1<<r.m.blkbits]
}

// Uptodate reports whether the block's page holds the device's bytes (or
// newer ones).
func (r BlockRef) Uptodate() bool { return r.p.Has(Uptodate) }

// Release drops the reference (brelse). r must not be used after it.
func (r BlockRef) Release() { r.p.Release() }

// Lock takes the block's lock (its page's) and waits for a write of the
// page in flight to end, so the bytes can be changed. It fails, without
// the lock, if the page has left the mapping (Truncate, Close).
func (r BlockRef) Lock() error {
	r.p.lock()
	if r.p.mapping != r.m {
		r.p.Unlock()
		return fmt.Errorf("mpage: %s: block %d: %w", r.m.name, r.block, ErrClosed)
	}
	r.p.WaitWriteback()
	return nil
}

// Unlock releases the block's lock.
func (r BlockRef) Unlock() { r.p.Unlock() }

// MarkDirty marks the block dirty after its bytes changed, and only that
// block of its page (mark_buffer_dirty); with a journal installed, the
// block then joins the running transaction. The caller holds Lock and the
// page is uptodate.
func (r BlockRef) MarkDirty() {
	off := r.off()
	r.m.SetBlocksDirty(r.p, off, off+1<<r.m.blkbits)
	if jb := r.m.journal.Load(); jb != nil {
		jb.j.JoinBlock(r)
	}
}

// Pin keeps the block's page from being written by writeback (WritePages,
// WritePage, WriteBlockIfDirty, SyncBlock) until a matching Unpin: a
// journal pins the blocks of a transaction until it has committed, so
// their new bytes never reach their home location first. Pinning is per
// page: a pinned block holds back the other dirty blocks of its page. A
// pin holds a page reference, so the page stays cached. Dirty pinned pages
// count as dirty for throttling and keep the mapping on the dirty list;
// WriteAndWait and a Flusher pass return with them still dirty (with a
// journal, their durability is its commit, not their home write).
func (r BlockRef) Pin() {
	r.p.refs.Add(1)
	r.p.pins.Add(1)
}

// Unpin drops a Pin; once the last is gone, writeback writes the page
// again (checkpoint: SyncBlock writes it home and waits).
func (r BlockRef) Unpin() {
	if r.p.pins.Add(-1) < 0 {
		panic("mpage: block unpinned more often than pinned")
	}
	r.p.Release()
}

// Pinned reports whether the block's page is pinned.
func (r BlockRef) Pinned() bool { return r.p.pins.Load() > 0 }

// WriteTo writes the block's bytes as they are now to device block pblock
// of the mapping's device (a journal's log block) and waits for the
// write. The caller holds Lock, so the bytes cannot change meanwhile. The
// block's own state (dirty, pinned) is not touched.
func (r BlockRef) WriteTo(pblock uint64) error {
	d := r.m.dev
	done := make(chan error, 1)
	data := r.Data()
	q := &uring.Request{Op: uring.OpWritev, File: d.file, Offset: int64(pblock) << r.m.blkbits,
		Vecs: [][]byte{data}, BufIndex: uring.NoBuffer,
		Handler: uring.HandlerFunc(func(q *uring.Request) {
			err := q.Err
			if err == nil && q.Res < len(data) {
				err = errShortWriteIO
			}
			done <- err
		})}
	err := d.ring.Submit(q)
	if err == nil {
		err = <-done
	}
	if err != nil {
		return fmt.Errorf("mpage: %s: write block %d to %d: %w", r.m.name, r.block, pblock, err)
	}
	return nil
}

// checkBlock fails blocks past the mapping's size.
func (m *Mapping) checkBlock(block uint64) error {
	if block >= uint64(m.Size())>>m.blkbits {
		return fmt.Errorf("mpage: %s: %w: block %d past %d bytes", m.name, ErrRange, block, m.Size())
	}
	return nil
}

// blockIndex is the page index holding block.
func (m *Mapping) blockIndex(block uint64) uint64 {
	return block >> (PageShift - m.blkbits)
}

// ReadBlock returns block referenced and uptodate, from the cache or read
// from the device the way ReadAt reads (readahead included): the seeds'
// bread. A read that fails twice is an error wrapping syscall.EIO.
func (m *Mapping) ReadBlock(block uint64) (BlockRef, error) {
	if err := m.checkBlock(block); err != nil {
		return BlockRef{}, err
	}
	p, err := m.readPage(m.blockIndex(block), 1)
	if err != nil {
		return BlockRef{}, fmt.Errorf("mpage: %s: read block %d: %w", m.name, block, err)
	}
	return BlockRef{m: m, p: p, block: block}, nil
}

// GetBlock returns block referenced, cached or created (the seeds'
// getblk): it is not read, so it may not be Uptodate.
func (m *Mapping) GetBlock(block uint64) (BlockRef, error) {
	if err := m.checkBlock(block); err != nil {
		return BlockRef{}, err
	}
	p, _, err := m.grabPage(m.blockIndex(block))
	if err != nil {
		return BlockRef{}, err
	}
	p.Unlock()
	return BlockRef{m: m, p: p, block: block}, nil
}

// ZeroBlock makes block a block of zeroes, marked dirty (a block just
// allocated to metadata: an indirect or extent index block). A block that
// fills its page is not read first.
func (m *Mapping) ZeroBlock(block uint64) error {
	var r BlockRef
	var err error
	if m.blkbits == PageShift {
		r, err = m.GetBlock(block)
	} else {
		r, err = m.ReadBlock(block)
	}
	if err != nil {
		return err
	}
	defer r.Release()
	if err := r.Lock(); err != nil {
		return err
	}
	clear(r.Data())
	// With one block per page the zeroes are the whole page; otherwise
	// the page was read above.
	r.p.set(Uptodate)
	r.MarkDirty()
	r.Unlock()
	return nil
}

// ForgetBlocks drops blocks [block, block+n) from the mapping: they now
// hold (or are about to hold) file data, so pending writes of them are
// discarded, a write in flight is waited for, and their cached bytes are
// zeroed (the seeds' bforget and unmap_underlying_metadata). Pages not
// cached need nothing. With a journal installed it is told of each block.
func (m *Mapping) ForgetBlocks(block uint64, n int) {
	if jb := m.journal.Load(); jb != nil {
		for k := range uint64(max(n, 0)) {
			jb.j.ForgetBlock(block + k)
		}
	}
	bs := 1 << m.blkbits
	for n > 0 {
		off := int(block<<m.blkbits) & (PageSize - 1)
		k := min(n, (PageSize-off)/bs)
		if p := m.findPage(m.blockIndex(block)); p != nil {
			p.lock()
			if p.mapping == m {
				m.DiscardBlocks(p, off, off+k*bs)
			}
			p.Unlock()
			p.Release()
		}
		block += uint64(k)
		n -= k
	}
}

// WriteBlockIfDirty starts the write of block's page if it is cached,
// dirty, not under writeback and not pinned, and does not wait (the
// seeds' write_boundary_block: the engine calls it for the block after a
// boundary, so an indirect block placed after its data goes out in the
// same sweep). Write errors stay on the mapping (Err).
func (m *Mapping) WriteBlockIfDirty(block uint64) {
	if m.checkBlock(block) != nil {
		return
	}
	p := m.findPage(m.blockIndex(block))
	if p == nil {
		return
	}
	p.lock()
	if p.mapping == m && p.Has(Dirty) && !p.Has(Writeback) && p.pins.Load() == 0 {
		_ = m.WritePage(p) // errors stay on the mapping and in Err
	} else {
		p.Unlock()
	}
	p.Release()
}

// SyncBlock writes block's page now if it is cached, dirty and not pinned,
// and waits until no write of it is in flight (sync_dirty_buffer). It
// reports the mapping's error if the page's last write failed.
func (m *Mapping) SyncBlock(block uint64) error {
	if err := m.checkBlock(block); err != nil {
		return err
	}
	p := m.findPage(m.blockIndex(block))
	if p == nil {
		return nil
	}
	defer p.Release()
	p.lock()
	if p.mapping == m && p.Has(Dirty) && p.pins.Load() == 0 {
		if err := m.WritePage(p); err != nil {
			return fmt.Errorf("mpage: %s: write block %d: %w", m.name, block, err)
		}
	} else {
		p.Unlock()
	}
	p.WaitWriteback()
	if p.Has(writeErr) {
		if err := m.Err(); err != nil {
			return fmt.Errorf("mpage: %s: block %d: %w", m.name, block, err)
		}
		return fmt.Errorf("mpage: %s: block %d: %w", m.name, block, syscall.EIO)
	}
	return nil
}

// BlockCached reports whether block's page is in the cache (it may not be
// uptodate).
func (m *Mapping) BlockCached(block uint64) bool {
	p := m.findPage(m.blockIndex(block))
	if p == nil {
		return false
	}
	p.Release()
	return true
}
