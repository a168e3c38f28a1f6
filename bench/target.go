package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/internal/tool"
)

// Target kinds.
const (
	TargetZram = "zram"
	TargetLoop = "loop"
	TargetPath = "path"
)

// zramControl is where the kernel's zram-control interface lives.
const zramControl = "/sys/class/zram-control"

// Target is the device (or file) every runner of a run uses.
type Target struct {
	Kind string `json:"kind"`
	// Path is what runners open: /dev/zramN, /dev/loopN, or the user's.
	Path string `json:"path"`
	// Size is the region the workloads use, from offset 0; DeviceSize is
	// the whole device.
	Size       int64 `json:"size"`
	DeviceSize int64 `json:"device_size"`
	// LogicalBlock is the device's logical block size (direct I/O must
	// be aligned to it); 512 for a file.
	LogicalBlock int `json:"logical_block"`
	// Created: the harness made it, filled it, and removes it.
	Created bool `json:"created"`
	// Writable: runs may write to it.
	Writable bool `json:"writable"`
	// Notes say what differs from the intended setup (a loop device
	// without direct I/O).
	Notes []string `json:"notes,omitempty"`

	cleanups []func() error
}

// TargetConfig says which target to open.
type TargetConfig struct {
	Spec string // "zram", "loop", a path, or "" (zram if possible, else loop)
	Size int64
	// DeviceSize, if larger than Size, is the size of a device the harness
	// makes (room for the HTTP workloads' file system); the region stays
	// Size.
	DeviceSize  int64
	Write       bool // the run writes
	DestroyData bool
	TempDir     string
}

