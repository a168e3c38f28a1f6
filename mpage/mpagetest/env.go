package mpagetest

import (
	"testing"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/mpage"
)

// EnvConfig configures NewEnvWith. Zero fields take defaults.
type EnvConfig struct {
	BlockSize  int   // default 4096
	DiskBytes  int64 // default 16 MiB
	CacheBytes int64 // default 16 MiB
	// Disk, if set, is the device (DiskBytes is then len(Disk)) and is
	// left as it is; otherwise a new disk is filled with Pattern.
	Disk []byte
	// NoPattern leaves a new disk zeroed.
	NoPattern bool
	// Script is the ScriptedMapper's script; Mapper, if set, replaces the
	// ScriptedMapper as the file's mapper.
	Script string
	Mapper mpage.BlockMapper
	// Size is the file's initial i_size.
	Size int64

	MaxBioVecs      int
	CongestionDepth int
	Bios            alloc.BioSetConfig
	DirtyRatio      float64
	Entries         int  // Recorder ring size (default 64)
	NoRecord        bool // Recorder does not record (benchmarks)
}

// Env is an engine (package engine: frames, page cache, device) over a
// Recorder, a file Mapping over a ScriptedMapper, and a metadata Mapping
// (a LinearMapper over the whole device, no readahead) through which the
// mapper reads indirect blocks. The metadata Mapping is the file Mapping's
// Meta: the engine forgets New blocks there and writes the block after a
// boundary from it.
type Env struct {
	T         testing.TB
	BlockSize int
	Engine    *engine.Engine
	Pool      *alloc.FramePool
	Cache     *mpage.Cache
	Stats     *mpage.Stats
	Ring      *Recorder
	Dev       *mpage.Device
	Mapper    *ScriptedMapper
	Mapping   *mpage.Mapping
	Meta      *mpage.Mapping
}

// Pattern is the byte a new Env disk holds at offset off: the number of the
// device block (of blockSize bytes) it lies in, so a page's content names
// the blocks it was read from.
func Pattern(off int64, blockSize int) byte { return byte(off / int64(blockSize)) }

// NewEnv builds an Env with a disk of diskBytes filled with Pattern, a cache
// of cacheBytes, and a file of block size blockSize whose mapper is an empty
// ScriptedMapper (all holes; set a script with Env.Mapper.Load).
func NewEnv(t testing.TB, blockSize int, diskBytes, cacheBytes int64) *Env {
	return NewEnvWith(t, EnvConfig{BlockSize: blockSize, DiskBytes: diskBytes, CacheBytes: cacheBytes})
}

// NewEnvWith builds an Env from cfg. Everything is torn down when the test
// ends.
func NewEnvWith(t testing.TB, cfg EnvConfig) *Env {
	t.Helper()
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 4096
	}
	if cfg.Disk != nil {
		cfg.DiskBytes = int64(len(cfg.Disk))
	}
	if cfg.DiskBytes == 0 {
		cfg.DiskBytes = 16 << 20
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 16 << 20
	}
	disk := cfg.Disk
	if disk == nil {
		disk = make([]byte, cfg.DiskBytes)
		if !cfg.NoPattern {
			for b := int64(0); b*int64(cfg.BlockSize) < cfg.DiskBytes; b++ {
				off := b * int64(cfg.BlockSize)
				blk := disk[off:min(off+int64(cfg.BlockSize), cfg.DiskBytes)]
				for i := range blk {
					blk[i] = byte(b)
				}
			}
		}
	}
	e := &Env{T: t, BlockSize: cfg.BlockSize}
	e.Ring = NewRecorder(disk, RecorderOptions{Entries: cfg.Entries, NoRecord: cfg.NoRecord})
	var err error
	e.Engine, err = engine.Open(engine.Config{Ring: e.Ring, File: e.Ring.File(), Size: cfg.DiskBytes, Write: true,
		CacheBytes: cfg.CacheBytes, DirtyRatio: cfg.DirtyRatio, Bios: cfg.Bios,
		MaxBioVecs: cfg.MaxBioVecs, CongestionDepth: cfg.CongestionDepth, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	e.Pool, e.Cache, e.Stats, e.Dev = e.Engine.Frames, e.Engine.Cache, e.Engine.Stats, e.Engine.Device
	if e.Mapper, err = NewScriptedMapper(cfg.Script); err != nil {
		t.Fatal(err)
	}
	mapper := cfg.Mapper
	if mapper == nil {
		mapper = e.Mapper
	}
	e.Meta, err = mpage.NewMapping(mpage.MappingConfig{Device: e.Dev, Cache: e.Cache,
		Mapper:    mpage.LinearMapper{Blocks: uint64(cfg.DiskBytes) / uint64(cfg.BlockSize)},
		BlockSize: cfg.BlockSize, Size: cfg.DiskBytes, Name: "meta"})
	if err != nil {
		t.Fatal(err)
	}
	e.Meta.SetReadahead(0)
	e.Mapping, err = mpage.NewMapping(mpage.MappingConfig{Device: e.Dev, Cache: e.Cache, Mapper: mapper,
		BlockSize: cfg.BlockSize, Size: cfg.Size, Name: "file", Meta: e.Meta})
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(cfg.BlockSize)
	e.Mapper.MetaRead = func(pblock uint64) error {
		buf := make([]byte, bs)
		_, err := e.Meta.ReadAt(buf, int64(pblock)*bs)
		return err
	}
	t.Cleanup(e.close)
	return e
}

// Disk is the device's bytes. Call Ring.Drain first.
func (e *Env) Disk() []byte { return e.Ring.Disk() }

// Drain waits for every request the ring accepted (lifting a hold).
func (e *Env) Drain() { e.Ring.Drain() }

func (e *Env) close() {
	e.Ring.Drain()
	for _, m := range []*mpage.Mapping{e.Mapping, e.Meta} {
		// Truncate drops dirty pages too: the test is over.
		size := m.Size()
		if err := m.Truncate(0); err != nil {
			e.T.Errorf("mpagetest: truncate %s: %v", m.Name(), err)
		}
		m.SetSize(size)
	}
	e.Ring.Drain()
	if err := e.Engine.Close(); err != nil {
		e.T.Logf("mpagetest: engine: %v", err)
	}
}
