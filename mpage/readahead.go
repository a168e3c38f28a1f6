package mpage

import (
	"sync"
	"sync/atomic"
)

// MaxReadahead is the largest readahead window, in pages: one full Bio.
const MaxReadahead = 256

// initReadahead is the first window of a sequential stream, in pages.
const initReadahead = 16

// maxWindowsAhead is the most full windows a stream keeps in flight ahead
// of its reader (see Mapping.windowsAhead for the device's and the
// cache's share of it).
const maxWindowsAhead = 4

// readahead is a mapping's on-demand readahead state (one stream): the
// last window started, [start, start+size), and, asyncSize pages before
// its end, the page marked Readahead whose access starts the next window
// while the reader still has pages to consume, so the device stays busy.
// Once windows are full, a stream keeps several in flight: each marker
// (the first page of a full window) tops the stream up to windowsAhead
// full windows past the marker, so the device has the next Bio queued
// when one completes instead of waiting for the reader to reach the
// marker.
type readahead struct {
	mu        sync.Mutex
	start     uint64
	size      int
	asyncSize int
	// prev is the last page a reader asked for: every cache hit records
	// it, so it is an atomic rather than under mu.
	prev atomic.Uint64
	// max is the largest window (SetReadahead); read without mu by
	// onMarker and windowsAhead, so an atomic.
	max atomic.Int32
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

func (ra *readahead) init() { ra.max.Store(MaxReadahead) }

// SetReadahead sets the largest window in pages (0 turns readahead off:
// reads then go a page at a time).
func (m *Mapping) SetReadahead(pages int) {
	m.ra.max.Store(int32(min(max(pages, 0), MaxReadahead)))
}

// onMiss starts reads for a cache miss at index, where the reader wants
// want pages from index on, and records the access. A miss right after the
// previous window or the previous page grows the window (doubling, up to
// the maximum); any other miss starts a small window sized to the request.
// It returns page index, referenced, if the reads it started created it.
func (m *Mapping) onMiss(index uint64, want int) *Page {
	ra := &m.ra
	ra.mu.Lock()
	prev := ra.prev.Swap(index)
	raMax := int(ra.max.Load())
	if raMax == 0 {
		ra.mu.Unlock()
		_, p, _ := m.readPages(index, max(want, 1), 0, readKeepFirst)
		return p
	}
	sequential := index == ra.start+uint64(ra.size) || index == prev+1
	var size int
	switch {
	case sequential && ra.size > 0:
		size = min(ra.size*2, raMax)
	case sequential || index == 0:
		size = min(max(want, initReadahead), raMax)
	default:
		// A standalone random miss: read what was asked, and leave the
		// window alone for the stream it may interrupt.
		ra.mu.Unlock()
		_, p, _ := m.readPages(index, min(max(want, 1), m.raCap()), 0, readKeepFirst)
		return p
	}
	size = min(max(size, want), m.raCap())
	ra.start, ra.size, ra.nominal = index, size, size
	ra.asyncSize = size / 2
	start, n, async := ra.start, ra.size, ra.asyncSize
	ra.mu.Unlock()
	_, p, _ := m.readPages(start, n, async, readKeepFirst)
	return p
}

// onMarker starts the next window when a reader reaches a page marked
// Readahead: the stream is sequential, so it doubles; at full size it tops
// the stream up to windowsAhead full windows past the marker.
func (m *Mapping) onMarker(p *Page) {
	if !p.testAndClear(Readahead) {
		return
	}
	var wins [maxWindowsAhead]raWindow
	n := m.ra.advance(p.Index, min(int(m.ra.max.Load()), m.raCap()), m.windowsAhead(), wins[:])
	for _, w := range wins[:n] {
		if _, _, err := m.readPages(w.start, w.size, w.size, readNoWait); err != nil {
			break // memory is short: the reader reads what it needs itself
		}
	}
}

// raWindow is a window to start: ReadPages(start, size, size).
type raWindow struct {
	start uint64
	size  int
}

// advance moves the stream on for a marker at page marker: the windows to
// start go to out, and it returns how many. full is the largest window,
// ahead the full windows to keep past the marker.
func (ra *readahead) advance(marker uint64, full, ahead int, out []raWindow) int {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	if full == 0 {
		return 0
	}
	next := ra.start + uint64(ra.size)
	// A marker of this stream lies in the windows still ahead of the
	// reader; any other (an older window's) starts over after it.
	if marker >= next || marker+uint64((ahead+1)*full) < next {
		next = marker + 1
	}
	size := min(max(max(ra.size, ra.nominal)*2, initReadahead), full)
	ra.nominal = size
	target := next // ramping up: one window
	if size == full {
		target = marker + uint64(ahead*full)
	}
	n := 0
	for n < len(out) && (n == 0 || next < target) {
		sz := size
		if ra.hasCut && sz == full && next > ra.cut {
			// Shorten a window once so that it, and every full window
			// after it, ends where the layout's next run may end.
			if over := int((next + uint64(sz) - ra.cut) % uint64(full)); over > 0 && over < sz {
				sz -= over
			}
		}
		out[n] = raWindow{next, sz}
		n++
		ra.start, ra.size, ra.asyncSize = next, sz, sz
		next += uint64(sz)
	}
	return n
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

// windowsAhead is how many full windows a stream keeps past its reader:
// maxWindowsAhead, fewer when the device's ring is small (each window is a
// request; a stream takes at most a quarter of the entries) or when they
// would pass a quarter of the cache (then one: the window being read and
// the next fit, as before).
func (m *Mapping) windowsAhead() int {
	full := max(min(int(m.ra.max.Load()), m.raCap()), 1)
	return max(min(maxWindowsAhead, m.dev.ringEntries/4, m.raCap()/full), 1)
}

// noteAccess records the page a reader used, for sequential detection.
func (m *Mapping) noteAccess(index uint64) { m.ra.prev.Store(index) }
