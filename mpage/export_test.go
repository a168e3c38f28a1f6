package mpage

// SetPageEndedHook makes d's multipage Bio completions call fn with each
// page, in the order they end it (after the unlock of a read, after the
// end of writeback of a write). fn runs on the completion side and must
// not block. Set it before the device carries I/O; nil removes it.
func SetPageEndedHook(d *Device, fn func(p *Page, dir Dir)) { d.pageEnded = fn }

// The page protocol is internal to the engine (file systems use the
// metadata block API); the package's external tests drive it through these.

// FindPage is m.findPage.
func FindPage(m *Mapping, index uint64) *Page { return m.findPage(index) }

// GrabPage is m.grabPage.
func GrabPage(m *Mapping, index uint64) (*Page, bool, error) { return m.grabPage(index) }

// LockPage is p.lock.
func LockPage(p *Page) { p.lock() }
