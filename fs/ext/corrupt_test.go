package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// patchImage applies fn to n bytes of img at off.
func patchImage(t *testing.T, img string, off int64, n int, fn func(b []byte)) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	fn(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// patchSuper changes the superblock and, on metadata_csum volumes, fixes
// its checksum so only the change itself is judged.
func patchSuper(t *testing.T, img string, fn func(sb []byte)) {
	t.Helper()
	patchImage(t, img, superblockOffset, superblockSize, func(b []byte) {
		fn(b)
		if binary.LittleEndian.Uint32(b[0x64:])&uint32(ROCompatMetadataCsum) != 0 {
			binary.LittleEndian.PutUint32(b[sbChecksumOff:], superblockCsum(b))
		}
	})
}

func smallTree(t *testing.T) string {
	src := t.TempDir()
	buildTree(t, src, treeOpts{blockSize: 1024})
	return src
}

// inodeOffset is where inode ino sits in the image.
func inodeOffset(t *testing.T, v *testVolume, ino uint32) int64 {
	sb := v.sb
	g := (ino - 1) / sb.InodesPerGroup
	d, err := v.Group(g)
	if err != nil {
		t.Fatal(err)
	}
	return int64(d.InodeTable)*int64(sb.BlockSize) + int64((ino-1)%sb.InodesPerGroup)*int64(sb.InodeSize)
}

func expectErr(t *testing.T, err error, want error, text string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("error %q does not say %q", err, text)
	}
}

