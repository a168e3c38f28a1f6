package raw

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mpaged/mpaged/mpage"
)

// Config opens a raw volume.
type Config struct {
	// Device and Cache are the engine under the volume; the caller
	// assembled them and closes them after the volume.
	Device *mpage.Device
	Cache  *mpage.Cache
	// Size is the device's size in bytes, a whole number of BlockSize.
	Size int64
	// BlockSize is the mapping's block size: 512, 1024, 2048 or 4096
	// (default 4096). It must be at least the device's logical block size
	// when the device is open with O_DIRECT.
	BlockSize int
	// Name labels errors (default "raw").
	Name string
}

// Volume is a device as one file. Its methods are safe for concurrent use.
type Volume struct {
	cfg    Config
	file   *File
	closed atomic.Bool
	// closeMu makes Close run once; I/O does not take it.
	closeMu sync.Mutex
}

// File is the volume's one file: the whole device.
type File struct {
	v *Volume
	m *mpage.Mapping
}

// Open checks cfg and builds the volume's mapping: a LinearMapper over
// Size/BlockSize blocks, i_size Size.
func Open(cfg Config) (*Volume, error) {
	if cfg.Device == nil || cfg.Cache == nil {
		return nil, fmt.Errorf("%w: needs a Device and a Cache", ErrConfig)
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = mpage.PageSize
	}
	if cfg.Name == "" {
		cfg.Name = "raw"
	}
	switch cfg.BlockSize {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("%w: block size %d not in 512..4096", ErrConfig, cfg.BlockSize)
	}
	if cfg.Size <= 0 || cfg.Size%int64(cfg.BlockSize) != 0 {
		return nil, fmt.Errorf("%w: size %d is not a positive multiple of the %d-byte block", ErrConfig, cfg.Size, cfg.BlockSize)
	}
	m, err := mpage.NewMapping(mpage.MappingConfig{
		Device: cfg.Device, Cache: cfg.Cache,
		Mapper:    mpage.LinearMapper{Blocks: uint64(cfg.Size / int64(cfg.BlockSize))},
		BlockSize: cfg.BlockSize, Size: cfg.Size, Name: cfg.Name,
	})
	if err != nil {
		return nil, fmt.Errorf("raw: open %s: %w", cfg.Name, err)
	}
	v := &Volume{cfg: cfg}
	v.file = &File{v: v, m: m}
	return v, nil
}

// File is the volume's file.
func (v *Volume) File() *File { return v.file }

// Size is the device's size in bytes.
func (v *Volume) Size() int64 { return v.cfg.Size }

// BlockSize is the mapping's block size.
func (v *Volume) BlockSize() int { return v.cfg.BlockSize }

// Close writes back what is dirty, waits for it, and drops the mapping's
// pages. The Device and Cache stay the caller's. I/O must have stopped;
// later calls fail with ErrClosed.
func (v *Volume) Close() error {
	v.closeMu.Lock()
	defer v.closeMu.Unlock()
	if v.closed.Load() {
		return nil
	}
	werr := v.file.m.WriteAndWait(0, -1)
	v.closed.Store(true)
	cerr := v.file.m.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("raw: close %s: %w", v.cfg.Name, err)
	}
	return nil
}

func (v *Volume) checkOpen() error {
	if v.closed.Load() {
		return fmt.Errorf("raw: %s: %w", v.cfg.Name, ErrClosed)
	}
	return nil
}

// ReadAt reads through the page cache (readahead on misses); io.EOF past
// the end of the device.
func (f *File) ReadAt(b []byte, off int64) (int, error) {
	if err := f.v.checkOpen(); err != nil {
		return 0, err
	}
	return f.m.ReadAt(b, off)
}

// WriteAt copies b into the page cache at off; the bytes reach the device
// on writeback (the cache's dirty limit, or Sync). A write reaching past the
// device is refused whole with ErrRange: the file cannot grow.
func (f *File) WriteAt(b []byte, off int64) (int, error) {
	if err := f.v.checkOpen(); err != nil {
		return 0, err
	}
	if off < 0 || off > f.v.cfg.Size || int64(len(b)) > f.v.cfg.Size-off {
		return 0, fmt.Errorf("%w: write of %d bytes at %d on the %d-byte %s", ErrRange, len(b), off, f.v.cfg.Size, f.v.cfg.Name)
	}
	return f.m.WriteAt(b, off)
}

// Sync writes every dirty page, waits for the writes, reports the
// mapping's write error, and flushes the device so the data is durable.
func (f *File) Sync() error {
	if err := f.v.checkOpen(); err != nil {
		return err
	}
	if err := f.m.WriteAndWait(0, -1); err != nil {
		return fmt.Errorf("raw: sync %s: %w", f.v.cfg.Name, err)
	}
	if err := f.m.Device().Flush(); err != nil {
		return fmt.Errorf("raw: sync %s: %w", f.v.cfg.Name, err)
	}
	return nil
}

// DropCache writes back what is dirty and drops every cached page of the
// file, so the next read of any byte goes to the device: a cold start
// without reopening the engine. No I/O on the file may run meanwhile (the
// size reads as 0 for a moment).
func (f *File) DropCache() error {
	if err := f.v.checkOpen(); err != nil {
		return err
	}
	if err := f.m.WriteAndWait(0, -1); err != nil {
		return fmt.Errorf("raw: drop cache of %s: %w", f.v.cfg.Name, err)
	}
	// Truncate to 0 drops every page (none is dirty now); the blocks are
	// the device's and stay where they are.
	if err := f.m.Truncate(0); err != nil {
		return fmt.Errorf("raw: drop cache of %s: %w", f.v.cfg.Name, err)
	}
	f.m.SetSize(f.v.cfg.Size)
	return nil
}

// Size is the file's (the device's) size.
func (f *File) Size() int64 { return f.v.cfg.Size }

// Mapping is the file's page cache, for ReadPages and WritePages.
func (f *File) Mapping() *mpage.Mapping { return f.m }
