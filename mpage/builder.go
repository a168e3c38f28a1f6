package mpage

import "github.com/mpaged/mpaged/alloc"

// bioBuilder is what a walk over pages (ReadPages, a WritePages walk)
// carries from page to page in either direction, the seeds' mpage_data
// without the direction-specific parts: the Bio being built, the device
// block its last page ends at, the mapper's last answer and the current
// page's device blocks. Invariant: while bio is non-nil it holds at
// least one page, whole, and lastBlockInBio is the device block that page
// ends at (a page that ends short of its last block, at a hole or EOF, or
// at a Boundary, submits the Bio instead, so nothing may follow it).
type bioBuilder struct {
	m              *Mapping
	dir            Dir
	bio            *Bio
	lastBlockInBio uint64
	ext            extent
	bm             BlockMap
	blocks         [maxBlocksPerPage]uint64
}

// flush submits the Bio being built, if any.
func (b *bioBuilder) flush() {
	if b.bio != nil {
		b.bio = b.bio.submit()
	}
}

// breakUnlessContiguous submits the pending Bio when the current page's
// first block (blocks[0]) does not follow its last one, and reports
// whether it did.
func (b *bioBuilder) breakUnlessContiguous() bool {
	if b.bio != nil && b.lastBlockInBio != b.blocks[0]-1 {
		b.bio = b.bio.submit()
		return true
	}
	return false
}

// addPage puts length bytes of p into the Bio being built, starting a Bio
// at blocks[0] (sized for nr pages, allocated with flags) when there is
// none and submitting it when it is full. False when no Bio could be had:
// the page must take the per-block path.
func (b *bioBuilder) addPage(p *Page, length, nr int, flags alloc.Flags) bool {
	for {
		if b.bio == nil {
			b.bio = b.m.dev.allocBio(b.m, b.dir, bioPages, b.blocks[0], nr, flags)
			if b.bio == nil {
				return false
			}
		}
		if b.bio.add(p, length) {
			return true
		}
		b.bio = b.bio.submit()
	}
}

// endPage finishes adding a page whose blocks ended at blocks[last]: the
// Bio goes now when push says so (a boundary, a short page), else the next
// page may join it if its blocks follow.
func (b *bioBuilder) endPage(push bool, last int) {
	if push {
		b.bio = b.bio.submit()
		return
	}
	b.lastBlockInBio = b.blocks[last]
}

// confused counts a page that cannot go into a multipage Bio, and submits
// what is pending: the page goes block by block, and a Bio held across
// that could wait on it.
func (b *bioBuilder) confused(why Reason) {
	b.m.dev.stats.Confused[b.dir][why].Add(1)
	b.flush()
}
