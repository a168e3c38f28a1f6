package mpage

// Per-block dirtiness for pages that hold blocks of different owners.
//
// A volume's metadata mapping covers the whole device, so with blocks
// smaller than a page one of its pages may hold, say, an indirect block
// and three blocks of file data that the file's own mapping writes. Such a
// page must only ever write the blocks the file system changed through it
// (the seeds' mark_buffer_dirty on a block-device buffer), and a block that
// changes owner (a freed metadata block reused for data) must lose any
// write still pending through the old owner (the seeds' unmap_underlying
// metadata / bforget). The invariant: a block of a page with per-block
// state is written only while its state says dirty; a page without
// per-block state is dirty as a whole.

// SetBlocksDirty marks dirty the blocks of p that hold bytes [from, to) of
// the page, and no others: a later writeback writes those blocks only. p
// is locked and uptodate, and the caller changed Data there. With one
// block per page, or a range covering the page, it is SetPageDirty.
func (m *Mapping) SetBlocksDirty(p *Page, from, to int) {
	from, to = max(from, 0), min(to, PageSize)
	bpp := m.blocksPerPage()
	if bpp == 1 || (from == 0 && to == PageSize) {
		m.setDirty(p)
		return
	}
	if from >= to {
		return
	}
	b := p.ensureBuffers(bpp)
	b.mu.Lock()
	for i := from >> m.blkbits; i <= (to-1)>>m.blkbits; i++ {
		b.state[i] |= bufDirty | bufUptodate
	}
	b.mu.Unlock()
	m.tagDirty(p)
}

// DiscardBlocks forgets the blocks of p that hold bytes [from, to) of the
// page: their device blocks now belong to someone else (a metadata block
// freed and reused for file data), so whatever this mapping holds for them
// is stale. Their pending writes are dropped and their bytes zeroed; a
// write of them already in flight is waited for, so it cannot land after
// the new owner's. p is locked. A page left with no dirty block is no
// longer tagged dirty, and a failed write of it has nothing left to retry:
// its error leaves the mapping's count (else every later sync would
// report it).
func (m *Mapping) DiscardBlocks(p *Page, from, to int) {
	from, to = max(from, 0), min(to, PageSize)
	if from >= to {
		return
	}
	p.WaitWriteback()
	bpp := m.blocksPerPage()
	first, last := from>>m.blkbits, (to-1)>>m.blkbits
	clear(p.Data[first<<m.blkbits : (last+1)<<m.blkbits])
	b := p.bufs
	if b == nil {
		if bpp == 1 || (first == 0 && last == bpp-1) || !p.Has(Dirty) {
			m.clearDirtyForIO(p)
			m.dropWriteErr(p)
			return
		}
		b = p.ensureBuffers(bpp)
	}
	b.mu.Lock()
	dirty := false
	for i := range bpp {
		if i >= first && i <= last {
			b.state[i] &^= bufDirty
		}
		if b.state[i]&bufDirty != 0 {
			dirty = true
		}
	}
	b.mu.Unlock()
	if !dirty {
		m.clearDirtyForIO(p)
		m.dropWriteErr(p)
	}
}

// redirtyBlocks marks dirty again the mapped blocks of a page whose
// multipage write failed: the Bio carried every one of them (a page with
// per-block state goes multipage only when all its mapped blocks are
// dirty), so the retry must write them all. Runs on the completion side.
func (p *Page) redirtyBlocks() {
	b := p.bufs
	if b == nil {
		return
	}
	b.mu.Lock()
	for i := range b.state {
		if b.state[i]&bufMapped != 0 {
			b.state[i] |= bufDirty
		}
	}
	b.mu.Unlock()
}

// invalidateBlocksFrom drops the mapping of the blocks of p wholly past
// byte off of the page (the seeds' block_invalidatepage on truncate): the
// file system frees those blocks next, so if the file grows again they
// must be mapped (allocated) afresh, never written at their old address.
// The caller holds the page lock.
func (p *Page) invalidateBlocksFrom(off int, m *Mapping) {
	b := p.bufs
	if b == nil {
		return
	}
	bs := 1 << m.blkbits
	b.mu.Lock()
	for i := (off + bs - 1) >> m.blkbits; i < m.blocksPerPage(); i++ {
		b.state[i] &^= bufMapped | bufDirty | bufNew | bufBoundary
		b.pblock[i] = 0
	}
	b.mu.Unlock()
}
