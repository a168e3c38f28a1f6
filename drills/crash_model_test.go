package drills

import (
	"bytes"
	"maps"
	"slices"
)

// version is one state a path has been in, as far as the drill knows.
type version struct {
	present bool
	data    []byte // a file's exact bytes, when present
	// loose: present with content the drill cannot pin down (an in-place
	// write not yet synced may land in part); any bytes match it.
	loose bool
}

// matches says whether what a cut holds (present, data) is this version.
func (v version) matches(present bool, data []byte) bool {
	if v.present != present {
		return false
	}
	return !present || v.loose || bytes.Equal(v.data, data)
}

// history is what the drill knows of one path: the last state the daemon
// acknowledged as durable, and every state the path went through after.
type history struct {
	acked version
	since []version
	cur   version // the path's state now (its exact bytes, even when loose in since)
}

// settled: nothing changed the path since its acknowledgement.
func (h *history) settled() bool { return len(h.since) == 0 }

// allowed says whether a cut may hold (present, data) at this path.
func (h *history) allowed(present bool, data []byte) bool {
	if h.acked.matches(present, data) {
		return true
	}
	return slices.ContainsFunc(h.since, func(v version) bool { return v.matches(present, data) })
}

// model is the oracle of the crash drill: per file and directory path,
// its history (see TestCrashDrill for the rules).
type model struct {
	files map[string]*history
	dirs  map[string]*history
}

func newModel() *model {
	return &model{files: map[string]*history{}, dirs: map[string]*history{}}
}

func (m *model) file(p string) *history {
	h := m.files[p]
	if h == nil {
		h = &history{} // every path starts absent, and the fresh image is durable
		m.files[p] = h
	}
	return h
}

// change records a new state of file p; loose marks an in-place write.
func (m *model) change(p string, present bool, data []byte, loose bool) {
	h := m.file(p)
	h.cur = version{present: present, data: data}
	h.since = append(h.since, version{present: present, data: data, loose: loose})
}

// allow adds a state p may be found in, without changing what it is now.
func (m *model) allow(p string, v version) {
	h := m.file(p)
	h.since = append(h.since, v)
}

// mkdir records a new directory.
func (m *model) mkdir(d string) {
	m.dirs[d] = &history{cur: version{present: true}, since: []version{{present: true}}}
}

// ack records that file p is durable as it is now, and so are the
// directories on its path (the metadata that reaches it).
func (m *model) ack(p string) {
	h := m.file(p)
	h.acked, h.since = h.cur, nil
	for d := parentDir(p); d != "/"; d = parentDir(d) {
		if dh := m.dirs[d]; dh != nil {
			dh.acked, dh.since = dh.cur, nil
		}
	}
}

// ackAll records a sync: every path is durable as it is now.
func (m *model) ackAll() {
	for _, h := range m.files {
		h.acked, h.since = h.cur, nil
	}
	for _, h := range m.dirs {
		h.acked, h.since = h.cur, nil
	}
}

// snapshot copies the histories for a cut taken now (the data slices are
// never written after they are recorded).
func (m *model) snapshot() *model {
	cp := func(src map[string]*history) map[string]*history {
		dst := make(map[string]*history, len(src))
		for p, h := range src {
			c := *h
			c.since = slices.Clone(h.since)
			dst[p] = &c
		}
		return dst
	}
	return &model{files: cp(m.files), dirs: cp(m.dirs)}
}

// presentFiles lists the files that exist now, sorted.
func (m *model) presentFiles() []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(m.files)) {
		if m.files[p].cur.present {
			out = append(out, p)
		}
	}
	return out
}

func parentDir(p string) string {
	i := bytes.LastIndexByte([]byte(p), '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}
