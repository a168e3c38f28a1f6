package mpagetest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/mpaged/mpaged/mpage"
)

// Extent is one mapped run of a ScriptedMapper: file blocks
// [Start, Start+N) at device blocks [PBlock, PBlock+N).
type Extent struct {
	Start, N, PBlock uint64
	// Flags answered for it besides Mapped: Boundary (set only on answers
	// that reach the extent's last block), New, MapUptodate.
	Flags mpage.MapFlags
}

func (e Extent) end() uint64 { return e.Start + e.N }

// MapCall is one MapBlocks call as the ScriptedMapper saw it.
type MapCall struct {
	Block  uint64
	Asked  int // Len asked
	Create bool
	// The answer.
	Flags  mpage.MapFlags
	PBlock uint64
	Len    int
	Err    error
}

func (c MapCall) String() string {
	s := fmt.Sprintf("map %d len=%d", c.Block, c.Asked)
	if c.Create {
		s += " create"
	}
	if c.Err != nil {
		return s + " -> error " + c.Err.Error()
	}
	if c.Flags&mpage.Mapped == 0 {
		return s + fmt.Sprintf(" -> hole len=%d", c.Len)
	}
	return s + fmt.Sprintf(" -> %d len=%d %s", c.PBlock, c.Len, c.Flags)
}

// UptodateByte is what a ScriptedMapper fills a MapUptodate block with
// (the seeds' get_block copying inline data into the page).
const UptodateByte = 0x49 // 'I'

// ScriptedMapper is a BlockMapper answering from a script of extents;
// blocks outside every extent are holes. With create it allocates holes
// from a bump allocator (answering New) and remembers the new extent. It
// implements mpage.BlockForgetter and mpage.BoundaryWriter, logging both.
//
// Script lines (blank lines and # comments ignored):
//
//	map A[-B] at P [boundary] [new] [uptodate]  file blocks A..B at device block P
//	alloc at P [max N]    bump allocator for create; at most N blocks, then ENOSPC
//	maxlen N              answer at most N blocks per call
//	indirect A[-B] at P   before mapping a block in A..B for the first
//	                      time, read device block P through MetaRead
//	fail A[-B] [eio|enospc]  MapBlocks on a block in A..B fails
//
// Safe for concurrent use.
type ScriptedMapper struct {
	// MetaRead reads a device block on behalf of the mapper (an indirect
	// block); Env wires it to its metadata Mapping. Called without the
	// mapper's lock.
	MetaRead func(pblock uint64) error

	mu        sync.Mutex
	extents   []Extent // sorted by Start, disjoint
	allocNext uint64
	allocLeft int64 // < 0: unlimited
	maxLen    int
	indirect  []indirect
	fails     []failRange
	calls     []MapCall
	forgotten []uint64
	boundary  []uint64
}

type indirect struct {
	start, end uint64 // [start, end)
	pblock     uint64
	done       bool
}

type failRange struct {
	start, end uint64
	err        error
}

// NewScriptedMapper parses a script.
func NewScriptedMapper(script string) (*ScriptedMapper, error) {
	s := &ScriptedMapper{allocNext: 1 << 20, allocLeft: -1}
	if err := s.Load(script); err != nil {
		return nil, err
	}
	return s, nil
}

