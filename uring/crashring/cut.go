package crashring

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
)

// Image is what a power cut left on one file.
type Image struct {
	// Data is the image (nil when CutFileTo wrote it to a file); Size its
	// length.
	Data []byte
	Size int64
	// Pending is how many writes since the last flush the cut chose
	// from; Whole, Torn and Absent how each fared (they sum to Pending).
	Pending, Whole, Torn, Absent int
}

// WriteFile writes the image to path, a new image file for e2fsck and
// fs/ext to open. Blocks of zeros are left as holes, so a mostly empty
// volume costs what it holds.
func (im *Image) WriteFile(path string) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("crashring: write the cut: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("crashring: write the cut: %w", cerr)
		}
	}()
	return writeSparse(f, im.Data)
}

// writeSparse writes data to the start of f, sized to it, skipping
// 64 KiB chunks of zeros.
func writeSparse(f *os.File, data []byte) error {
	if err := f.Truncate(int64(len(data))); err != nil {
		return fmt.Errorf("crashring: write the cut: %w", err)
	}
	const chunk = 64 << 10
	for off := 0; off < len(data); off += chunk {
		b := data[off:min(off+chunk, len(data))]
		if allZero(b) {
			continue
		}
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			return fmt.Errorf("crashring: write the cut: %w", err)
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// String sums the cut up for a failure message.
func (im *Image) String() string {
	return fmt.Sprintf("cut of %d bytes: %d pending writes, %d whole, %d torn, %d absent",
		im.Size, im.Pending, im.Whole, im.Torn, im.Absent)
}

// Cut is CutFile of the only tracked file.
func (c *Ring) Cut(rng *rand.Rand) (*Image, error) {
	fd, err := c.onlyFile()
	if err != nil {
		return nil, err
	}
	return c.CutFile(fd, rng)
}

// CutTo is CutFileTo of the only tracked file.
func (c *Ring) CutTo(path string, rng *rand.Rand) (*Image, error) {
	fd, err := c.onlyFile()
	if err != nil {
		return nil, err
	}
	return c.CutFileTo(fd, path, rng)
}

func (c *Ring) onlyFile() (int, error) {
	c.mu.Lock()
	fds := make([]int, 0, len(c.files))
	for fd := range c.files {
		fds = append(fds, fd)
	}
	c.mu.Unlock()
	switch len(fds) {
	case 0:
		return 0, ErrNoFile
	case 1:
		return fds[0], nil
	}
	slices.Sort(fds)
	return 0, fmt.Errorf("%w: fds %v", ErrAmbiguous, fds)
}

// CutFile returns an image a power cut now could leave on the tracked file
// with descriptor fd: its durable shadow and each write since the last
// flush absent, whole or torn at sector granularity, in an order rng
// picks. The ring goes on working; a cut changes nothing in it.
func (c *Ring) CutFile(fd int, rng *rand.Rand) (*Image, error) {
	im := &Image{}
	pending, err := c.snapshot(fd, func(durable []byte) error {
		im.Data = slices.Clone(durable)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return im, c.applyAll(im, pending, memTarget{im}, rng)
}

// CutFileTo is CutFile written straight to a new image file at path (its
// zero blocks left as holes), without a copy of the device in memory. The
// same rng state makes the same cut as CutFile; the Image has no Data.
func (c *Ring) CutFileTo(fd int, path string, rng *rand.Rand) (_ *Image, err error) {
	out, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("crashring: write the cut: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("crashring: write the cut: %w", cerr)
		}
	}()
	im := &Image{}
	pending, err := c.snapshot(fd, func(durable []byte) error {
		im.Size = int64(len(durable))
		return writeSparse(out, durable)
	})
	if err != nil {
		return nil, err
	}
	return im, c.applyAll(im, pending, fileTarget{out, im}, rng)
}

// snapshot hands fd's durable shadow to base under the ring's lock and
// returns the writes pending since the last flush.
func (c *Ring) snapshot(fd int, base func(durable []byte) error) ([]write, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files[fd]
	if f == nil {
		return nil, fmt.Errorf("%w: fd %d", ErrNoFile, fd)
	}
	if err := base(f.durable); err != nil {
		return nil, err
	}
	// The data slices are never written after Submit (a short completion
	// only reslices), so copying the headers under the lock is enough.
	pending := make([]write, len(f.pending))
	for i, w := range f.pending {
		pending[i] = write{off: w.off, data: w.data}
	}
	return pending, nil
}

// target is where a cut's writes go: the image in memory or its file.
type target interface {
	WriteAt(b []byte, off int64) (int, error)
}

type memTarget struct{ im *Image }

func (m memTarget) WriteAt(b []byte, off int64) (int, error) {
	m.im.Data = apply(m.im.Data, off, b)
	m.im.Size = int64(len(m.im.Data))
	return len(b), nil
}

type fileTarget struct {
	f  *os.File
	im *Image
}

func (t fileTarget) WriteAt(b []byte, off int64) (int, error) {
	t.im.Size = max(t.im.Size, off+int64(len(b)))
	return t.f.WriteAt(b, off)
}

// applyAll applies the pending writes in an order rng picks.
func (c *Ring) applyAll(im *Image, pending []write, t target, rng *rand.Rand) error {
	im.Pending = len(pending)
	if im.Data != nil {
		im.Size = int64(len(im.Data))
	}
	for _, i := range rng.Perm(len(pending)) {
		if err := c.applyCut(im, pending[i], t, rng); err != nil {
			return fmt.Errorf("crashring: write the cut: %w", err)
		}
	}
	return nil
}

// fate is what a cut does with one pending write.
type fate int

const (
	absent fate = iota
	whole
	torn
)

// applyCut picks w's fate and applies it to t.
func (c *Ring) applyCut(im *Image, w write, t target, rng *rand.Rand) error {
	fates := 3
	if c.noTear || !c.spansSectors(w) {
		fates = 2
	}
	switch fate(rng.IntN(fates)) {
	case absent:
		im.Absent++
	case whole:
		im.Whole++
		_, err := t.WriteAt(w.data, w.off)
		return err
	case torn:
		im.Torn++
		return c.applyTorn(w, t, rng)
	}
	return nil
}

// spansSectors says whether w covers more than one sector, so it can tear.
func (c *Ring) spansSectors(w write) bool {
	s := int64(c.sector)
	return len(w.data) > 0 && w.off/s != (w.off+int64(len(w.data))-1)/s
}

// applyTorn applies each sector of w (split at the device's sector
// boundaries) with probability one half.
func (c *Ring) applyTorn(w write, t target, rng *rand.Rand) error {
	s := int64(c.sector)
	for pos := int64(0); pos < int64(len(w.data)); {
		off := w.off + pos
		n := min(s-off%s, int64(len(w.data))-pos)
		if rng.IntN(2) == 0 {
			if _, err := t.WriteAt(w.data[pos:pos+n], off); err != nil {
				return err
			}
		}
		pos += n
	}
	return nil
}
