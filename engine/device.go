package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DeviceInfo describes an opened volume.
type DeviceInfo struct {
	Path string
	// Size is the volume's size in bytes.
	Size int64
	// SectorSize is the smallest unit direct I/O may address: the logical
	// block size of a block device, the direct-I/O alignment of the file
	// system under an image file (512 when it cannot be asked).
	SectorSize int
	// BlockDevice: the volume is a block device, not an image file.
	BlockDevice bool
	// Direct: opened with O_DIRECT (the host's page cache is bypassed).
	Direct bool
	// Writable: opened for writing, and held exclusively.
	Writable bool
}

// OpenOptions say how OpenDevice opens a volume.
type OpenOptions struct {
	// Write opens for writing and takes the volume exclusively.
	Write bool
	// NoDirect opens without O_DIRECT (through the host's page cache).
	NoDirect bool
	// Logf receives warnings about other users of a volume opened
	// read-only. Nil drops them.
	Logf func(format string, args ...any)
	// LockWait is how long a writer waits for another holder to let go
	// before the volume counts as busy (default 3 s): a process that just
	// died keeps its hold until the kernel has torn down its io_uring
	// instance, whose registered files still reference the volume.
	LockWait time.Duration
}

const defaultLockWait = 3 * time.Second

// retryBusy calls try until it stops failing with busy (EBUSY,
// EWOULDBLOCK) or wait has passed.
func retryBusy(wait time.Duration, try func() error) error {
	if wait <= 0 {
		wait = defaultLockWait
	}
	deadline := time.Now().Add(wait)
	for {
		err := try()
		if !errors.Is(err, syscall.EBUSY) && !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// OpenDevice opens an image file or block device as a volume: with
// O_DIRECT unless the file system under an image refuses it (tmpfs) or
// NoDirect says so, and for writing only when nobody else writes it (see
// the package doc). The returned file holds the image's lock until closed.
func OpenDevice(path string, o OpenOptions) (_ *os.File, _ DeviceInfo, err error) {
	info := DeviceInfo{Path: path, Writable: o.Write}
	st, err := os.Stat(path)
	if err != nil {
		return nil, info, fmt.Errorf("volume: %w", err)
	}
	switch {
	case st.IsDir():
		return nil, info, fmt.Errorf("volume %s: %w: it is a directory", path, ErrNotVolume)
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		info.BlockDevice = true
	case !st.Mode().IsRegular():
		return nil, info, fmt.Errorf("volume %s: %w (mode %v)", path, ErrNotVolume, st.Mode())
	}
	f, direct, err := openFile(path, o, info.BlockDevice)
	if err != nil {
		return nil, info, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	info.Direct = direct
	if info.Size, err = f.Seek(0, io.SeekEnd); err != nil {
		return nil, info, fmt.Errorf("volume %s: size: %w", path, err)
	}
	if info.SectorSize, err = sectorSize(f, info.BlockDevice); err != nil {
		return nil, info, fmt.Errorf("volume %s: %w", path, err)
	}
	if err := claim(f, path, o, info.BlockDevice); err != nil {
		return nil, info, err
	}
	return f, info, nil
}

// openFile opens path, O_DIRECT first. A block device opened for writing
// is opened O_EXCL: the kernel refuses it while mounted or claimed.
func openFile(path string, o OpenOptions, blockDev bool) (*os.File, bool, error) {
	mode := os.O_RDONLY
	if o.Write {
		mode = os.O_RDWR
		if blockDev {
			mode |= os.O_EXCL
		}
	}
	var f *os.File
	open := func(flags int) error {
		var err error
		f, err = os.OpenFile(path, flags, 0)
		return err
	}
	if !o.NoDirect {
		err := retryBusy(o.LockWait, func() error { return open(mode | syscall.O_DIRECT) })
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, syscall.EINVAL) {
			return nil, false, openError(path, err, blockDev)
		}
	}
	if err := retryBusy(o.LockWait, func() error { return open(mode) }); err != nil {
		return nil, false, openError(path, err, blockDev)
	}
	return f, false, nil
}

func openError(path string, err error, blockDev bool) error {
	if blockDev && errors.Is(err, syscall.EBUSY) {
		if mnt, ok := mountOfDevice(path); ok {
			return fmt.Errorf("volume %s: %w: mounted at %s (unmount it first)", path, ErrBusy, mnt.dir)
		}
		return fmt.Errorf("volume %s: %w: another process holds the device exclusively", path, ErrBusy)
	}
	return fmt.Errorf("volume: %w", err)
}

// sectorSize is the direct-I/O unit: BLKSSZGET on a block device, the
// statx DIO alignment of an image file's file system (kernel 6.1+), else
// 512.
func sectorSize(f *os.File, blockDev bool) (int, error) {
	if blockDev {
		n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
		if err != nil {
			return 0, fmt.Errorf("logical block size: %w", err)
		}
		return n, nil
	}
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err == nil &&
		stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align > 0 {
		return int(stx.Dio_offset_align), nil
	}
	return 512, nil
}

// claim takes an image file's lock for a writer (and refuses an image the
// kernel has mounted through a loop device), or, for a reader, warns about
// writers it would not see coming.
func claim(f *os.File, path string, o OpenOptions, blockDev bool) error {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if blockDev {
		if !o.Write {
			if mnt, ok := mountOfDevice(path); ok && mnt.rw {
				logf("warning: %s is mounted read-write at %s; what mpaged reads may change under it", path, mnt.dir)
			}
		}
		return nil // a writer's O_EXCL did the claiming
	}
	fd := int(f.Fd())
	if !o.Write {
		if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
			logf("warning: %s is open for writing by another process; what mpaged reads may change under it", path)
		} else if err == nil {
			_ = unix.Flock(fd, unix.LOCK_UN)
		}
		for _, l := range loopsBacking(f) {
			if mnt, ok := mountOfDevice(l); ok && mnt.rw {
				logf("warning: %s is mounted read-write at %s through %s; what mpaged reads may change under it", path, mnt.dir, l)
			}
		}
		return nil
	}
	if err := retryBusy(o.LockWait, func() error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) }); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("volume %s: %w: another process (an mpaged?) has it open for writing", path, ErrBusy)
		}
		return fmt.Errorf("volume %s: lock: %w", path, err)
	}
	for _, l := range loopsBacking(f) {
		if mnt, ok := mountOfDevice(l); ok {
			return fmt.Errorf("volume %s: %w: mounted at %s through %s (unmount it first)", path, ErrBusy, mnt.dir, l)
		}
	}
	return nil
}

