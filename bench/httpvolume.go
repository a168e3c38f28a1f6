package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
)

// The files the HTTP workloads use, at the volume's root.
const (
	httpFileName  = "/bench-file"
	httpEmptyName = "/empty" // cli-cat's startup measurement
)

// contentBlock is the unit the bench file's content is generated in.
const contentBlock = 4 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// benchFile is the file the HTTP workloads GET. Its content is a function
// of the offset: block i is ChaCha8 output keyed by the seed and i
// (incompressible, so zram stores real pages), so any range can be checked
// without holding the file in memory.
type benchFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	Seed uint64 `json:"seed"`
	// CRC is the CRC-32C of the whole content.
	CRC uint32 `json:"crc32c"`
}

// block fills b with content block i.
func (f *benchFile) block(i int64, b *[contentBlock]byte) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], f.Seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(i))
	copy(key[16:], "mpaged-http")
	var c rand.ChaCha8
	c.Seed(key)
	_, _ = c.Read(b[:])
}

// ReadAt is the content at off (io.ReaderAt; short at the end of the file).
func (f *benchFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("bench file: negative offset %d", off)
	}
	if off >= f.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.Size-off))
	var blk [contentBlock]byte
	for done := 0; done < n; {
		pos := off + int64(done)
		f.block(pos/contentBlock, &blk)
		done += copy(p[done:n], blk[pos%contentBlock:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// checksum is the CRC-32C of the content (what a whole GET must match).
func (f *benchFile) checksum() uint32 {
	buf := make([]byte, 1<<20)
	var crc uint32
	for off := int64(0); off < f.Size; off += int64(len(buf)) {
		n, _ := f.ReadAt(buf, off)
		crc = crc32.Update(crc, castagnoli, buf[:n])
	}
	return crc
}

// httpOverhead is the room a file system holding a file of size bytes
// needs beyond it on a device the harness makes: metadata (4 KiB blocks,
// a few inodes, no reserve) and the file's extent tree, with margin.
func httpOverhead(size int64) int64 { return (size/32 + 16<<20) &^ (1<<20 - 1) }

// httpFileSize is the bench file's size on t: the region, or less when a
// named device cannot hold that much besides the file system's metadata.
func httpFileSize(t *Target) (int64, error) {
	size := t.Size
	if room := t.DeviceSize - httpOverhead(size); room < size {
		size = room &^ (1<<20 - 1)
	}
	if size < 4<<20 {
		return 0, fmt.Errorf("%w: target %s: %d bytes: too small for the HTTP workloads' file system", ErrConfig, t.Path, t.DeviceSize)
	}
	return size, nil
}

// httpVolume is the ext4 volume on the target that the HTTP runners serve:
// the daemon through the engine, nginx through a read-only kernel mount.
type httpVolume struct {
	Dev  string
	File benchFile
}

// httpVolume returns the run's HTTP volume, making it on the first call:
// the block workloads (which write the raw device) have all run by then.
func (env *Env) httpVolume(ctx context.Context) (*httpVolume, error) {
	if env.httpVol != nil {
		return env.httpVol, nil
	}
	size, err := httpFileSize(env.Target)
	if err != nil {
		return nil, err
	}
	if !env.Target.Writable {
		return nil, fmt.Errorf("%w: %s (the HTTP workloads make a file system on it)", ErrDestroyData, env.Target.Path)
	}
	logf := env.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	v := &httpVolume{Dev: env.Target.Path, File: benchFile{Name: httpFileName, Size: size, Seed: 0x6874747062656e63}}
	if err := makeHTTPVolume(ctx, v, logf); err != nil {
		return nil, fmt.Errorf("bench: http volume on %s: %w", v.Dev, err)
	}
	env.httpVol = v
	return v, nil
}

// makeHTTPVolume makes an ext4 file system without a journal on v.Dev,
// writes the bench file and an empty one into it through the engine and
// fs/ext, and checks the result with e2fsck: the kernel (nginx) and the
// engine (the daemon) then read the same file system.
func makeHTTPVolume(ctx context.Context, v *httpVolume, logf func(string, ...any)) error {
	mkfs, err := lookTool("mke2fs")
	if err != nil {
		return err
	}
	// 4 KiB blocks also on small devices (mke2fs picks 1 KiB below 512
	// MiB), few inodes, no reserved blocks, no discard (a named device
	// keeps its speed), no lazy init (nothing writes behind the runs).
	out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-b", "4096", "-N", "64",
		"-m", "0", "-E", "nodiscard,lazy_itable_init=0", "-L", "mpaged-bench", v.Dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mke2fs: %w: %s", err, strings.TrimSpace(string(out)))
	}
	crc, err := writeBenchFiles(ctx, v, logf)
	if err != nil {
		return err
	}
	v.File.CRC = crc
	return fsckClean(ctx, v.Dev)
}

// writeBenchFiles writes the bench file (and the empty one) through the
// engine and returns the content's CRC-32C.
func writeBenchFiles(ctx context.Context, v *httpVolume, logf func(string, ...any)) (_ uint32, err error) {
	e, err := engine.Open(engine.Config{Path: v.Dev, Write: true, CacheBytes: 64 << 20, Logf: logf})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, e.Close()) }()
	vol, err := ext.Open(ext.Config{Device: e.Device, Cache: e.Cache, DeviceSize: e.Info.Size, SectorSize: e.Info.SectorSize, Logf: logf})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, vol.Close()) }()
	if ro, why := vol.ReadOnly(); ro {
		return 0, fmt.Errorf("fs/ext will not write the new file system: %s", why)
	}
	empty, err := vol.Create(httpEmptyName, 0o644)
	if err != nil {
		return 0, err
	}
	if err := empty.Close(); err != nil {
		return 0, err
	}
	f, err := vol.Create(v.File.Name, 0o644)
	if err != nil {
		return 0, err
	}
	crc, werr := copyContent(ctx, f, &v.File)
	if werr == nil {
		werr = f.Sync()
	}
	if err := errors.Join(werr, f.Close()); err != nil {
		return 0, fmt.Errorf("%s: %w", v.File.Name, err)
	}
	return crc, vol.Sync()
}

