package jbd2

import (
	"errors"
	"fmt"
	"sort"
)

// Device is the volume the journal belongs to, addressed in file-system
// blocks (the journal's block size). Writes need not be durable before
// Flush returns.
type Device interface {
	// ReadBlock reads device block blk into b (one block).
	ReadBlock(blk uint64, b []byte) error
	// WriteBlock writes b (one block) to device block blk.
	WriteBlock(blk uint64, b []byte) error
	// Flush makes every write before it durable (a write-back and a
	// device cache flush).
	Flush() error
	// Blocks is the volume's size in blocks: no home block at or past it
	// is ever written.
	Blocks() uint64
	// BlockSize is the volume's block size in bytes; the journal's must
	// be the same.
	BlockSize() int
}

// Log maps the journal's logical blocks (0 is the journal superblock) to
// device blocks: the journal inode's block map.
type Log interface {
	// Len is the journal's length in blocks.
	Len() uint64
	// Map returns the device block of journal block lblk (< Len).
	Map(lblk uint64) (uint64, error)
}

// Extent is a run of journal blocks contiguous on the device.
type Extent struct {
	Logical  uint64 // first journal block
	Physical uint64 // its device block
	Len      uint64
}

// ExtentLog is a Log from a list of extents (the journal inode's block
// map, collected once: the journal never moves while it is in use).
type ExtentLog struct {
	exts []Extent // sorted by Logical, not overlapping
	n    uint64
}

// errLogHole is a journal block with no device block behind it.
var errLogHole = errors.New("hole in the journal")

// NewExtentLog checks exts (sorted or not) and returns the Log they make.
// The journal must be mapped without holes from block 0 to its end.
func NewExtentLog(exts []Extent) (*ExtentLog, error) {
	e := append([]Extent(nil), exts...)
	sort.Slice(e, func(i, j int) bool { return e[i].Logical < e[j].Logical })
	var next uint64
	for _, x := range e {
		if x.Logical != next || x.Len == 0 {
			return nil, fmt.Errorf("%w: journal block map: %v at block %d", ErrCorrupt, errLogHole, next)
		}
		next += x.Len
	}
	return &ExtentLog{exts: e, n: next}, nil
}

// Len implements Log.
func (l *ExtentLog) Len() uint64 { return l.n }

// Map implements Log.
func (l *ExtentLog) Map(lblk uint64) (uint64, error) {
	i := sort.Search(len(l.exts), func(i int) bool { return l.exts[i].Logical+l.exts[i].Len > lblk })
	if i == len(l.exts) || l.exts[i].Logical > lblk {
		return 0, fmt.Errorf("%w: journal block %d past the journal's %d blocks", ErrCorrupt, lblk, l.n)
	}
	return l.exts[i].Physical + lblk - l.exts[i].Logical, nil
}

// Extents returns the extents (sorted).
func (l *ExtentLog) Extents() []Extent { return append([]Extent(nil), l.exts...) }

// logIO reads and writes journal blocks through a Log.
type logIO struct {
	dev Device
	log Log
	bs  int
}

func newLogIO(dev Device, log Log) *logIO { return &logIO{dev: dev, log: log, bs: dev.BlockSize()} }

func (io *logIO) read(lblk uint32, b []byte) error {
	pblk, err := io.log.Map(uint64(lblk))
	if err != nil {
		return err
	}
	if err := io.dev.ReadBlock(pblk, b[:io.bs]); err != nil {
		return fmt.Errorf("jbd2: read journal block %d (device block %d): %w", lblk, pblk, err)
	}
	return nil
}

func (io *logIO) write(lblk uint32, b []byte) error {
	pblk, err := io.log.Map(uint64(lblk))
	if err != nil {
		return err
	}
	if err := io.dev.WriteBlock(pblk, b[:io.bs]); err != nil {
		return fmt.Errorf("jbd2: write journal block %d (device block %d): %w", lblk, pblk, err)
	}
	return nil
}

// loadSuperblock reads and checks the journal superblock and that the
// journal fits its Log and the device's block size.
func loadSuperblock(io *logIO) (*Superblock, error) {
	if io.log.Len() == 0 {
		return nil, fmt.Errorf("%w: empty journal", ErrCorrupt)
	}
	buf := make([]byte, max(io.bs, SuperblockSize))
	if err := io.read(0, buf); err != nil {
		return nil, err
	}
	sb, err := ParseSuperblock(buf)
	if err != nil {
		return nil, err
	}
	if int(sb.BlockSize) != io.bs {
		return nil, fmt.Errorf("%w: journal blocks of %d bytes on a volume of %d-byte blocks", ErrUnsupported, sb.BlockSize, io.bs)
	}
	if uint64(sb.MaxLen) > io.log.Len() {
		return nil, fmt.Errorf("%w: superblock: %d blocks in a journal of %d", ErrCorrupt, sb.MaxLen, io.log.Len())
	}
	return sb, nil
}

// writeSuperblock writes sb (as Encode makes it) to journal block 0, the
// rest of the block as it was read.
func writeSuperblock(io *logIO, sb *Superblock) error {
	buf := make([]byte, io.bs)
	if err := io.read(0, buf); err != nil {
		return err
	}
	copy(buf, sb.Encode())
	return io.write(0, buf)
}
