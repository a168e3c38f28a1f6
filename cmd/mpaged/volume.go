package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"sync"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
)

// volumeFlags are the flags of the commands that run the engine on a
// volume in-process (ls, cat, put, mkdir, rm).
type volumeFlags struct {
	volume string
	ring   string
	cache  string
	stats  bool
	force  bool // write commands only
}

func (vf *volumeFlags) register(fs *flag.FlagSet, writes bool) {
	fs.StringVar(&vf.volume, "volume", "", "ext2/3/4 image file or block device (required)")
	fs.StringVar(&vf.ring, "ring", "", "ring backend: native, iouring-go or sync (default: sync for a device without nonblocking I/O such as zram, else native, else sync)")
	fs.StringVar(&vf.cache, "cache", "64MiB", "page cache size")
	fs.BoolVar(&vf.stats, "stats", false, "print the engine's counters to stderr at exit")
	if writes {
		fs.BoolVar(&vf.force, "force", false, "write a volume that was not cleanly unmounted (run e2fsck -p instead if you can)")
	}
}

// parseVolumeArgs parses the flags every volume command shares (wherever
// they appear) and returns them with the operands; usage is the line -h
// prints above the flags; writes adds the write commands' flags.
func parseVolumeArgs(name, usage string, writes bool, args []string, stdout io.Writer) (*volumeFlags, []string, error) {
	fs := newFlags(name, usage)
	vf := new(volumeFlags)
	vf.register(fs.FlagSet, writes)
	operands, err := fs.parse(args, stdout)
	return vf, operands, err
}

// openedVolume is an ext volume on an assembled engine.
type openedVolume struct {
	vol *ext.Volume
	eng *engine.Engine
}

// openExtVolume opens vf.volume read-only through the engine.
func openExtVolume(vf *volumeFlags, stderr io.Writer) (*openedVolume, error) {
	return openEngineVolume(vf, stderr, false)
}

// openExtVolumeRW opens vf.volume for writing; a volume the ext package
// can only read (a journal, extents, ...) is an error naming why.
func openExtVolumeRW(vf *volumeFlags, stderr io.Writer) (*openedVolume, error) {
	ov, err := openEngineVolume(vf, stderr, true)
	if err != nil {
		return nil, err
	}
	if ro, why := ov.vol.ReadOnly(); ro {
		ov.close()
		return nil, fmt.Errorf("volume %s: %w: %s", vf.volume, ext.ErrReadOnly, why)
	}
	return ov, nil
}

// engineConfig is the engine a volume command runs on.
func (vf *volumeFlags) engineConfig(write bool, logf func(string, ...any)) (engine.Config, error) {
	if vf.volume == "" {
		return engine.Config{}, fmt.Errorf("%w: --volume is required", errUsage)
	}
	cacheBytes, err := sizeFlag("cache", vf.cache, 1<<20)
	if err != nil {
		return engine.Config{}, err
	}
	return engine.Config{Path: vf.volume, Write: write, Backend: vf.ring, CacheBytes: cacheBytes, Logf: logf}, nil
}

func openEngineVolume(vf *volumeFlags, stderr io.Writer, write bool) (_ *openedVolume, err error) {
	logger := log.New(stderr, "mpaged: ", 0)
	cfg, err := vf.engineConfig(write, logger.Printf)
	if err != nil {
		return nil, err
	}
	ov := &openedVolume{}
	defer func() {
		if err != nil {
			ov.close()
		}
	}()
	if ov.eng, err = engine.Open(cfg); err != nil {
		if errors.Is(err, engine.ErrBackend) || errors.Is(err, engine.ErrConfig) {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		return nil, err
	}
	e := ov.eng
	// The volume's notices wait until it is known to be usable: a
	// writer refused a read-only volume gets one line saying why, not the
	// notice as well.
	notes := &heldLog{out: logger}
	ov.vol, err = openExtOn(e, vf.volume, write, vf.force, notes.Printf)
	if errors.Is(err, ext.ErrUnclean) {
		return nil, fmt.Errorf("%w; check it with e2fsck -p first, or pass --force to write it anyway", err)
	}
	if err != nil {
		return nil, err
	}
	ro, _ := ov.vol.ReadOnly()
	notes.release(!(write && ro))
	return ov, nil
}

// openExtOn opens the ext volume on an assembled engine (for writing, or
// read-only), its errors naming the volume's path.
func openExtOn(e *engine.Engine, path string, write, allowUnclean bool, logf func(string, ...any)) (*ext.Volume, error) {
	cfg := ext.Config{Device: e.Device, Cache: e.Cache, DeviceSize: e.Info.Size, SectorSize: e.Info.SectorSize,
		ReadOnly: !write, AllowUnclean: allowUnclean, Logf: logf}
	if !write {
		// A journal that needs recovery is shown replayed, the device
		// untouched.
		cfg.ShowRecovered = e.ShowRecovered
	}
	vol, err := ext.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", path, err)
	}
	return vol, nil
}

// heldLog holds log lines until release, which prints them (or drops
// them) and lets later lines through.
type heldLog struct {
	mu       sync.Mutex
	out      *log.Logger
	held     []string
	released bool
}

func (h *heldLog) Printf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		h.out.Printf(format, args...)
		return
	}
	h.held = append(h.held, fmt.Sprintf(format, args...))
}

func (h *heldLog) release(print bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if print {
		for _, l := range h.held {
			h.out.Print(l)
		}
	}
	h.held, h.released = nil, true
}

// close takes down the volume, then the engine under it.
func (ov *openedVolume) close() error {
	var errs []error
	if ov.vol != nil {
		errs = append(errs, ov.vol.Close())
	}
	if ov.eng != nil {
		errs = append(errs, ov.eng.Close())
	}
	return errors.Join(errs...)
}

// finish closes the volume and, with --stats, prints the counters.
func (ov *openedVolume) finish(vf *volumeFlags, stderr io.Writer) error {
	err := ov.close()
	if vf.stats {
		ov.eng.Snapshot().WriteText(stderr)
	}
	return err
}
