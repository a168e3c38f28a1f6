package ext

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// holeStep is one change of TestJournaledHoleInPage's file: a write of
// n bytes (seeded) at off, or with n < 0 a truncate to off; sync ends
// with File.Sync.
type holeStep struct {
	off  int64
	n    int
	sync bool
}

// TestJournaledHoleInPage: on a 1 KiB-block journaled volume a page holds
// four blocks, and a change can leave a hole inside the file's size in a
// dirty page: a write past the end, a write into a sparse file, a size
// grown over a page not yet written back. The engine writes a dirty page
// whole, mapping every block of it inside the size, so such a hole would
// be allocated by writeback, outside any handle: during a commit's
// ordered-data writeback its bitmap bits join the next transaction, while
// the inode that points at the block is committed later (or i_blocks
// lags the extent tree block that does). A crash between the two commits
// leaves a block marked in use that no inode uses, which the kill drill's
// journaled row found after its clean stop. Written before the fix; it
// failed with "Block bitmap differences: -N" in e2fsck -fn of the cut.
//
// Here writeback must allocate nothing (the inode is not dirty after the
// commits), and a cut taken right after the commit that follows the
// ordered writeback replays to a volume e2fsck -fn finds clean, holding
// the file's bytes with zeroes in its holes.
func TestJournaledHoleInPage(t *testing.T) {
	setCommitInterval(t, time.Hour) // the test commits by hand
	for _, c := range []struct {
		name  string
		steps []holeStep
	}{
		{"a write past the end", []holeStep{{0, 100, true}, {2100, 100, false}}},
		{"a write into a file grown by truncate", []holeStep{{0, 100, true}, {8192, -1, true}, {1100, 100, false}}},
		{"a size grown over a dirty page", []holeStep{{0, 100, false}, {3000, -1, false}}},
		{"a write in a later page over a dirty page", []holeStep{{0, 100, false}, {5000, 100, false}}},
		{"a write in a later page over a hole a grown size left", []holeStep{{0, 5000, true}, {1836, -1, false}, {2808, -1, true}, {4155, 298, false}}},
		{"a write into a hole before the end", []holeStep{{0, 5000, true}, {9000, 10, false}, {6000, 100, false}}},
	} {
		for _, typ := range []string{"ext4", "ext3"} {
			t.Run(typ+"/"+c.name, func(t *testing.T) { holeInPage(t, typ, c.steps) })
		}
	}
}

func holeInPage(t *testing.T, typ string, steps []holeStep) {
	img := mkfs(t, typ, 1024, "", "16M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	f, err := v.Create("/f", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []byte
	for i, s := range steps {
		if s.n < 0 {
			if err := f.Truncate(s.off); err != nil {
				t.Fatal(err)
			}
			want = append(want, make([]byte, max(0, int(s.off)-len(want)))...)[:s.off]
		} else {
			b := randBytes(uint64(i+1), s.n)
			if _, err := f.WriteAt(b, s.off); err != nil {
				t.Fatal(err)
			}
			if end := int(s.off) + s.n; end > len(want) {
				want = append(want, make([]byte, end-len(want))...)
			}
			copy(want[s.off:], b)
		}
		if s.sync {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantAfterCommits(t, v, f, img, want)
}

// wantAfterCommits commits twice (the first commit writes f's data back,
// ordered; the second holds whatever that writeback changed), checks that
// the writeback allocated nothing, then replays a copy of img taken there
// and wants it e2fsck -fn clean, /f holding want.
func wantAfterCommits(t *testing.T, v *testVolume, f *File, img string, want []byte) {
	t.Helper()
	for range 2 {
		if err := v.jnl.commit(); err != nil {
			t.Fatal(err)
		}
	}
	if f.n.inodeDirty.Load() || v.strayAllocs.Load() != 0 {
		t.Errorf("writeback allocated blocks: the inode is dirty after the commits (%v), %d stray allocations", f.n.inodeDirty.Load(), v.strayAllocs.Load())
	}
	cut := copyFile(t, img)
	cv := mustOpenImage(t, cut, openOpts{rw: true})
	if got := readAll(t, cv, "/f"); !bytes.Equal(got, want) {
		t.Errorf("the replayed file holds %d bytes unlike the %d written", len(got), len(want))
	}
	if err := cv.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, cut)
}

// TestJournaledTruncateInSparsePage: a Truncate to a smaller size that
// ends inside a mapped block zeroes that block's tail and dirties its
// page; a hole before the new end in the same page (a sparse file as
// mke2fs -d or the kernel writes it) would then be allocated by
// writeback, outside the truncate's handle, as in
// TestJournaledHoleInPage. Written before the fix; it failed with a stray
// allocation and the cut's e2fsck -fn finding the leaked block.
func TestJournaledTruncateInSparsePage(t *testing.T) {
	setCommitInterval(t, time.Hour) // the test commits by hand
	data := randBytes(7, 4096)
	for _, c := range []struct {
		name   string
		chunks map[int64][]byte // the sparse file's data (holes elsewhere)
		size   int64            // the sparse file's size
		to     int64            // the truncate's size
	}{
		{"a hole before the new end", map[int64][]byte{1024: data[:2048], 5000: data[:1000]}, 8192, 2500},
		{"holes around a mapped block", map[int64][]byte{2048: data[:1024], 6000: data[:100]}, 8192, 2100},
		{"a hole in a later page", map[int64][]byte{0: data[:1024], 5120: data[:1024], 7168: data[:100]}, 9000, 6000},
	} {
		for _, typ := range []string{"ext4", "ext3"} {
			t.Run(typ+"/"+c.name, func(t *testing.T) {
				src := t.TempDir()
				writeSparse(t, filepath.Join(src, "f"), c.size, c.chunks)
				want := make([]byte, c.size)
				for off, b := range c.chunks {
					copy(want[off:], b)
				}
				want = want[:c.to]
				img := mkfs(t, typ, 1024, src, "16M")
				v := mustOpenImage(t, img, openOpts{rw: true})
				f, err := v.OpenWrite("/f", os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := f.Truncate(c.to); err != nil {
					t.Fatal(err)
				}
				wantAfterCommits(t, v, f, img, want)
			})
		}
	}
}
