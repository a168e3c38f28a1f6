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
type propStore struct {
	mu sync.Mutex
	m  map[propKey]map[xml.Name]webdav.Property
}

func newPropStore() *propStore {
	return &propStore{m: make(map[propKey]map[xml.Name]webdav.Property)}
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
	s.applyLocked(k, patches)
	return []webdav.Propstat{okPropstat(patches)}
}

func (s *propStore) applyLocked(k propKey, patches []webdav.Proppatch) {
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
	ps := webdav.Propstat{Status: http.StatusOK}
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
		}
		delete(s.m, *old)
	}
	s.applyLocked(k, pending)
}

// drop forgets k's properties (the file is gone).
func (s *propStore) drop(k propKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
}
