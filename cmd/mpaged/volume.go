package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// volumeFlags are the flags of the commands that run the engine on a
// volume in-process (ls, cat, put, mkdir, rm).
type volumeFlags struct {
	volume string
	ring   string
	cache  string
	stats  bool
}

func (vf *volumeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&vf.volume, "volume", "", "ext2/3/4 image file or block device (required)")
	fs.StringVar(&vf.ring, "ring", "", "ring backend: native, iouring-go or sync (default: native, else sync)")
	fs.StringVar(&vf.cache, "cache", "64MiB", "page cache size")
	fs.BoolVar(&vf.stats, "stats", false, "print the engine's counters to stderr at exit")
}

// parseVolumeArgs parses the flags every volume command shares (wherever
// they appear) and returns them with the operands; usage is the line -h
// prints above the flags.
func parseVolumeArgs(name, usage string, args []string, stderr io.Writer) (*volumeFlags, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	vf := new(volumeFlags)
	vf.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: "+usage)
		fs.PrintDefaults()
	}
	operands, err := parseArgs(fs, args)
	return vf, operands, err
}

// parseArgs parses flags wherever they appear among the arguments (Go's
// flag package stops at the first operand; "ls /dir --stats" should work)
// and returns the operands.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return operands, nil
		}
		if args[0] == "--" {
			return append(operands, args[1:]...), nil
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
}

// openedVolume is an ext volume on the engine and everything under it, in
// the order Close takes it down.
type openedVolume struct {
	vol    *ext.Volume
	stats  *mpage.Stats
	ring   uring.Ring
	handle uring.File
	pool   *alloc.FramePool
	file   *os.File
	direct bool
}

// openExtVolume opens vf.volume read-only: the file or device (O_DIRECT
// when it allows), a ring (vf.ring; "" is native with a fallback to sync),
// a frame pool whose arenas are registered with the ring as fixed buffers,
// the engine's device and cache, and the ext volume on them.
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

func openEngineVolume(vf *volumeFlags, stderr io.Writer, write bool) (_ *openedVolume, err error) {
	if vf.volume == "" {
		return nil, fmt.Errorf("%w: --volume is required", errUsage)
	}
	cacheBytes, err := humanize.ParseBytes(vf.cache)
	if err != nil || cacheBytes < 1<<20 {
		return nil, fmt.Errorf("%w: --cache %q: want a size of at least 1MiB", errUsage, vf.cache)
	}
	logger := log.New(stderr, "mpaged: ", 0)
	ov := &openedVolume{}
	defer func() {
		if err != nil {
			ov.close()
		}
	}()
	if ov.file, ov.direct, err = openDevice(vf.volume, write); err != nil {
		return nil, err
	}
	size, err := ov.file.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("volume %s: size: %w", vf.volume, err)
	}
	if ov.ring, err = openRing(vf.ring, uring.Options{Entries: 64, Logf: logger.Printf}, stderr); err != nil {
		return nil, err
	}
	ring := ov.ring
	ov.pool, err = alloc.NewFramePool(alloc.PoolConfig{
		ArenaBytes: 4 << 20,
		// Readahead and Bios in flight may hold pages past the cache's
		// limit for a moment.
		MaxBytes: int64(cacheBytes+16<<20) &^ (4<<20 - 1),
		OnArena: func(i int, mem []byte) error {
			if err := ring.RegisterBuffer(i, mem); err != nil && !errors.Is(err, uring.ErrNotSupported) {
				return err
			}
			return nil
		},
		Logf: logger.Printf,
	})
	if err != nil {
		return nil, err
	}
	if ov.handle, err = ring.RegisterFile(int(ov.file.Fd())); err != nil {
		return nil, fmt.Errorf("volume %s: %w", vf.volume, err)
	}
	ov.stats = new(mpage.Stats)
	cache, err := mpage.NewCache(mpage.CacheConfig{Frames: ov.pool, LimitBytes: int64(cacheBytes), Stats: ov.stats})
	if err != nil {
		return nil, err
	}
	dev, err := mpage.NewDevice(mpage.DeviceConfig{Ring: ring, File: ov.handle, Stats: ov.stats, Frames: ov.pool})
	if err != nil {
		return nil, err
	}
	// The volume's notices wait until it is known to be usable: a
	// writer refused a read-only volume gets one line saying why, not the
	// notice as well.
	notes := &heldLog{out: logger}
	ov.vol, err = ext.Open(ext.Config{Device: dev, Cache: cache, DeviceSize: size, ReadOnly: !write, Logf: notes.Printf})
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", vf.volume, err)
	}
	ro, _ := ov.vol.ReadOnly()
	notes.release(!(write && ro))
	return ov, nil
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

