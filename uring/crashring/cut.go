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
	Data []byte
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
	if err := f.Truncate(int64(len(im.Data))); err != nil {
		return fmt.Errorf("crashring: write the cut: %w", err)
	}
	const chunk = 64 << 10
	for off := 0; off < len(im.Data); off += chunk {
		b := im.Data[off:min(off+chunk, len(im.Data))]
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
		len(im.Data), im.Pending, im.Whole, im.Torn, im.Absent)
}

// Cut is CutFile of the only tracked file.
func (c *Ring) Cut(rng *rand.Rand) (*Image, error) {
	c.mu.Lock()
	fds := make([]int, 0, len(c.files))
	for fd := range c.files {
		fds = append(fds, fd)
	}
	c.mu.Unlock()
	switch len(fds) {
	case 0:
		return nil, ErrNoFile
	case 1:
		return c.CutFile(fds[0], rng)
	}
	slices.Sort(fds)
	return nil, fmt.Errorf("%w: fds %v", ErrAmbiguous, fds)
}

// CutFile returns an image a power cut now could leave on the tracked file
// with descriptor fd: its durable shadow and each write since the last
// flush absent, whole or torn at sector granularity, in an order rng
// picks. The ring goes on working; a cut changes nothing in it.
func (c *Ring) CutFile(fd int, rng *rand.Rand) (*Image, error) {
	c.mu.Lock()
	f := c.files[fd]
	if f == nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: fd %d", ErrNoFile, fd)
	}
	im := &Image{Data: slices.Clone(f.durable), Pending: len(f.pending)}
	// The data slices are never written after Submit (a short completion
	// only reslices), so copying the headers under the lock is enough.
	pending := make([]write, len(f.pending))
	for i, w := range f.pending {
		pending[i] = write{off: w.off, data: w.data}
	}
	c.mu.Unlock()
	for _, i := range rng.Perm(len(pending)) {
		c.applyCut(im, pending[i], rng)
	}
	return im, nil
}

// fate is what a cut does with one pending write.
type fate int

const (
	absent fate = iota
	whole
	torn
)

// applyCut picks w's fate and applies it to im.
func (c *Ring) applyCut(im *Image, w write, rng *rand.Rand) {
	fates := 3
	if c.noTear || !c.spansSectors(w) {
		fates = 2
	}
	switch fate(rng.IntN(fates)) {
	case absent:
		im.Absent++
	case whole:
		im.Whole++
		im.Data = apply(im.Data, w.off, w.data)
	case torn:
		im.Torn++
		c.applyTorn(im, w, rng)
	}
}

// spansSectors says whether w covers more than one sector, so it can tear.
func (c *Ring) spansSectors(w write) bool {
	s := int64(c.sector)
	return len(w.data) > 0 && w.off/s != (w.off+int64(len(w.data))-1)/s
}

// applyTorn applies each sector of w (split at the device's sector
// boundaries) with probability one half.
func (c *Ring) applyTorn(im *Image, w write, rng *rand.Rand) {
	s := int64(c.sector)
	for pos := int64(0); pos < int64(len(w.data)); {
		off := w.off + pos
		n := min(s-off%s, int64(len(w.data))-pos)
		if rng.IntN(2) == 0 {
			im.Data = apply(im.Data, off, w.data[pos:pos+n])
		}
		pos += n
	}
}