// Load replaces the mapper's script (and clears its logs).
func (s *ScriptedMapper) Load(script string) error {
	var exts []Extent
	var inds []indirect
	var fails []failRange
	allocNext, allocLeft, maxLen := uint64(1<<20), int64(-1), 0
	for ln, line := range strings.Split(script, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("mpagetest: script line %d %q: %s", ln+1, strings.TrimSpace(line), why)
		}
		switch f[0] {
		case "map", "indirect":
			if len(f) < 4 || f[2] != "at" {
				return bad("want " + f[0] + " A[-B] at P")
			}
			a, b, err := parseRange(f[1])
			if err != nil {
				return bad(err.Error())
			}
			p, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil {
				return bad(err.Error())
			}
			if f[0] == "indirect" {
				if len(f) > 4 {
					return bad("indirect takes no flags")
				}
				inds = append(inds, indirect{start: a, end: b + 1, pblock: p})
				continue
			}
			e := Extent{Start: a, N: b - a + 1, PBlock: p}
			for _, fl := range f[4:] {
				switch fl {
				case "boundary":
					e.Flags |= mpage.Boundary
				case "new":
					e.Flags |= mpage.New
				case "uptodate":
					e.Flags |= mpage.MapUptodate
				default:
					return bad("unknown flag " + fl)
				}
			}
			exts = append(exts, e)
		case "alloc":
			if len(f) != 3 && len(f) != 5 || f[1] != "at" {
				return bad("want alloc at P [max N]")
			}
			p, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				return bad(err.Error())
			}
			allocNext = p
			if len(f) == 5 {
				if f[3] != "max" {
					return bad("want alloc at P [max N]")
				}
				if allocLeft, err = strconv.ParseInt(f[4], 10, 64); err != nil {
					return bad(err.Error())
				}
			}
		case "maxlen":
			if len(f) != 2 {
				return bad("want maxlen N")
			}
			n, err := strconv.Atoi(f[1])
			if err != nil || n < 1 {
				return bad("bad maxlen")
			}
			maxLen = n
		case "fail":
			if len(f) < 2 || len(f) > 3 {
				return bad("want fail A[-B] [eio|enospc]")
			}
			a, b, err := parseRange(f[1])
			if err != nil {
				return bad(err.Error())
			}
			var e error = syscall.EIO
			if len(f) == 3 {
				switch f[2] {
				case "eio":
				case "enospc":
					e = syscall.ENOSPC
				default:
					return bad("unknown error " + f[2])
				}
			}
			fails = append(fails, failRange{start: a, end: b + 1, err: e})
		default:
			return bad("unknown directive")
		}
	}
	slices.SortFunc(exts, func(a, b Extent) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	for i := 1; i < len(exts); i++ {
		if exts[i].Start < exts[i-1].end() {
			return fmt.Errorf("mpagetest: extents at %d and %d overlap", exts[i-1].Start, exts[i].Start)
		}
	}
	s.mu.Lock()
	s.extents, s.indirect, s.fails = exts, inds, fails
	s.allocNext, s.allocLeft, s.maxLen = allocNext, allocLeft, maxLen
	s.calls, s.forgotten, s.boundary = nil, nil, nil
	s.mu.Unlock()
	return nil
}

func parseRange(s string) (a, b uint64, err error) {
	as, bs, ok := strings.Cut(s, "-")
	if a, err = strconv.ParseUint(as, 10, 64); err != nil {
		return 0, 0, err
	}
	b = a
	if ok {
		if b, err = strconv.ParseUint(bs, 10, 64); err != nil {
			return 0, 0, err
		}
	}
	if b < a {
		return 0, 0, fmt.Errorf("range %s is backwards", s)
	}
	return a, b, nil
}

