package ext

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
)

// seg is one run of a file's blocks as debugfs reports it.
type seg struct {
	lstart, n, pstart uint64
	uninit            bool
}

// debugfsSegments parses the BLOCKS/EXTENTS list of debugfs stat:
// "(0-11):562-573, (IND):574, (300-350[u]):2339-2389, (ETB0):2271".
func debugfsSegments(t *testing.T, img, path string) []seg {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", "stat "+path, img)
	i := strings.Index(out, "BLOCKS:\n")
	if j := strings.Index(out, "EXTENTS:\n"); j >= 0 {
		i = j
	}
	if i < 0 {
		return nil
	}
	body := out[i:]
	body = body[strings.IndexByte(body, '\n')+1:]
	if k := strings.Index(body, "\nTOTAL"); k >= 0 {
		body = body[:k]
	}
	var segs []seg
	for _, tok := range strings.Split(strings.TrimSpace(body), ", ") {
		if tok == "" {
			continue
		}
		key, phys, ok := strings.Cut(tok, "):")
		if !ok || !strings.HasPrefix(key, "(") {
			t.Fatalf("debugfs token %q", tok)
		}
		key = key[1:]
		if key == "" || key[0] < '0' || key[0] > '9' {
			continue // IND, DIND, TIND, ETBn: metadata blocks
		}
		var s seg
		if strings.HasSuffix(key, "[u]") {
			s.uninit, key = true, strings.TrimSuffix(key, "[u]")
		}
		la, lb := splitRange(t, key)
		pa, _ := splitRange(t, phys)
		s.lstart, s.n, s.pstart = la, lb-la+1, pa
		segs = append(segs, s)
	}
	return segs
}

func splitRange(t *testing.T, s string) (uint64, uint64) {
	a, b, ok := strings.Cut(s, "-")
	x, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		t.Fatalf("range %q: %v", s, err)
	}
	if !ok {
		return x, x
	}
	y, err := strconv.ParseUint(b, 10, 64)
	if err != nil {
		t.Fatalf("range %q: %v", s, err)
	}
	return x, y
}

// oracle answers per file block from debugfs' segments.
type oracle struct {
	phys   map[uint64]uint64 // written, mapped blocks only
	starts map[uint64]bool   // file blocks where a debugfs segment starts or ends
}

func newOracle(segs []seg) oracle {
	o := oracle{phys: map[uint64]uint64{}, starts: map[uint64]bool{}}
	for _, s := range segs {
		o.starts[s.lstart], o.starts[s.lstart+s.n] = true, true
		if s.uninit {
			continue
		}
		for i := range s.n {
			o.phys[s.lstart+i] = s.pstart + i
		}
	}
	return o
}

// continues reports whether block b continues block b-1's state (both
// holes, or mapped to consecutive device blocks).
func (o oracle) continues(b uint64) bool {
	p0, m0 := o.phys[b-1]
	p1, m1 := o.phys[b]
	return m0 == m1 && (!m0 || p1 == p0+1)
}

// TestMappersMatchDebugfs walks every file of a tree image with the file's
// own mapper and checks each answer against debugfs: every block of a run
// mapped where debugfs says and nowhere else, runs as long as they may be
// (they end only where the mapping changes, at an extent edge, or at the
// end of a pointer array), and Boundary exactly on runs that end an
// array.
func TestMappersMatchDebugfs(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	for _, c := range []struct {
		typ   string
		bs    int
		extra []string
	}{
		{"ext2", 1024, nil},
		{"ext2", 4096, nil},
		{"ext3", 2048, nil},
		{"ext4", 1024, nil},
		{"ext4", 4096, nil},
		{"ext4", 1024, []string{"-O", "^extent,^64bit"}},
	} {
		t.Run(fmt.Sprintf("%s-%d%s", c.typ, c.bs, strings.Join(c.extra, "")), func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			buildTree(t, src, treeOpts{blockSize: c.bs})
			img := mkfs(t, c.typ, c.bs, src, "24M", c.extra...)
			v := mustOpenImage(t, img, openOpts{})
			checked := 0
			err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return err
				}
				rel, _ := filepath.Rel(src, p)
				vp := "/" + filepath.ToSlash(rel)
				st, _ := os.Stat(p)
				if st.Size() == 0 {
					return nil
				}
				checkMapper(t, v, img, vp)
				checked++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("checked the mappers of %d files", checked)
		})
	}
}

func checkMapper(t *testing.T, v *testVolume, img, vp string) {
	t.Helper()
	ino, err := v.Lookup(vp)
	if err != nil {
		t.Fatal(err)
	}
	n, err := v.getNode(ino)
	if err != nil {
		t.Fatal(err)
	}
	defer v.putNode(n)
	o := newOracle(debugfsSegments(t, img, vp))
	out := testenv.Run(t, "debugfs", "-R", "stat "+vp, img)
	var blockcount uint64
	if i := strings.Index(out, "Blockcount: "); i < 0 {
		t.Fatalf("no Blockcount in debugfs stat:\n%s", out)
	} else if _, err := fmt.Sscanf(out[i:], "Blockcount: %d", &blockcount); err != nil {
		t.Fatal(err)
	}
	if n.inode().Blocks != blockcount {
		t.Errorf("%s: %d 512-byte blocks, debugfs says %d", vp, n.inode().Blocks, blockcount)
	}
	bs := uint64(v.sb.BlockSize)
	nblocks := (n.inode().Size + bs - 1) / bs
	_, indirect := n.m.Mapper().(*indirectMapper)
	ptrs := bs / 4
	for b := uint64(0); b < nblocks; {
		bm := mpage.BlockMap{Block: b, Len: int(nblocks - b)}
		if err := n.m.Mapper().MapBlocks(&bm); err != nil {
			t.Fatalf("%s: map %d: %v", vp, b, err)
		}
		if bm.Len < 1 || uint64(bm.Len) > nblocks-b {
			t.Fatalf("%s: map %d: len %d of %d", vp, b, bm.Len, nblocks-b)
		}
		end := b + uint64(bm.Len)
		for i := b; i < end; i++ {
			p, mapped := o.phys[i]
			switch {
			case mapped != (bm.Flags&mpage.Mapped != 0):
				t.Fatalf("%s: block %d: answer %v (run %d+%d), debugfs mapped=%v", vp, i, bm.Flags, b, bm.Len, mapped)
			case mapped && p != bm.PBlock+(i-b):
				t.Fatalf("%s: block %d: device block %d, debugfs %d", vp, i, bm.PBlock+(i-b), p)
			}
		}
		arrayEnd := end == nDirect || (end > nDirect && (end-nDirect)%ptrs == 0)
		if end < nblocks && o.continues(end) && !o.starts[end] && !(indirect && arrayEnd) {
			t.Errorf("%s: run %d+%d (%v) stops early: block %d continues it", vp, b, bm.Len, bm.Flags, end)
		}
		wantBoundary := indirect && bm.Flags&mpage.Mapped != 0 && arrayEnd
		if (bm.Flags&mpage.Boundary != 0) != wantBoundary {
			t.Errorf("%s: run %d+%d: flags %v, boundary expected %v", vp, b, bm.Len, bm.Flags, wantBoundary)
		}
		b = end
	}
}
