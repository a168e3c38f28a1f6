package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/uring"
)

// defaultDataDir is where commands without --volume keep their volume.
const defaultDataDir = "mpaged-data"

// defaultDemoVolume is demo's file when --volume is not given.
var defaultDemoVolume = filepath.Join(defaultDataDir, "demo.img")

// demoBioPages is the vec count of each demo request: one 1 MiB Bio.
const demoBioPages = 256

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "mpaged demo [--volume PATH] [--size SIZE] [--ring native|iouring-go|sync] [--depth N]")
	volume := fs.String("volume", defaultDemoVolume, "file to write (created if missing; only a file demo wrote is overwritten)")
	sizeFlag := fs.String("size", "64MiB", "bytes to write and verify")
	ring := fs.String("ring", "", "ring backend: native, iouring-go or sync (default: native, else sync)")
	depth := fs.Int("depth", 8, "requests in flight")
	operands, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(operands) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, operands)
	}
	size, err := humanize.ParseBytes(*sizeFlag)
	if err != nil || size == 0 || size%(demoBioPages*alloc.PageSize) != 0 {
		return fmt.Errorf("%w: --size %q: want a positive multiple of 1MiB", errUsage, *sizeFlag)
	}
	if *depth < 1 || *depth > 64 {
		return fmt.Errorf("%w: --depth %d: want 1..64", errUsage, *depth)
	}

	f, direct, err := openVolume(*volume, int64(size), *volume == defaultDemoVolume)
	if err != nil {
		return err
	}
	defer f.Close()

	r, err := openRing(*ring, uring.Options{Entries: 64}, stderr)
	if err != nil {
		return err
	}
	defer r.Close()
	pool, err := alloc.NewFramePool(alloc.PoolConfig{
		ArenaBytes: *depth * demoBioPages * alloc.PageSize,
		MaxBytes:   int64(*depth * demoBioPages * alloc.PageSize),
		OnArena: func(i int, mem []byte) error {
			// The sync ring has no fixed buffers: plain vectored I/O.
			if err := r.RegisterBuffer(i, mem); err != nil && !errors.Is(err, uring.ErrNotSupported) {
				return err
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	h, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		return err
	}
	defer r.UnregisterFile(h)

	d := &demo{ring: r, pool: pool, file: h, depth: *depth, size: int64(size)}
	if err := d.setup(); err != nil {
		return err
	}
	defer d.release()
	ft := r.Features()
	fmt.Fprintf(stdout, "volume %s (%s, O_DIRECT %v), ring %s %v\n", *volume, humanize.IBytes(size), direct, ft.Backend, ft.SetupFlags)
	return d.run(stdout)
}

// run writes, syncs, reads back and verifies, and prints what it took.
func (d *demo) run(stdout io.Writer) error {
	start := time.Now()
	if err := d.pass(uring.OpWritev); err != nil {
		return err
	}
	if err := d.fsync(); err != nil {
		return err
	}
	wrote := time.Since(start)
	start = time.Now()
	if err := d.pass(uring.OpReadv); err != nil {
		return err
	}
	read := time.Since(start)
	st := d.ring.Stats()
	size := uint64(d.size)
	fmt.Fprintf(stdout, "wrote+fsync %s in %v (%s/s), read and verified in %v (%s/s)\n",
		humanize.IBytes(size), wrote.Round(time.Millisecond), humanize.IBytes(uint64(float64(size)/wrote.Seconds())),
		read.Round(time.Millisecond), humanize.IBytes(uint64(float64(size)/read.Seconds())))
	fmt.Fprintf(stdout, "requests %d, SQEs %d, ring enters %d, fixed-buffer I/O %d, resubmits %d, errors %d\n",
		st.Submitted, st.SQEs, st.Enters, st.FixedBufIO, st.Resubmits, st.Errors)
	return nil
}

// openVolume opens (creating and sizing if needed) the demo's target with
// O_DIRECT when the file system allows. It overwrites only what it wrote
// itself: a new or empty file, or one whose first page holds the demo's
// pattern; anything else (an ext image, a block device, a user's file) is
// refused. Only the default data directory is created.
func openVolume(path string, size int64, isDefault bool) (*os.File, bool, error) {
	if isDefault {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, false, err
		}
	}
	if err := checkDemoOwned(path); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o644)
	direct := err == nil
	if errors.Is(err, syscall.EINVAL) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	}
	if err != nil {
		return nil, false, fmt.Errorf("volume: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("volume: %w", err)
	}
	if st.Size() < size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("volume: size %s: %w", path, err)
		}
	}
	return f, direct, nil
}