// loopsBacking lists the loop devices (/dev/loopN, and their partitions)
// whose backing file is f.
func loopsBacking(f *os.File) []string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, bf := range files {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue
		}
		// A backing file removed since shows as "path (deleted)".
		name := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		var bst unix.Stat_t
		if unix.Stat(name, &bst) != nil || bst.Dev != st.Dev || bst.Ino != st.Ino {
			continue
		}
		dev := filepath.Base(filepath.Dir(filepath.Dir(bf)))
		out = append(out, "/dev/"+dev)
		parts, _ := filepath.Glob("/sys/block/" + dev + "/" + dev + "p*")
		for _, p := range parts {
			out = append(out, "/dev/"+filepath.Base(p))
		}
	}
	return out
}

// mount is one line of /proc/self/mountinfo that matters here.
type mount struct {
	dir string
	rw  bool
}

// mountOfDevice finds a mount of the block device at path (by device
// number), preferring a read-write one.
func mountOfDevice(path string) (mount, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return mount{}, false
	}
	want := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mount{}, false
	}
	defer f.Close()
	return findMount(f, want)
}

// findMount scans mountinfo text for device majmin ("8:1").
func findMount(r io.Reader, majmin string) (mount, bool) {
	var found mount
	ok := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - type source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[2] != majmin {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) {
			continue
		}
		rw := hasOpt(fields[5], "rw") && hasOpt(fields[sep+3], "rw")
		if !ok || (rw && !found.rw) {
			found, ok = mount{dir: unescapeMount(fields[4]), rw: rw}, true
		}
	}
	return found, ok
}

func hasOpt(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			valid := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					valid = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if valid {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
