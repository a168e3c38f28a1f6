package dav

import (
	"encoding/xml"
	"net/http"
	"sync"

	"golang.org/x/net/webdav"

	"github.com/mpaged/mpaged/fs/ext"
)

// propKey names one file for its life: an inode number reused for a new
// file gets a new generation, so a new file never inherits the dead
// properties of a freed one.
type propKey struct{ ino, gen uint32 }

func keyOf(fi ext.FileInfo) propKey { return propKey{fi.Ino, fi.Generation} }

// propStore keeps dead properties (PROPPATCH) in memory for the daemon's
// lifetime: fs/ext has no extended-attribute writer to keep them on the
// volume. They follow the inode: MOVE keeps them, COPY copies them
// (webdav patches the copy), a PUT that replaces a file moves them to the
// new inode, removal drops them.
//
// They are bounded, as they live in the daemon's memory: a file holds at
// most perFile bytes of them and all files together total bytes (names,
// language tags and values counted); a PROPPATCH past either is refused
// whole, 507 Insufficient Storage for each of its properties (RFC 4918
// 9.2.1).
type propStore struct {
	perFile, total int64 // the bounds

	mu    sync.Mutex
	m     map[propKey]map[xml.Name]webdav.Property
	bytes int64 // the size of everything in m
}

// The default bounds: room for what clients keep (Windows attributes,
// Finder tags) many times over, little against the daemon's memory.
const (
	maxPropBytesPerFile = 64 << 10
	maxPropBytesTotal   = 32 << 20
)

func newPropStore() *propStore {
	return &propStore{perFile: maxPropBytesPerFile, total: maxPropBytesTotal,
		m: make(map[propKey]map[xml.Name]webdav.Property)}
}

// propSize is what one property counts against the bounds.
func propSize(p webdav.Property) int64 {
	return int64(len(p.XMLName.Space) + len(p.XMLName.Local) + len(p.Lang) + len(p.InnerXML))
}

// sizeLocked is the size of k's properties.
func (s *propStore) sizeLocked(k propKey) int64 {
	var n int64
	for _, p := range s.m[k] {
		n += propSize(p)
	}
	return n
}

// fitsLocked reports whether k's properties stay within the bounds once
// patches are applied.
func (s *propStore) fitsLocked(k propKey, patches []webdav.Proppatch) bool {
	sizes := make(map[xml.Name]int64, len(s.m[k]))
	for n, p := range s.m[k] {
		sizes[n] = propSize(p)
	}
	for _, pp := range patches {
		for _, p := range pp.Props {
			if pp.Remove {
				delete(sizes, p.XMLName)
			} else {
				sizes[p.XMLName] = propSize(p)
			}
		}
	}
	var after int64
	for _, n := range sizes {
		after += n
	}
	return after <= s.perFile && s.bytes-s.sizeLocked(k)+after <= s.total
}

// get returns a copy of k's properties (nil: none).
func (s *propStore) get(k propKey) map[xml.Name]webdav.Property {
	s.mu.Lock()
	defer s.mu.Unlock()
	props := s.m[k]
	if len(props) == 0 {
		return nil
	}
	out := make(map[xml.Name]webdav.Property, len(props))
	for n, p := range props {
		out[n] = p
	}
	return out
}

// patch applies patches to k in order, all of them: dead properties have
// no rule a value could break, so every patch succeeds (one 200 Propstat
// naming every property, as webdav.DeadPropsHolder asks).
func (s *propStore) patch(k propKey, patches []webdav.Proppatch) []webdav.Propstat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fitsLocked(k, patches) {
		return []webdav.Propstat{fullPropstat(patches)}
	}
	s.applyLocked(k, patches)
	return []webdav.Propstat{okPropstat(patches)}
}

// check is patch's answer without applying anything (patches held until
// a replacement lands): nil if they fit k's bounds now.
func (s *propStore) check(k propKey, patches []webdav.Proppatch) []webdav.Propstat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fitsLocked(k, patches) {
		return []webdav.Propstat{fullPropstat(patches)}
	}
	return nil
}

func (s *propStore) applyLocked(k propKey, patches []webdav.Proppatch) {
	s.bytes -= s.sizeLocked(k)
	defer func() { s.bytes += s.sizeLocked(k) }()
	for _, pp := range patches {
		for _, p := range pp.Props {
			if pp.Remove {
				delete(s.m[k], p.XMLName)
				continue
			}
			if s.m[k] == nil {
				s.m[k] = make(map[xml.Name]webdav.Property)
			}
			s.m[k][p.XMLName] = p
		}
	}
	if len(s.m[k]) == 0 {
		delete(s.m, k)
	}
}

// okPropstat is the answer to patches that all succeeded.
func okPropstat(patches []webdav.Proppatch) webdav.Propstat {
	return propstatOf(patches, http.StatusOK, "")
}

// fullPropstat is the answer to patches refused for the bounds.
func fullPropstat(patches []webdav.Proppatch) webdav.Propstat {
	return propstatOf(patches, http.StatusInsufficientStorage, "the dead properties would exceed their bounds")
}

func propstatOf(patches []webdav.Proppatch, status int, why string) webdav.Propstat {
	ps := webdav.Propstat{Status: status, ResponseDescription: why}
	for _, pp := range patches {
		for _, p := range pp.Props {
			ps.Props = append(ps.Props, webdav.Property{XMLName: p.XMLName})
		}
	}
	return ps
}

// replaced moves the properties of a replaced file (old, if any) to its
// replacement, or drops them (keep false: a COPY's destination gets the
// source's, as pending), and applies the patches made before the
// replacement landed.
func (s *propStore) replaced(old *propKey, keep bool, k propKey, pending []webdav.Proppatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old != nil && *old != k {
		if props, ok := s.m[*old]; ok && keep {
			s.m[k] = props
		} else {
			s.bytes -= s.sizeLocked(*old)
		}
		delete(s.m, *old)
	}
	s.applyLocked(k, pending)
}

// drop forgets k's properties (the file is gone).
func (s *propStore) drop(k propKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytes -= s.sizeLocked(k)
	delete(s.m, k)
}