// MapBlocks implements mpage.BlockMapper.
func (s *ScriptedMapper) MapBlocks(m *mpage.BlockMap) error {
	asked := max(m.Len, 1)
	// Indirect blocks are read outside the lock, as a file system's
	// mapper would do I/O.
	s.mu.Lock()
	var meta []uint64
	for i := range s.indirect {
		in := &s.indirect[i]
		if !in.done && m.Block >= in.start && m.Block < in.end {
			in.done = true
			meta = append(meta, in.pblock)
		}
	}
	read := s.MetaRead
	s.mu.Unlock()
	for _, pb := range meta {
		if read == nil {
			return s.logErr(m, asked, fmt.Errorf("mpagetest: indirect block %d but no MetaRead", pb))
		}
		if err := read(pb); err != nil {
			return s.logErr(m, asked, err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.fails {
		if m.Block >= f.start && m.Block < f.end {
			m.Flags, m.Len = 0, 1
			s.calls = append(s.calls, MapCall{Block: m.Block, Asked: asked, Create: m.Create, Err: f.err})
			return f.err
		}
	}
	limit := uint64(asked)
	if s.maxLen > 0 {
		limit = min(limit, uint64(s.maxLen))
	}
	for _, f := range s.fails {
		if f.start > m.Block {
			limit = min(limit, f.start-m.Block)
		}
	}
	i, found := s.find(m.Block)
	if found {
		e := s.extents[i]
		n := min(limit, e.end()-m.Block)
		m.PBlock = e.PBlock + (m.Block - e.Start)
		m.Len = int(n)
		m.Flags = mpage.Mapped | e.Flags&(mpage.New|mpage.MapUptodate)
		if e.Flags&mpage.Boundary != 0 && m.Block+n == e.end() {
			m.Flags |= mpage.Boundary
		}
		if e.Flags&mpage.MapUptodate != 0 {
			m.Len = 1
			for j := range m.Data {
				m.Data[j] = UptodateByte
			}
		}
		s.log(m, asked)
		return nil
	}
	// A hole: up to the next extent.
	holeEnd := ^uint64(0)
	if i < len(s.extents) {
		holeEnd = s.extents[i].Start
	}
	n := min(limit, holeEnd-m.Block)
	if !m.Create {
		m.Flags, m.Len = 0, int(n)
		s.log(m, asked)
		return nil
	}
	if s.allocLeft >= 0 {
		if s.allocLeft == 0 {
			m.Flags, m.Len = 0, 1
			s.calls = append(s.calls, MapCall{Block: m.Block, Asked: asked, Create: true, Err: syscall.ENOSPC})
			return syscall.ENOSPC
		}
		n = min(n, uint64(s.allocLeft))
		s.allocLeft -= int64(n)
	}
	e := Extent{Start: m.Block, N: n, PBlock: s.allocNext}
	s.allocNext += n
	s.extents = slices.Insert(s.extents, i, e)
	m.PBlock, m.Len, m.Flags = e.PBlock, int(n), mpage.Mapped|mpage.New
	s.log(m, asked)
	return nil
}

// find returns the extent holding b (found) or the index of the first
// extent after b.
func (s *ScriptedMapper) find(b uint64) (int, bool) {
	i, _ := slices.BinarySearchFunc(s.extents, b, func(e Extent, b uint64) int {
		switch {
		case e.end() <= b:
			return -1
		case e.Start > b:
			return 1
		}
		return 0
	})
	return i, i < len(s.extents) && s.extents[i].Start <= b && b < s.extents[i].end()
}

func (s *ScriptedMapper) log(m *mpage.BlockMap, asked int) {
	s.calls = append(s.calls, MapCall{Block: m.Block, Asked: asked, Create: m.Create, Flags: m.Flags, PBlock: m.PBlock, Len: m.Len})
}

func (s *ScriptedMapper) logErr(m *mpage.BlockMap, asked int, err error) error {
	s.mu.Lock()
	s.calls = append(s.calls, MapCall{Block: m.Block, Asked: asked, Create: m.Create, Err: err})
	s.mu.Unlock()
	m.Flags, m.Len = 0, 1
	return err
}

// ForgetBlock implements mpage.BlockForgetter: it logs pblock.
func (s *ScriptedMapper) ForgetBlock(pblock uint64) {
	s.mu.Lock()
	s.forgotten = append(s.forgotten, pblock)
	s.mu.Unlock()
}

// WriteBoundary implements mpage.BoundaryWriter: it logs pblock. (The
// engine writes the block after it through the file mapping's Meta.)
func (s *ScriptedMapper) WriteBoundary(pblock uint64) {
	s.mu.Lock()
	s.boundary = append(s.boundary, pblock)
	s.mu.Unlock()
}

// Calls returns the MapBlocks calls since the last ResetLog.
func (s *ScriptedMapper) Calls() []MapCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Forgotten returns the ForgetBlock arguments since the last ResetLog.
func (s *ScriptedMapper) Forgotten() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.forgotten)
}

// BoundaryWrites returns the WriteBoundary arguments since the last
// ResetLog.
func (s *ScriptedMapper) BoundaryWrites() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.boundary)
}

// ResetLog clears the call, forget and boundary logs.
func (s *ScriptedMapper) ResetLog() {
	s.mu.Lock()
	s.calls, s.forgotten, s.boundary = nil, nil, nil
	s.mu.Unlock()
}

// Punch unmaps every file block at or past from (what a file system's
// truncate does after the page cache's): those blocks read as holes again
// and create allocates them anew.
func (s *ScriptedMapper) Punch(from uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.extents[:0]
	for _, e := range s.extents {
		switch {
		case e.end() <= from:
			out = append(out, e)
		case e.Start < from:
			e.N = from - e.Start
			e.Flags &^= mpage.Boundary
			out = append(out, e)
		}
	}
	s.extents = out
}

// Extents returns the current extents (scripted plus allocated).
func (s *ScriptedMapper) Extents() []Extent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.extents)
}

var (
	_ mpage.BlockMapper    = (*ScriptedMapper)(nil)
	_ mpage.BlockForgetter = (*ScriptedMapper)(nil)
	_ mpage.BoundaryWriter = (*ScriptedMapper)(nil)
)