// TestCorruptVolumes damages images in targeted ways; each must give a
// clear error naming what is wrong and where, never a panic or bad data.
func TestCorruptVolumes(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	src := smallTree(t)
	ext4 := mkfs(t, "ext4", 1024, src, "24M")
	ext2 := mkfs(t, "ext2", 1024, src, "24M")
	copyImg := func(t *testing.T, img string) string {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "copy.img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// locate opens a clean copy to find where things are.
	locate := func(t *testing.T, img, path string) (ino uint32, off int64) {
		v := mustOpenImage(t, img, openOpts{})
		ino, err := v.Lookup(path)
		if err != nil {
			t.Fatal(err)
		}
		return ino, inodeOffset(t, v, ino)
	}
	firstBlock := func(t *testing.T, img, path string) int64 {
		segs := debugfsSegments(t, img, path)
		if len(segs) == 0 {
			t.Fatalf("%s has no blocks", path)
		}
		return int64(segs[0].pstart)
	}
	for _, c := range []struct {
		name   string
		base   string
		damage func(t *testing.T, img string)
		check  func(t *testing.T, img string)
	}{
		{"not a file system", ext4, func(t *testing.T, img string) {
			patchImage(t, img, 0, 4096, func(b []byte) { clear(b) })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrNotExt, "bad magic")
		}},
		{"superblock checksum", ext4, func(t *testing.T, img string) {
			patchImage(t, img, superblockOffset+0x78, 1, func(b []byte) { b[0] ^= 0x20 })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrCorrupt, "superblock: checksum")
		}},
		{"unknown incompat feature", ext4, func(t *testing.T, img string) {
			patchSuper(t, img, func(b []byte) { b[0x63] |= 0x80 })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrUnsupported, "FEATURE_I31")
		}},
		{"encrypt feature", ext2, func(t *testing.T, img string) {
			patchSuper(t, img, func(b []byte) { b[0x62] |= 0x01 })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrUnsupported, "encrypt")
		}},
		{"block size 64 KiB", ext2, func(t *testing.T, img string) {
			patchSuper(t, img, func(b []byte) { b[0x18] = 6; b[0x1C] = 6 })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrUnsupported, "block size 65536")
		}},
		{"inode count", ext2, func(t *testing.T, img string) {
			patchSuper(t, img, func(b []byte) { b[0] ^= 1 })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrCorrupt, "inodes")
		}},
		{"truncated image", ext4, func(t *testing.T, img string) {
			if err := os.Truncate(img, 12<<20); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrCorrupt, "do not fit")
		}},
		{"group descriptor checksum", ext4, func(t *testing.T, img string) {
			patchImage(t, img, 2*1024+0xC, 1, func(b []byte) { b[0] ^= 1 }) // group 0 free blocks
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrCorrupt, "group 0: descriptor checksum")
		}},
		{"group descriptor inode table outside", ext2, func(t *testing.T, img string) {
			patchImage(t, img, 2*1024+0x8, 4, func(b []byte) { binary.LittleEndian.PutUint32(b, 0xFFFFFF00) })
		}, func(t *testing.T, img string) {
			_, err := openImage(t, img, openOpts{})
			expectErr(t, err, ErrCorrupt, "group 0: inode table")
		}},
		{"inode checksum", ext4, func(t *testing.T, img string) {
			_, off := locate(t, img, "/tiny/f02-100")
			patchImage(t, img, off+0x8, 1, func(b []byte) { b[0] ^= 1 }) // atime
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			_, err := v.Stat("/tiny/f02-100")
			expectErr(t, err, ErrCorrupt, "checksum")
			if _, err := v.Stat("/tiny/f01-1"); err != nil {
				t.Fatalf("a sound neighbour fails too: %v", err)
			}
		}},
		{"extent header", ext4, func(t *testing.T, img string) {
			ino, off := locate(t, img, "/blocks/thirteen")
			patchImage(t, img, off+iBlockOff, 2, func(b []byte) { b[0] = 0 })
			fixInodeCsum(t, img, ino)
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			_, err := v.OpenFile("/blocks/thirteen")
			expectErr(t, err, ErrCorrupt, "extent header magic")
		}},
		{"extent block checksum", ext4, func(t *testing.T, img string) {
			blk := debugfsMetaBlock(t, img, "/sparse/fragmented", "ETB1")
			patchImage(t, img, blk*1024+20, 1, func(b []byte) { b[0] ^= 4 })
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			f, err := v.OpenFile("/sparse/fragmented")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = f.ReadAt(make([]byte, f.Size()), 0)
			expectErr(t, err, ErrCorrupt, "checksum")
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("%v does not wrap EIO", err)
			}
		}},
		{"directory block checksum", ext4, func(t *testing.T, img string) {
			blk := firstBlock(t, img, "/links")
			patchImage(t, img, blk*1024+30, 1, func(b []byte) { b[0] ^= 1 })
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			_, err := v.ReadDir("/links")
			expectErr(t, err, ErrCorrupt, "directory block checksum")
			_, err = v.Stat("/links/fast")
			expectErr(t, err, ErrCorrupt, "directory block checksum")
		}},
		{"directory entry record length", ext2, func(t *testing.T, img string) {
			blk := firstBlock(t, img, "/links")
			patchImage(t, img, blk*1024+4, 2, func(b []byte) { b[0], b[1] = 0xFF, 0x7F })
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			_, err := v.ReadDir("/links")
			expectErr(t, err, ErrCorrupt, "record length")
		}},
		{"indirect pointer outside the volume", ext2, func(t *testing.T, img string) {
			ind := debugfsMetaBlock(t, img, "/blocks/double", "IND")
			patchImage(t, img, ind*1024+40, 4, func(b []byte) { binary.LittleEndian.PutUint32(b, 0xFFFFFFF0) })
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			f, err := v.OpenFile("/blocks/double")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = f.ReadAt(make([]byte, f.Size()), 0)
			expectErr(t, err, ErrCorrupt, "outside the volume")
			// The blocks before the bad pointer still read.
			if _, err := f.ReadAt(make([]byte, 12*1024), 0); err != nil {
				t.Fatalf("direct blocks: %v", err)
			}
		}},
		{"directory entry to a free inode", ext2, func(t *testing.T, img string) {
			blk := firstBlock(t, img, "/hard")
			// The third entry (after . and ..) is "a"; point it at an
			// inode never used.
			patchImage(t, img, blk*1024+24, 4, func(b []byte) { binary.LittleEndian.PutUint32(b, 4000) })
		}, func(t *testing.T, img string) {
			v := mustOpenImage(t, img, openOpts{})
			_, err := v.Stat("/hard/a")
			expectErr(t, err, ErrCorrupt, "not in use")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := copyImg(t, c.base)
			c.damage(t, img)
			c.check(t, img)
		})
	}
}

// debugfsMetaBlock is the device block of path's metadata block of kind
// (IND, DIND, TIND), as debugfs's stat lists it.
func debugfsMetaBlock(t *testing.T, img, path, kind string) int64 {
	out := testenv.Run(t, "debugfs", "-R", "stat "+path, img)
	i := strings.Index(out, "("+kind+"):")
	if i < 0 {
		t.Fatalf("%s has no %s block:\n%s", path, kind, out)
	}
	var blk int64
	fmt.Sscanf(out[i+len(kind)+3:], "%d", &blk)
	return blk
}

// fixInodeCsum recomputes the checksum of inode ino after a test changed
// it on purpose, so the change itself is what gets judged.
func fixInodeCsum(t *testing.T, img string, ino uint32) {
	t.Helper()
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := ParseSuperblock(raw[superblockOffset:])
	if err != nil {
		t.Fatal(err)
	}
	g := (ino - 1) / sb.InodesPerGroup
	d, err := parseGroupDesc(raw[int(sb.descBlock(0))*sb.BlockSize+int(g)*sb.GroupDescSize:], g, sb)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(d.InodeTable)*int64(sb.BlockSize) + int64((ino-1)%sb.InodesPerGroup)*int64(sb.InodeSize)
	patchImage(t, img, off, int(sb.InodeSize), func(b []byte) {
		gen := binary.LittleEndian.Uint32(b[0x64:])
		c := inodeCsum(b, inodeCsumSeed(sb, ino, gen), true)
		binary.LittleEndian.PutUint16(b[iChecksumLoOff:], uint16(c))
		binary.LittleEndian.PutUint16(b[iChecksumHiOff:], uint16(c>>16))
	})
}

