package mpage

import "sync"

// MaxReadahead is the largest readahead window, in pages: one full Bio.
const MaxReadahead = 256

// initReadahead is the first window of a sequential stream, in pages.
const initReadahead = 16

// readahead is a mapping's on-demand readahead state (one stream): the
// current window [start, start+size) and, asyncSize pages before its end,
// the page marked Readahead whose access starts the next window while the
// reader still has pages to consume, so the device stays busy.
type readahead struct {
	mu        sync.Mutex
	start     uint64
	size      int
	asyncSize int
	prev      uint64 // last page a reader asked for
	max       int
	// cut is a page where the file's layout on the device last forced a
	// new Bio (an indirect block between data runs, a Boundary). Full
	// windows end on cut + k*size, so a run that ends there ends a window
	// instead of splitting one into two Bios: on ext2, whose runs are
	// 1024 blocks between indirect blocks, that is one SQE per MiB
	// instead of five per 4 MiB.
	cut    uint64
	hasCut bool
	// nominal is the window's size before a shortening for the cut: the
	// next window grows from it, not from the shortened one.
	nominal int
}

func (ra *readahead) init() { ra.max = MaxReadahead }

// SetReadahead sets the largest window in pages (0 turns readahead off:
// reads then go a page at a time).
func (m *Mapping) SetReadahead(pages int) {
	m.ra.mu.Lock()
	m.ra.max = min(max(pages, 0), MaxReadahead)
	m.ra.mu.Unlock()
}

// onMiss starts reads for a cache miss at index, where the reader wants
// want pages from index on. A miss right after the previous window or the
// previous page grows the window (doubling, up to the maximum); any other
// miss starts a small window sized to the request.
func (m *Mapping) onMiss(index uint64, want int) {
	ra := &m.ra
	ra.mu.Lock()
	if ra.max == 0 {
		ra.mu.Unlock()
		_, _ = m.ReadPages(index, max(want, 1), 0)
		return
	}
	sequential := index == ra.start+uint64(ra.size) || index == ra.prev+1
	var size int
	switch {
	case sequential && ra.size > 0:
		size = min(ra.size*2, ra.max)
	case sequential || index == 0:
		size = min(max(want, initReadahead), ra.max)
	default:
		// A standalone random miss: read what was asked, and leave the
		// window alone for the stream it may interrupt.
		ra.prev = index
		ra.mu.Unlock()
		_, _ = m.ReadPages(index, min(max(want, 1), m.raCap()), 0)
		return
	}
	size = min(max(size, want), m.raCap())
	ra.start, ra.size, ra.nominal = index, size, size
	ra.asyncSize = size / 2
	ra.prev = index
	start, n, async := ra.start, ra.size, ra.asyncSize
	ra.mu.Unlock()
	_, _ = m.ReadPages(start, n, async)
}

// onMarker starts the next window when a reader reaches a page marked
// Readahead: the stream is sequential, so it doubles.
func (m *Mapping) onMarker(p *Page) {
	if !p.testAndClear(Readahead) {
		return
	}
	ra := &m.ra
	ra.mu.Lock()
	next := ra.start + uint64(ra.size)
	if p.Index < ra.start || p.Index >= next {
		// A marker of an older window: start from the page after it.
		next = p.Index + 1
	}
	full := min(ra.max, m.raCap())
	size := min(max(max(ra.size, ra.nominal)*2, initReadahead), full)
	if size == 0 {
		ra.mu.Unlock()
		return
	}
	ra.nominal = size
	if ra.hasCut && size == full && next > ra.cut {
		// Shorten this window once so that it, and every full window
		// after it, ends where the layout's next run may end.
		if over := int((next + uint64(size) - ra.cut) % uint64(full)); over > 0 && over < size {
			size -= over
		}
	}
	ra.start, ra.size, ra.asyncSize = next, size, size
	ra.mu.Unlock()
	_, _ = m.ReadPages(next, size, size)
}

// noteCut records where ReadPages last had to start a Bio because of the
// layout on the device.
func (m *Mapping) noteCut(page uint64) {
	m.ra.mu.Lock()
	m.ra.cut, m.ra.hasCut = page, true
	m.ra.mu.Unlock()
}

// raCap bounds a window by the cache: a quarter of its limit, so the
// window being read and the next one (started at the marker) fit with room
// to spare, instead of pushing the cache past its limit with locked pages.
func (m *Mapping) raCap() int { return max(m.cache.limit/4, 1) }

// noteAccess records the page a reader used, for sequential detection.
func (m *Mapping) noteAccess(index uint64) {
	m.ra.mu.Lock()
	m.ra.prev = index
	m.ra.mu.Unlock()
}
