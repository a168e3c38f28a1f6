package mpage

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
