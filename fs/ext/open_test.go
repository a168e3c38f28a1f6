package ext

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage/mpagetest"
)

// TestOpenNotExt: devices that hold no ext file system at all say so
// through the real Open path, with ErrNotExt: too small to hold a
// superblock, or a wrong magic (also when the caller does not know the
// size).
func TestOpenNotExt(t *testing.T) {
	for _, c := range []struct {
		name        string
		content     []byte
		unknownSize bool
		want        string
	}{
		{"empty", nil, false, "0 bytes: too small to be an ext2/3/4 volume"},
		{"1000 bytes", randBytes(1, 1000), false, "1000 bytes: too small to be an ext2/3/4 volume"},
		{"1500 bytes", randBytes(2, 1500), false, "1500 bytes: too small to be an ext2/3/4 volume"},
		{"2047 bytes", randBytes(3, 2047), false, "2047 bytes: too small"},
		{"zeroes, size unknown", make([]byte, 8192), true, "not an ext2/3/4 volume (bad magic 0x0000"},
		{"zeroes", make([]byte, 64<<10), false, "not an ext2/3/4 volume (bad magic 0x0000"},
		{"random", randBytes(4, 1<<20), false, "not an ext2/3/4 volume (bad magic"},
		{"2048 zeroes", make([]byte, 2048), false, "not an ext2/3/4 volume (bad magic 0x0000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img")
			if err := os.WriteFile(img, c.content, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, rw := range []bool{false, true} {
				v, err := openImage(t, img, openOpts{rw: rw, unknownSize: c.unknownSize})
				if err == nil {
					v.Close()
					t.Fatalf("rw=%v: opened", rw)
				}
				expectErr(t, err, ErrNotExt, c.want)
				if errors.Is(err, ErrCorrupt) {
					t.Errorf("%v also says ErrCorrupt", err)
				}
			}
		})
	}
	t.Run("a volume, size unknown", func(t *testing.T) {
		v := mustOpenImage(t, mkfs(t, "ext2", 1024, "", "4M"), openOpts{unknownSize: true})
		if _, err := v.Stat("/lost+found"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenSectorSize: with SectorSize the superblock is read in aligned
// units of the device's logical block size, and so is everything after it
// when the file system's blocks are at least that large; smaller file
// system blocks are refused with ErrSectorSize, as are sector sizes the
// engine cannot use.
func TestOpenSectorSize(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "d", "f"), randBytes(7, 3*4096+17))
	img4k := mkfs(t, "ext2", 4096, src, "8M")
	img2k := mkfs(t, "ext2", 2048, src, "8M")
	img1k := mkfs(t, "ext2", 1024, src, "8M")
	for _, c := range []struct {
		img    string
		sector int
		want   error // nil: opens, every I/O aligned to the sector
	}{
		{img4k, 0, nil},
		{img4k, 512, nil},
		{img4k, 4096, nil},
		{img2k, 2048, nil},
		{img2k, 4096, ErrSectorSize},
		{img1k, 1024, nil},
		{img1k, 2048, ErrSectorSize},
		{img1k, 4096, ErrSectorSize},
		{img4k, 1000, ErrSectorSize},
		{img4k, 8192, ErrSectorSize},
	} {
		t.Run(fmt.Sprintf("%s/sector%d", filepath.Base(filepath.Dir(c.img))+filepath.Base(c.img), c.sector), func(t *testing.T) {
			var rec *mpagetest.Recorder
			v, err := openImage(t, c.img, openOpts{sectorSize: c.sector, ringFor: recorderRing(t, &rec)})
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("open: %v, want %v", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f, err := v.OpenFile("/d/f")
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, f.Size())
			if _, err := f.ReadAt(got, 0); err != nil || !equalBytes(got, randBytes(7, 3*4096+17)) {
				t.Fatalf("read back: %v", err)
			}
			f.Close()
			align := int64(max(c.sector, 512))
			recs := rec.Records()
			for _, r := range recs {
				if r.Offset%align != 0 || int64(r.Len)%align != 0 {
					t.Errorf("%v: not aligned to %d", r, align)
				}
			}
			// The superblock read comes first: one logical block (at
			// least 1 KiB) per block of it, from offset 0.
			if first := recs[0]; first.Offset != 0 || first.Len != max(2048, c.sector) {
				t.Errorf("superblock read %v, want %d bytes at 0", first, max(2048, c.sector))
			}
		})
	}
}

// TestZramDirectIO: a device with 4 KiB logical blocks (zram, like a 4Kn
// disk) opened with O_DIRECT. With SectorSize 0 the 2 KiB superblock read
// is refused by the device (EINVAL; the engine reports EIO), the bug
// SectorSize fixes; with
// SectorSize from BLKSSZGET a file system of 4 KiB blocks is read and
// written through the engine (e2fsck and debugfs agree afterwards), and
// one of 1 or 2 KiB blocks is refused with ErrSectorSize.
func TestZramDirectIO(t *testing.T) {
	dev := testenv.NewZram(t, 64<<20)
	sector := testenv.LogicalBlockSize(t, dev)
	if sector != 4096 {
		t.Fatalf("%s: logical block size %d, zram's is 4096", dev, sector)
	}
	src := t.TempDir()
	for i, n := range []int{0, 1, 4095, 4096, 4097, 3*4096 + 17, 300 << 10} {
		writeFile(t, filepath.Join(src, "d", fmt.Sprintf("f%d", i)), randBytes(uint64(300+i), n))
	}
	for _, c := range []struct {
		typ   string
		extra []string
	}{{"ext2", nil}, {"ext4", noJournal}} {
		t.Run(c.typ, func(t *testing.T) {
			mkfsOn(t, dev, "", c.typ, 4096, src, c.extra...)
			if _, err := openImage(t, dev, openOpts{rw: true}); !errors.Is(err, syscall.EIO) {
				t.Fatalf("O_DIRECT open with 1 KiB superblock reads: %v, want the device's refusal (EIO)", err)
			}
			w := modelOf(t, c.typ, dev, src, openOpts{rw: true, sectorSize: sector})
			w.kernel = false // a loop device over zram adds nothing here
			w.open()
			w.verifyEngine("opened")
			w.put("/d/new", randBytes(400, 5*4096+3))
			w.writeAt("/d/f2", 4000, randBytes(401, 200))
			w.mkdir("/e")
			w.put("/e/g", randBytes(402, 70000))
			w.unlink("/d/f0")
			w.verify()
			w.close()
		})
	}
	for _, bs := range []int{1024, 2048} {
		t.Run(fmt.Sprintf("%dk blocks refused", bs/1024), func(t *testing.T) {
			// mke2fs refuses blocks smaller than the device's: make
			// the image in a file and copy it over.
			copyToDevice(t, mkfs(t, "ext2", bs, src, "8M"), dev)
			_, err := openImage(t, dev, openOpts{sectorSize: sector})
			expectErr(t, err, ErrSectorSize, "smaller than the device's 4096-byte logical blocks")
		})
	}
}

// copyToDevice writes the image file img to the start of the device dev.
func copyToDevice(t *testing.T, img, dev string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
