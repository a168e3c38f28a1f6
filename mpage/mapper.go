package mpage

import "fmt"

// MapFlags describe a block mapping, as buffer-head state bits do in the
// seeds.
type MapFlags uint8

const (
	// Mapped: the blocks have device addresses. Without it the range is a
	// hole (reads see zeroes).
	Mapped MapFlags = 1 << iota
	// New: the blocks were just allocated (create). Anything cached for
	// those device blocks is stale, and parts of the page the caller does
	// not write must be zeroed rather than read.
	New
	// Boundary: mapping the block after this run needs metadata I/O near
	// it (an indirect block). Push the pending Bio before asking.
	Boundary
	// MapUptodate: the mapper filled the block's bytes into BlockMap.Data
	// itself (inline data); no device read is needed.
	MapUptodate
)

func (f MapFlags) String() string {
	s := ""
	for _, n := range []struct {
		f    MapFlags
		name string
	}{{Mapped, "mapped"}, {New, "new"}, {Boundary, "boundary"}, {MapUptodate, "uptodate"}} {
		if f&n.f != 0 {
			if s != "" {
				s += ","
			}
			s += n.name
		}
	}
	if s == "" {
		return "hole"
	}
	return s
}

// BlockMap is one question to a BlockMapper and its answer: the seeds'
// buffer head used as a get_block argument, with b_size as Len so one call
// can map a whole run.
type BlockMap struct {
	// In: the first file block, how many blocks the caller can use (at
	// least 1), and whether to allocate holes.
	Block  uint64
	Len    int
	Create bool
	// In: Data is the block's bytes in the page being read, for a mapper
	// that answers MapUptodate.
	Data []byte

	// Out: Flags; PBlock, the device block of Block when Mapped; Len, the
	// number of blocks from Block the answer covers (mapped contiguously
	// on the device from PBlock, or a hole of that length). Len stays at
	// least 1 and at most what was asked.
	Flags  MapFlags
	PBlock uint64
}

// BlockMapper maps file blocks to device blocks: the file system's
// get_block. MapBlocks may do I/O (indirect and extent blocks) through the
// volume's metadata mapping; it must not be called with a page lock held on
// a page of that metadata mapping. Create asks it to allocate holes (write
// path); it then returns at most the blocks it allocated or found mapped.
type BlockMapper interface {
	MapBlocks(m *BlockMap) error
}

// MapError is a BlockMapper's failure, with what it was asked. It travels
// with the page whose read or write asked: a read that fails because of it
// reports it (wrapped with syscall.EIO) to that page's readers only, and a
// write reports it from WritePages and, until the page is written, from Err
// and WriteAndWait. errors.Is and errors.As see the mapper's own error
// through it.
type MapError struct {
	Mapping string // the mapping's Name
	Block   uint64 // the file block asked for
	Create  bool   // the write path's allocating call
	Err     error  // the mapper's error, or ErrUnmapped
}

func (e *MapError) Error() string {
	op := "map"
	if e.Create {
		op = "allocate"
	}
	return fmt.Sprintf("mpage: %s: %s block %d: %v", e.Mapping, op, e.Block, e.Err)
}

func (e *MapError) Unwrap() error { return e.Err }

// mapBlocks asks the mapper, counting the call, and turns a failure (or an
// unmapped answer to Create) into a MapError; nil when the answer stands.
func (m *Mapping) mapBlocks(bm *BlockMap) *MapError {
	dir := Read
	if bm.Create {
		dir = Write
	}
	m.dev.stats.MapCalls[dir].Add(1)
	err := m.mapper.MapBlocks(bm)
	if err == nil && bm.Create && bm.Flags&Mapped == 0 {
		err = ErrUnmapped
	}
	if err != nil {
		return &MapError{Mapping: m.name, Block: bm.Block, Create: bm.Create, Err: err}
	}
	return nil
}

// LinearMapper maps file block n to device block Start+n, for Blocks
// blocks: the whole-device mapping that metadata and raw volumes use.
type LinearMapper struct {
	Start  uint64
	Blocks uint64 // 0: no end
}

// MapBlocks implements BlockMapper.
func (l LinearMapper) MapBlocks(m *BlockMap) error {
	if l.Blocks != 0 && m.Block >= l.Blocks {
		m.Flags, m.Len = 0, max(m.Len, 1)
		return ErrRange
	}
	m.Flags = Mapped
	m.PBlock = l.Start + m.Block
	if l.Blocks != 0 && uint64(m.Len) > l.Blocks-m.Block {
		m.Len = int(l.Blocks - m.Block)
	}
	if m.Len < 1 {
		m.Len = 1
	}
	return nil
}