// openDevice opens an image file or block device for reading (and, with
// write, writing), with O_DIRECT where the file system (or device) takes
// it. A device whose logical blocks are larger than 1 KiB cannot serve
// 1 KiB-aligned direct I/O, so it is opened buffered.
func openDevice(path string, write bool) (*os.File, bool, error) {
	mode := os.O_RDONLY
	if write {
		mode = os.O_RDWR
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("volume: %w", err)
	}
	switch {
	case st.IsDir():
		return nil, false, fmt.Errorf("volume %s: is a directory, not an image file or block device", path)
	case !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0:
		return nil, false, fmt.Errorf("volume %s: not an image file or block device (mode %v)", path, st.Mode())
	}
	direct := true
	if st.Mode()&os.ModeDevice != 0 {
		if f, err := os.Open(path); err == nil {
			if ssz, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ssz > 1024 {
				direct = false
			}
			f.Close()
		}
	}
	if direct {
		f, err := os.OpenFile(path, mode|syscall.O_DIRECT, 0)
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, syscall.EINVAL) {
			return nil, false, fmt.Errorf("volume: %w", err)
		}
	}
	f, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return nil, false, fmt.Errorf("volume: %w", err)
	}
	return f, false, nil
}

// close takes down whatever was opened, volume first.
func (ov *openedVolume) close() error {
	var errs []error
	if ov.vol != nil {
		errs = append(errs, ov.vol.Close())
	}
	if ov.ring != nil {
		if ov.handle.Valid() {
			errs = append(errs, ov.ring.UnregisterFile(ov.handle))
		}
		errs = append(errs, ov.ring.Close())
	}
	if ov.pool != nil {
		errs = append(errs, ov.pool.Close())
	}
	if ov.file != nil {
		errs = append(errs, ov.file.Close())
	}
	return errors.Join(errs...)
}

// finish closes the volume and, with --stats, prints the counters.
func (ov *openedVolume) finish(vf *volumeFlags, stderr io.Writer) error {
	err := ov.close()
	if vf.stats {
		printStats(stderr, ov.stats.Snapshot(), ov.ring.Stats(), ov.ring.Features().Backend, ov.direct)
	}
	return err
}

// printStats writes the engine's counters, one topic a line.
func printStats(w io.Writer, s mpage.StatsSnapshot, r uring.Stats, backend string, direct bool) {
	for d := range 2 {
		op := mpage.Dir(d)
		per := 0.0
		if s.Bios[d] > 0 {
			per = float64(s.BioPages[d]) / float64(s.Bios[d])
		}
		fmt.Fprintf(w, "stats: %-5s bios %d, pages %d (%.1f per bio), bytes %d, per-block I/Os %d, map calls %d, errors %d\n",
			op, s.Bios[d], s.BioPages[d], per, s.BioBytes[d], s.BlockIOs[d], s.MapCalls[d], s.Errors[d])
	}
	for d := range 2 {
		var hist []string
		for i, n := range s.PagesPerBio[d] {
			hist = append(hist, fmt.Sprintf("<=%d:%d", mpage.PagesPerBioBuckets[i], n))
		}
		fmt.Fprintf(w, "stats: %-5s pages per bio %s\n", mpage.Dir(d), strings.Join(hist, " "))
	}
	for d := range 2 {
		var conf []string
		for r, n := range s.Confused[d] {
			if n > 0 {
				conf = append(conf, fmt.Sprintf("%s %d", mpage.Reason(r), n))
			}
		}
		if len(conf) == 0 {
			conf = []string{"none"}
		}
		fmt.Fprintf(w, "stats: %-5s confused pages %s\n", mpage.Dir(d), strings.Join(conf, ", "))
	}
	fmt.Fprintf(w, "stats: cache hits %d, misses %d, hole pages %d, readahead pages %d, evictions %d\n",
		s.CacheHits, s.CacheMisses, s.HolePages, s.ReadaheadPages, s.Evictions)
	fmt.Fprintf(w, "stats: ring %s (O_DIRECT %v): requests %d, SQEs %d, enters %d, fixed-buffer I/Os %d, bytes read %d, written %d, errors %d\n",
		backend, direct, r.Submitted, r.SQEs, r.Enters, r.FixedBufIO, r.BytesRead, r.BytesWrite, r.Errors)
}
