package engine

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/overlayring"
)

// The layers agree on what a page and a Bio are: a change to one of these
// constants without the others stops the build here (a negative constant
// converted to uint does not compile).
const (
	_ = uint(alloc.PageSize - mpage.PageSize)
	_ = uint(mpage.PageSize - alloc.PageSize)
	_ = uint(alloc.MaxVecs - uring.MaxVecs)
	_ = uint(uring.MaxVecs - alloc.MaxVecs)
)

// Config describes the stack to assemble. Zero fields take defaults.
type Config struct {
	// Path is the image file or block device, opened with OpenDevice.
	Path string
	// Write opens the volume for writing, exclusively.
	Write bool
	// NoDirect opens without O_DIRECT.
	NoDirect bool
	// LockWait: see OpenOptions.
	LockWait time.Duration

	// Ring and File, instead of Path, are a ring the caller made (a
	// recording ring in tests) and the device on it; Size is then the
	// device's size. The Engine owns Ring from here on and closes it.
	Ring uring.Ring
	File uring.File
	Size int64

	// Backend names the ring backend ("" picks by the volume: the sync
	// ring for a device without nonblocking I/O such as zram, else native
	// with a sync fallback; see uring.OpenFor;
	// "native", "sync", BackendIouringGo); RingEntries its queue size
	// (default 128). Timing stamps every request (latency metrics).
	Backend     string
	RingEntries int
	Timing      bool
	// WrapRing, if set, wraps the ring before anything is registered with
	// it (a fault-injecting ring for drills).
	WrapRing func(uring.Ring) uring.Ring

	// CacheBytes is the page cache's limit (default 64 MiB); DirtyRatio
	// its share that may be dirty (mpage's default when zero).
	CacheBytes int64
	DirtyRatio float64
	// Bios, MaxBioVecs and CongestionDepth configure the mpage.Device.
	Bios            alloc.BioSetConfig
	MaxBioVecs      int
	CongestionDepth int

	// Logf receives notices: ring fallbacks, frame pool growth, warnings
	// about other users of the volume. Nil drops them.
	Logf func(format string, args ...any)
}

// Engine is an assembled stack. Its fields are valid until Close.
type Engine struct {
	Info   DeviceInfo
	Ring   uring.Ring
	Frames *alloc.FramePool
	Cache  *mpage.Cache
	Device *mpage.Device
	Stats  *mpage.Stats

	file *os.File // nil when the caller gave Ring and File
	// overlay wraps the ring of a read-only engine (ShowRecovered).
	overlay *overlayring.Ring
	handle  uring.File
	owned   bool // handle was registered here
	closed  bool
}

// DefaultCacheBytes is the page cache's size when Config leaves it zero.
const DefaultCacheBytes = 64 << 20

// minCacheBytes is the smallest cache: 16 pages (tests use tiny caches to
// force eviction; the CLI asks for more).
const minCacheBytes = 16 * mpage.PageSize

// FrameBytes is the frame memory a cache of cacheBytes gets: the cache
// plus headroom for pages held past its limit for a moment (a readahead
// window filled before eviction catches up, Bios in flight), rounded up
// to whole arenas.
func FrameBytes(cacheBytes int64) int64 {
	n := cacheBytes + max(cacheBytes/4, 8<<20)
	a := int64(ArenaBytes(cacheBytes))
	return (n + a - 1) / a * a
}

// ArenaBytes is the arena size for a cache of cacheBytes: 4 MiB, or larger
// so that a big cache needs at most 32 arenas (each arena is one
// registered buffer, and the ring's buffer table is small).
func ArenaBytes(cacheBytes int64) int {
	a := int64(4 << 20)
	for (cacheBytes+a-1)/a > 32 && a < 1<<30 {
		a <<= 1
	}
	return int(a)
}