// TestRecoveryAndReadOnly: a journal needing recovery opens read-only with
// a message and the device untouched; a read-write open replays it (here
// an empty log: only the flag is cleared). Unknown RO_COMPAT features are
// readable but refuse read-write.
func TestRecoveryAndReadOnly(t *testing.T) {
	src := smallTree(t)
	base := mkfs(t, "ext3", 1024, src, "24M")
	t.Run("needs recovery", func(t *testing.T) {
		img := base + ".rec"
		b, _ := os.ReadFile(base)
		os.WriteFile(img, b, 0o644)
		patchSuper(t, img, func(b []byte) { b[0x60] |= byte(IncompatRecover) })
		var mu sync.Mutex
		var logs []string
		logf := func(f string, a ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprintf(f, a...))
			mu.Unlock()
		}
		v, err := openImage(t, img, openOpts{logf: logf})
		if err != nil {
			t.Fatal(err)
		}
		if ro, _ := v.ReadOnly(); !ro {
			t.Error("not read-only")
		}
		if !strings.Contains(strings.Join(logs, "\n"), "needs recovery") {
			t.Errorf("no recovery notice in %q", logs)
		}
		verifyTree(t, v, src)
		v.Close()
		if !strings.Contains(headerField(dumpe2fsHeader(t, img), "Filesystem features"), "needs_recovery") {
			t.Fatal("a read-only open cleared needs_recovery")
		}
		v = mustOpenImage(t, img, openOpts{rw: true, logf: logf})
		if !strings.Contains(strings.Join(logs, "\n"), "journal replayed: 0 transactions") {
			t.Errorf("no replay notice in %q", logs)
		}
		if sb := v.Superblock(); sb.HasIncompat(IncompatRecover) {
			t.Error("needs_recovery still set after a read-write open")
		}
		verifyTree(t, v, src)
	})
	t.Run("unknown ro_compat", func(t *testing.T) {
		img := base + ".ro"
		b, _ := os.ReadFile(base)
		os.WriteFile(img, b, 0o644)
		patchSuper(t, img, func(b []byte) { b[0x67] |= 0x40 })
		_, err := openImage(t, img, openOpts{rw: true})
		expectErr(t, err, ErrReadOnly, "FEATURE_R30")
		v := mustOpenImage(t, img, openOpts{})
		if _, err := v.Stat("/tiny"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("read-write downgraded", func(t *testing.T) {
		v := mustOpenImage(t, base, openOpts{rw: true})
		if ro, why := v.ReadOnly(); !ro || why == "" {
			t.Errorf("ReadOnly() = %v, %q", ro, why)
		}
	})
}

// TestIOErrors: device errors under metadata and data reads surface as
// errors wrapping EIO, with the inode or block they concern.
func TestIOErrors(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	src := smallTree(t)
	img := mkfs(t, "ext4", 1024, src, "24M")
	data := firstBlock2(t, img, "/blocks/thirteen")
	var rec *mpagetest.Recorder
	v := mustOpenImage(t, img, openOpts{ringFor: recorderRing(t, &rec)})
	f, err := v.OpenFile("/blocks/thirteen")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec.FailAt(uring.OpReadv, data*1024+10, syscall.EIO)
	_, err = f.ReadAt(make([]byte, 4096), 0)
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "inode") {
		t.Fatalf("data read error %v", err)
	}
	rec.ClearFaults()
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatalf("after the fault cleared: %v", err)
	}
	// The inode table under the root: Open itself fails, saying so.
	d, _ := v.Group(0)
	_, err = openImage(t, img, openOpts{ringFor: func(f *os.File) uring.Ring {
		r, err := mpagetest.NewFileRecorder(f, mpagetest.RecorderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.FailAt(uring.OpReadv, int64(d.InodeTable)*1024+256, syscall.EIO)
		return r
	}})
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "inode 2") {
		t.Fatalf("open with the root inode unreadable: %v", err)
	}
}

func firstBlock2(t *testing.T, img, path string) int64 {
	segs := debugfsSegments(t, img, path)
	if len(segs) == 0 {
		t.Fatalf("%s has no blocks", path)
	}
	return int64(segs[0].pstart)
}