// checkDemoOwned refuses a target demo did not write.
func checkDemoOwned(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("volume %s: demo writes only files it creates, not a %v", path, st.Mode().Type())
	}
	if st.Size() == 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	defer f.Close()
	head := make([]byte, min(st.Size(), 4096)&^7)
	if _, err := io.ReadFull(f, head); err != nil || verify([][]byte{head}, 0) != nil {
		return fmt.Errorf("volume %s: not a file demo wrote; refusing to overwrite it (name a new file)", path)
	}
	return nil
}

// demo keeps depth requests of 256 frames each cycling through the ring.
type demo struct {
	ring  uring.Ring
	pool  *alloc.FramePool
	file  uring.File
	depth int
	size  int64

	reqs []uring.Request
	done chan *uring.Request
}

func (d *demo) setup() error {
	d.reqs = make([]uring.Request, d.depth)
	d.done = make(chan *uring.Request, d.depth)
	h := uring.HandlerFunc(func(r *uring.Request) { d.done <- r })
	for i := range d.reqs {
		q := &d.reqs[i]
		q.Handler, q.BufIndex = h, uring.NoBuffer
		for range demoBioPages {
			fr, err := d.pool.Get()
			if err != nil {
				return err
			}
			q.Vecs = append(q.Vecs, fr)
		}
		q.BufIndex = int16(d.pool.BufIndex(q.Vecs[0]))
	}
	return nil
}

func (d *demo) release() {
	for i := range d.reqs {
		for _, fr := range d.reqs[i].Vecs {
			d.pool.Put(fr)
		}
	}
}

const bioBytes = demoBioPages * alloc.PageSize

// pass moves the whole volume through the ring in 1 MiB requests, keeping
// depth in flight; reads are checked against the pattern as they land.
func (d *demo) pass(op uring.Op) error {
	var next, outstanding int64
	idle := make([]*uring.Request, 0, d.depth)
	for i := range d.reqs {
		idle = append(idle, &d.reqs[i])
	}
	for next < d.size || outstanding > 0 {
		for len(idle) > 0 && next < d.size {
			q := idle[len(idle)-1]
			idle = idle[:len(idle)-1]
			q.Op, q.File, q.Offset = op, d.file, next
			if op == uring.OpWritev {
				fill(q.Vecs, next)
			}
			if err := d.ring.Submit(q); err != nil {
				return err
			}
			next += bioBytes
			outstanding++
		}
		q := <-d.done
		outstanding--
		if q.Err != nil {
			return fmt.Errorf("%s at %d: %w", q.Op, q.Offset, q.Err)
		}
		if q.Res != bioBytes {
			return fmt.Errorf("%s at %d: moved %d of %d bytes", q.Op, q.Offset, q.Res, bioBytes)
		}
		if op == uring.OpReadv {
			if err := verify(q.Vecs, q.Offset); err != nil {
				return err
			}
		}
		idle = append(idle, q)
	}
	return nil
}

func (d *demo) fsync() error {
	q := &uring.Request{Op: uring.OpFsync, File: d.file, BufIndex: uring.NoBuffer, Handler: d.reqs[0].Handler}
	if err := d.ring.Submit(q); err != nil {
		return err
	}
	if q = <-d.done; q.Err != nil {
		return fmt.Errorf("fsync: %w", q.Err)
	}
	return nil
}

// fill stamps each 8-byte word with its absolute offset, so a misplaced page
// cannot pass verify.
func fill(vecs [][]byte, off int64) {
	for _, v := range vecs {
		for i := 0; i < len(v); i += 8 {
			binary.LittleEndian.PutUint64(v[i:], uint64(off)+uint64(i))
		}
		off += int64(len(v))
	}
}

func verify(vecs [][]byte, off int64) error {
	for _, v := range vecs {
		for i := 0; i < len(v); i += 8 {
			if binary.LittleEndian.Uint64(v[i:]) != uint64(off)+uint64(i) {
				return fmt.Errorf("verify: byte %d holds other data than was written", off+int64(i))
			}
		}
		off += int64(len(v))
	}
	return nil
}