// Open assembles the stack: the volume (or the ring the caller gave), a
// ring with the device registered, a frame pool registered with the ring,
// the cache and the mpage.Device. On error everything made is taken down.
func Open(cfg Config) (_ *Engine, err error) {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cacheBytes := cfg.CacheBytes
	if cacheBytes == 0 {
		cacheBytes = DefaultCacheBytes
	}
	if cacheBytes < minCacheBytes {
		return nil, fmt.Errorf("%w: cache of %d bytes: want at least %d", ErrConfig, cacheBytes, minCacheBytes)
	}
	e := &Engine{Stats: new(mpage.Stats)}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := e.openRing(cfg, logf); err != nil {
		return nil, err
	}
	ring := e.Ring
	e.Frames, err = alloc.NewFramePool(alloc.PoolConfig{
		ArenaBytes: ArenaBytes(cacheBytes),
		MaxBytes:   FrameBytes(cacheBytes),
		OnArena: func(i int, mem []byte) error {
			// Rings without fixed buffers say so; the frames still
			// work for plain vectored I/O.
			if err := ring.RegisterBuffer(i, mem); err != nil && !errors.Is(err, uring.ErrNotSupported) {
				return err
			}
			return nil
		},
		Logf: logf,
	})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.Cache, err = mpage.NewCache(mpage.CacheConfig{Frames: e.Frames, LimitBytes: cacheBytes, DirtyRatio: cfg.DirtyRatio, Stats: e.Stats})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.Device, err = mpage.NewDevice(mpage.DeviceConfig{Ring: ring, File: e.handle, Bios: cfg.Bios,
		MaxBioVecs: cfg.MaxBioVecs, CongestionDepth: cfg.CongestionDepth, Stats: e.Stats, Frames: e.Frames})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return e, nil
}

// openRing opens the volume and a ring and registers the one with the
// other, or takes the ring and device the caller made.
func (e *Engine) openRing(cfg Config, logf func(string, ...any)) error {
	if cfg.Ring != nil {
		if cfg.Path != "" || !cfg.File.Valid() {
			return fmt.Errorf("%w: a Ring needs its File and no Path", ErrConfig)
		}
		e.Ring, e.handle = cfg.Ring, cfg.File
		e.wrapRing(cfg)
		e.Info = DeviceInfo{Path: "(ring)", Size: cfg.Size, SectorSize: 512, Writable: cfg.Write}
		return nil
	}
	if cfg.Path == "" {
		return fmt.Errorf("%w: no volume path", ErrConfig)
	}
	var err error
	e.file, e.Info, err = OpenDevice(cfg.Path, OpenOptions{Write: cfg.Write, NoDirect: cfg.NoDirect, LockWait: cfg.LockWait, Logf: logf})
	if err != nil {
		return err
	}
	entries := cfg.RingEntries
	if entries == 0 {
		entries = 128
	}
	if e.Ring, err = openRingFor(cfg.Backend, int(e.file.Fd()), uring.Options{Entries: entries, Timing: cfg.Timing, Logf: logf}); err != nil {
		return err
	}
	e.wrapRing(cfg)
	if e.handle, err = e.Ring.RegisterFile(int(e.file.Fd())); err != nil {
		return fmt.Errorf("volume %s: register with the ring: %w", cfg.Path, err)
	}
	e.owned = true
	return nil
}

// wrapRing puts the caller's wrapper (WrapRing) around the ring, and, on
// a read-only engine, the overlay ring around that: transparent until
// ShowRecovered, and a read it does not touch costs a range check.
func (e *Engine) wrapRing(cfg Config) {
	if cfg.WrapRing != nil {
		e.Ring = cfg.WrapRing(e.Ring)
	}
	if !cfg.Write {
		e.overlay = overlayring.New(e.Ring)
		e.Ring = e.overlay
	}
}

// ShowRecovered lays r, what replay of the volume's journal would write
// (jbd2.Scan), over every later read of the volume, under the cache, so
// every mapping sees the recovered blocks however often its pages are
// evicted and read again; the device is never written (writes through the
// ring are refused, EROFS). It is ext.Config.ShowRecovered for a
// read-only open on this engine, and must run before anything of the
// volume that r changes is cached (ext.Open calls it before it reads
// anything but the journal, through mappings it has closed). Only a
// read-only engine can, and only once.
func (e *Engine) ShowRecovered(r *jbd2.Replay) error {
	if e.overlay == nil {
		return fmt.Errorf("%w: a recovered view needs a read-only engine", ErrConfig)
	}
	blocks := make([]overlayring.Block, len(r.Homes))
	for i, h := range r.Homes {
		blocks[i] = overlayring.Block{Num: h.Home, Data: h.Data}
	}
	ov, err := overlayring.NewOverlay(r.BlockSize, blocks)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := e.overlay.Show(e.handle, ov); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	return nil
}

// Close takes the stack down after its users are closed: the ring drains
// and closes, then the frame pool and the volume (which releases its
// lock). Snapshot still reads the final counters afterwards. Calls after
// the first do nothing.
func (e *Engine) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	if e.Ring != nil {
		if e.owned {
			errs = append(errs, e.Ring.UnregisterFile(e.handle))
		}
		errs = append(errs, e.Ring.Close())
	}
	if e.Frames != nil {
		errs = append(errs, e.Frames.Close())
	}
	if e.file != nil {
		errs = append(errs, e.file.Close())
	}
	return errors.Join(errs...)
}