// TestReadDirInfoCorruptChild: a directory with one corrupt child inode
// lists every other entry with its description, and reports the bad one
// as a *fs.PathError wrapping ErrCorrupt naming its path; ReadDir, which
// reads only the directory, lists all names.
func TestReadDirInfoCorruptChild(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "d", "a"), randBytes(1, 5000))
	writeFile(t, filepath.Join(src, "d", "bad"), randBytes(2, 300))
	writeFile(t, filepath.Join(src, "d", "c"), nil)
	writeFile(t, filepath.Join(src, "d", "s", "inner"), []byte("x"))
	symlink(t, "a", filepath.Join(src, "d", "l"))
	for _, c := range []struct {
		name, typ string
		extra     []string
		damage    func(b []byte) // the inode's bytes
		want      string
	}{
		{"checksum", "ext4", noJournal, func(b []byte) { b[0x8] ^= 1 }, "checksum"},
		{"no file type", "ext2", nil, func(b []byte) { binary.LittleEndian.PutUint16(b, 0xF1A4) }, "is no file type"},
		{"no links", "ext2", nil, func(b []byte) { binary.LittleEndian.PutUint16(b[0x1A:], 0) }, "not in use"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.typ, 1024, src, "8M", c.extra...)
			v := mustOpenImage(t, img, openOpts{})
			want, err := v.ReadDirInfo("/d")
			if err != nil || len(want) != 5 {
				t.Fatalf("before the damage: %d entries, %v", len(want), err)
			}
			for _, fi := range want {
				if lfi, err := v.Lstat("/d/" + fi.Name); err != nil || lfi != fi {
					t.Fatalf("ReadDirInfo %+v, Lstat %+v, %v", fi, lfi, err)
				}
			}
			ino, err := v.Lookup("/d/bad")
			if err != nil {
				t.Fatal(err)
			}
			off := inodeOffset(t, v, ino)
			v.Close()
			patchImage(t, img, off, goodOldInodeSize, c.damage)

			v = mustOpenImage(t, img, openOpts{})
			got, err := v.ReadDirInfo("/d/")
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != "/d/bad" || pe.Op != "stat" {
				t.Fatalf("error %v, want a *fs.PathError for /d/bad", err)
			}
			expectErr(t, err, ErrCorrupt, c.want)
			var names []string
			for _, fi := range got {
				names = append(names, fi.Name)
				if i := slices.IndexFunc(want, func(w FileInfo) bool { return w.Name == fi.Name }); i < 0 || want[i] != fi {
					t.Errorf("%s: %+v after the damage", fi.Name, fi)
				}
			}
			if !slices.Equal(names, []string{"a", "c", "l", "s"}) {
				t.Fatalf("listed %q", names)
			}
			ents, err := v.ReadDir("/d")
			if err != nil || len(ents) != 5 {
				t.Fatalf("ReadDir: %d entries, %v", len(ents), err)
			}
			if _, err := v.ReadDirInfo("/d/a"); !errors.Is(err, ErrNotDir) {
				t.Fatalf("ReadDirInfo of a file: %v", err)
			}
		})
	}
}

// TestMapperErrorStaysWithItsPage: a mapper failure (a corrupt indirect
// pointer) that readahead met is reported by the reads of the page it
// failed, and not by a read of another page of the file that fails for a
// reason of its own (the device). Before mapper errors travelled with their
// page, the volume kept the last mapper error of each inode, and the next
// failing read of any page of the file reported it: this test failed.
func TestMapperErrorStaysWithItsPage(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	img := mkfs(t, "ext2", 1024, smallTree(t), "24M")
	ind := debugfsMetaBlock(t, img, "/blocks/double", "IND")
	// Pointer 10 of the indirect block: file block 22, in page 5.
	patchImage(t, img, ind*1024+40, 4, func(b []byte) { binary.LittleEndian.PutUint32(b, 0xFFFFFFF0) })
	data := firstBlock2(t, img, "/blocks/double")
	var rec *mpagetest.Recorder
	v := mustOpenImage(t, img, openOpts{ringFor: recorderRing(t, &rec)})
	f, err := v.OpenFile("/blocks/double")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec.FailAt(uring.OpReadv, data*1024+10, syscall.EIO) // page 0: the device fails
	pages := int((f.Size() + mpage.PageSize - 1) / mpage.PageSize)
	if _, err := f.Mapping().ReadPages(0, pages, 0); err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(make([]byte, 1024), 0)
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of page 0 (device error): %v; want EIO, not another page's corruption", err)
	}
	rec.ClearFaults()
	_, err = f.ReadAt(make([]byte, 1024), 22*1024)
	expectErr(t, err, ErrCorrupt, "outside the volume")
	var merr *mpage.MapError
	if !errors.As(err, &merr) || merr.Block != 22 {
		t.Fatalf("read of page 5: %v; want the MapError of block 22", err)
	}
}