// OpenTarget makes or opens the target. Whatever it made is undone by
// Close, and by OpenTarget itself when it fails halfway.
func OpenTarget(ctx context.Context, cfg TargetConfig) (_ *Target, err error) {
	t := &Target{}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	spec := cfg.Spec
	if spec == "" {
		spec = TargetLoop
		if zramAvailable() {
			spec = TargetZram
		}
	}
	devSize := max(cfg.Size, cfg.DeviceSize)
	switch spec {
	case TargetZram:
		err = t.makeZram(devSize, cfg.Size)
	case TargetLoop:
		err = t.makeLoop(devSize, cfg.Size, cfg.TempDir)
	default:
		err = t.openPath(spec, cfg)
	}
	if err != nil {
		return nil, err
	}
	if t.Created {
		t.Writable = true
		if err := t.fill(ctx); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// zramAvailable: the kernel has zram-control and we may use it.
func zramAvailable() bool {
	if os.Geteuid() != 0 {
		return false
	}
	_, err := os.Stat(filepath.Join(zramControl, "hot_add"))
	return err == nil
}

// makeZram adds a new zram device of devSize bytes, region size. Only the
// device hot_add returned is ever configured or removed.
func (t *Target) makeZram(devSize, size int64) error {
	if !zramAvailable() {
		return fmt.Errorf("%w: zram: needs root and %s/hot_add (modprobe zram)", ErrUnavailable, zramControl)
	}
	out, err := os.ReadFile(filepath.Join(zramControl, "hot_add"))
	if err != nil {
		return fmt.Errorf("%w: zram: hot_add: %v", ErrUnavailable, err)
	}
	id, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("zram: hot_add returned %q", out)
	}
	name := fmt.Sprintf("zram%d", id)
	t.Kind, t.Path, t.Created = TargetZram, "/dev/"+name, true
	t.cleanups = append(t.cleanups, func() error { return removeZram(id) })
	if err := os.WriteFile(filepath.Join("/sys/block", name, "disksize"), []byte(strconv.FormatInt(devSize, 10)), 0); err != nil {
		return fmt.Errorf("zram: %s: set disksize %d: %w", name, devSize, err)
	}
	if err := waitForNode(t.Path); err != nil {
		return err
	}
	return t.probe(size)
}

// removeZram resets and removes zram device id; the device may be busy for
// a moment after the last close (udev probes new block devices).
func removeZram(id int) error {
	name := fmt.Sprintf("zram%d", id)
	var err error
	for i := range 50 {
		// reset frees the memory; hot_remove refuses a device in use.
		_ = os.WriteFile(filepath.Join("/sys/block", name, "reset"), []byte("1"), 0)
		err = os.WriteFile(filepath.Join(zramControl, "hot_remove"), []byte(strconv.Itoa(id)), 0)
		if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
			return nil
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
	return fmt.Errorf("zram: remove %s: %w", name, err)
}

// waitForNode waits for udev (or devtmpfs) to create the device node.
func waitForNode(path string) error {
	for range 200 {
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s: device node did not appear", path)
}

// makeLoop attaches a loop device with direct I/O to a new image file of
// devSize bytes in a temporary directory, region size.
func (t *Target) makeLoop(devSize, size int64, tempDir string) error {
	losetup, err := lookTool("losetup")
	if err != nil || os.Geteuid() != 0 {
		return fmt.Errorf("%w: loop: needs root and losetup", ErrUnavailable)
	}
	dir, err := os.MkdirTemp(tempDir, "mpaged-bench-")
	if err != nil {
		return fmt.Errorf("loop: %w", err)
	}
	t.Kind, t.Created = TargetLoop, true
	t.cleanups = append(t.cleanups, func() error { return os.RemoveAll(dir) })
	image := filepath.Join(dir, "image")
	f, err := os.Create(image)
	if err == nil {
		err = errors.Join(f.Truncate(devSize), f.Close())
	}
	if err != nil {
		return fmt.Errorf("loop: image: %w", err)
	}
	out, err := exec.Command(losetup, "--direct-io=on", "--find", "--show", image).CombinedOutput()
	if err != nil {
		// Some backing file systems refuse direct I/O: the device then goes
		// through the host's page cache, for every runner alike.
		out, err = exec.Command(losetup, "--find", "--show", image).CombinedOutput()
		t.Notes = append(t.Notes, "loop device without direct I/O (the backing file system refused it): reads may hit the host page cache")
	}
	if err != nil {
		return fmt.Errorf("%w: losetup: %v: %s", ErrUnavailable, err, strings.TrimSpace(string(out)))
	}
	t.Path = strings.TrimSpace(string(out))
	t.cleanups = append(t.cleanups, func() error { return detachLoop(losetup, t.Path) })
	return t.probe(size)
}

func detachLoop(losetup, dev string) error {
	var out []byte
	var err error
	for i := range 20 {
		if out, err = exec.Command(losetup, "--detach", dev).CombinedOutput(); err == nil {
			return nil
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
	return fmt.Errorf("loop: detach %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
}

// openPath uses a device or file the user named, as it is.
func (t *Target) openPath(path string, cfg TargetConfig) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: target: %v", ErrConfig, err)
	}
	if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("%w: target %s: not a block device or file", ErrConfig, path)
	}
	if cfg.Write && !cfg.DestroyData {
		return fmt.Errorf("%w: %s (or choose read-only workloads)", ErrDestroyData, path)
	}
	t.Kind, t.Path, t.Writable = TargetPath, path, cfg.Write
	return t.probe(cfg.Size)
}

// probe reads the device's size and logical block size and fits the
// region into it.
func (t *Target) probe(want int64) error {
	f, err := os.Open(t.Path)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Path, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("target %s: size: %w", t.Path, err)
	}
	t.DeviceSize, t.LogicalBlock = size, 512
	if ssz, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil {
		t.LogicalBlock = ssz
	}
	// Whole MiBs, so every block size up to 1 MiB divides the region.
	t.Size = min(want, size) &^ (1<<20 - 1)
	if t.Size < 4<<20 {
		return fmt.Errorf("%w: target %s: %d bytes usable, want at least 4 MiB", ErrConfig, t.Path, t.Size)
	}
	return nil
}

// fill writes incompressible pseudo-random data over the region with
// O_DIRECT, so reads return real pages (zram keeps same-filled pages,
// zeroes included, as one word and returns them without a copy).
func (t *Target) fill(ctx context.Context) error {
	f, err := os.OpenFile(t.Path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("target %s: fill: %w", t.Path, err)
	}
	defer f.Close()
	const chunk = 1 << 20
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("target %s: fill: %w", t.Path, err)
	}
	defer unix.Munmap(buf)
	src := rand.NewChaCha8([32]byte{'m', 'p', 'a', 'g', 'e', 'd'})
	for off := int64(0); off < t.Size; off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, _ = src.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("target %s: fill at %d: %w", t.Path, off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("target %s: fill: %w", t.Path, err)
	}
	return nil
}

// Close undoes what OpenTarget made, newest first.
func (t *Target) Close() error {
	var errs []error
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		errs = append(errs, t.cleanups[i]())
	}
	t.cleanups = nil
	return errors.Join(errs...)
}

// lookTool finds name (tool.Look); missing, it makes the run unavailable.
func lookTool(name string) (string, error) {
	p, err := tool.Look(name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return p, nil
}