// copyContent writes the file's content to w in 1 MiB pieces and returns
// its CRC-32C.
func copyContent(ctx context.Context, w io.WriterAt, f *benchFile) (uint32, error) {
	buf := make([]byte, 1<<20)
	var crc uint32
	for off := int64(0); off < f.Size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, _ := f.ReadAt(buf, off)
		crc = crc32.Update(crc, castagnoli, buf[:n])
		if _, err := w.WriteAt(buf[:n], off); err != nil {
			return 0, err
		}
	}
	return crc, nil
}

// fsckClean runs e2fsck -fn: the file system fs/ext wrote must be one the
// kernel's tools find nothing wrong with.
func fsckClean(ctx context.Context, dev string) error {
	fsck, err := lookTool("e2fsck")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, fsck, "-fn", dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("e2fsck -fn: %w: %s", err, tail(string(out)))
	}
	return nil
}

// deviceReadBytes is what the block device at path has read so far (its
// sysfs stat: sectors read, in 512-byte units whatever the device's block
// size), false when path is not a block device.
func deviceReadBytes(path string) (int64, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, false
	}
	dev := uint64(st.Rdev)
	b, err := os.ReadFile(filepath.Join("/sys/dev/block", fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)), "stat"))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, false
	}
	sectors, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, false
	}
	return sectors * 512, true
}

// deviceReads measures a device's reads over an interval: start, then
// done gives the bytes read since, or -1 when unknown.
type deviceReads struct {
	path   string
	before int64
	ok     bool
}

func startDeviceReads(path string) deviceReads {
	n, ok := deviceReadBytes(path)
	return deviceReads{path: path, before: n, ok: ok}
}

func (d deviceReads) done() int64 {
	n, ok := deviceReadBytes(d.path)
	if !d.ok || !ok {
		return -1
	}
	return n - d.before
}
