package mpage

// SetPageEndedHook makes d's multipage Bio completions call fn with each
// page, in the order they end it (after the unlock of a read, after the
// end of writeback of a write). fn runs on the completion side and must
// not block. Set it before the device carries I/O; nil removes it.
func SetPageEndedHook(d *Device, fn func(p *Page, dir Dir)) { d.pageEnded = fn }
