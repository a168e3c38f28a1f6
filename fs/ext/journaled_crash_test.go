package ext

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/crashring"
)

// crashCuts is how many cut points each crash test tries: 20, or 200 with
// MPAGED_CRASH_CUTS=long (or any number).
func crashCuts() int {
	switch s := os.Getenv("MPAGED_CRASH_CUTS"); s {
	case "":
		return 20
	case "long":
		return 200
	default:
		var n int
		if _, err := fmt.Sscan(s, &n); err == nil && n > 0 {
			return n
		}
		return 20
	}
}

// ackedFile is a file whose File.Sync has returned: every later cut must
// hold it with data.
type ackedFile struct {
	path string
	data []byte
}

// journaledCuts takes cut images of a journaled volume on a crash ring as
// the workload runs: at a device flush being submitted (the moment with
// the most writes pending), each with probability want/300, until it has
// want. Each cut records how many files were acknowledged when it was
// taken.
type journaledCuts struct {
	t    *testing.T
	want int
	rng  *rand.Rand
	mu   sync.Mutex
	// acked is the workload's list, appended to as Syncs return.
	acked []ackedFile
	cuts  []journaledCut
}

type journaledCut struct {
	img   string
	acked int // acked[:n] must be there
	desc  string
}

func (jc *journaledCuts) ack(a ackedFile) {
	jc.mu.Lock()
	jc.acked = append(jc.acked, a)
	jc.mu.Unlock()
}

// beforeFlush is the crash ring's BeforeFlush.
func (jc *journaledCuts) beforeFlush(ring *crashring.Ring, fd int) {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	// About 300 flushes at the expected rate: the cuts spread over
	// several rounds of the workload, not its first seconds.
	if len(jc.cuts) >= jc.want || jc.rng.Float64()*300 >= float64(jc.want) {
		return
	}
	p := filepath.Join(jc.t.TempDir(), fmt.Sprintf("cut%d.img", len(jc.cuts)))
	im, err := ring.CutFileTo(fd, p, jc.rng)
	if err != nil {
		jc.t.Error(err)
		return
	}
	jc.cuts = append(jc.cuts, journaledCut{img: p, acked: len(jc.acked), desc: im.String()})
}

// crashWorkload writes files through v (some synced and then never
// touched again: acknowledged), renames, truncates, unlinks and writes
// past the end of (leaving a hole) files that were not acknowledged,
// makes and removes directories, and returns what was acknowledged, with
// rec's event count at each acknowledgement.
func crashWorkload(t *testing.T, v *testVolume, jc *journaledCuts, rng *rand.Rand, prefix string) {
	t.Helper()
	bs := v.BlockSize()
	if err := v.Mkdir(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	var loose []string // written, not acknowledged: free to change
	for i := range 60 {
		d := fmt.Sprintf("%s/c%d", prefix, i%4)
		if i < 4 {
			if err := v.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		p := fmt.Sprintf("%s/f%03d", d, i)
		data := randBytes(uint64(7000+i), 1+rng.IntN(40*bs))
		f, err := v.Create(p, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			jc.ack(ackedFile{path: p, data: data})
		} else {
			loose = append(loose, p)
		}
		f.Close()
		if len(loose) > 3 {
			j := rng.IntN(len(loose))
			q := loose[j]
			switch rng.IntN(4) {
			case 0:
				if err := v.Unlink(q); err != nil {
					t.Fatal(err)
				}
				loose = append(loose[:j], loose[j+1:]...)
			case 1:
				nq := q + "-renamed"
				if err := v.Rename(q, nq); err != nil {
					t.Fatal(err)
				}
				loose[j] = nq
			case 2:
				f, err := v.OpenWrite(q, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(int64(rng.IntN(3 * bs))); err != nil {
					t.Fatal(err)
				}
				f.Close()
			case 3:
				// Past the end: with blocks smaller than a page, a
				// hole in the page written (TestJournaledHoleInPage).
				f, err := v.OpenWrite(q, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(randBytes(uint64(i), 1+rng.IntN(bs)), f.Size()+int64(1+rng.IntN(2*bs))); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
		}
		if i%10 == 9 {
			tmp := fmt.Sprintf("%s/tmpdir%d", prefix, i)
			if err := v.Mkdir(tmp, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := v.Rmdir(tmp); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestJournaledCrash: a write workload on a journaled volume on a crash
// ring (uring/crashring, writes kept whole: NoTear) is cut at random
// device flushes. Every cut image, replayed by opening it read-write,
// passes e2fsck -fn (no repair) and holds every file acknowledged (its
// File.Sync returned) before the cut with its bytes; the kernel (mounting
// another copy) and e2fsck -fy (a third) replay it to the same tree.
//
// The commit timer runs every 20 ms, so transactions also end between the
// workload's syncs, as the daemon's 5 s timer ends them: a change split
// over two commits shows in a cut between them (the writeback allocation
// of TestJournaledHoleInPage failed the ext3/1k case within seconds).
func TestJournaledCrash(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	setCommitInterval(t, 20*time.Millisecond)
	for _, c := range []struct {
		name, typ string
		bs        int
		// wraps: the log (1024 blocks, mke2fs's least, on a 32 MiB
		// ext4) fills and is checkpointed inside Commit during the
		// workload; checked.
		wraps bool
	}{{"ext4/4k", "ext4", 4096, true}, {"ext3/1k", "ext3", 1024, false}} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.typ, c.bs, "", "32M")
			jc := &journaledCuts{t: t, want: crashCuts(), rng: rand.New(rand.NewPCG(uint64(c.bs), 12))}
			var ring *crashring.Ring
			v := mustOpenImage(t, img, openOpts{rw: true, wrap: func(r uring.Ring) uring.Ring {
				ring = crashring.New(r, crashring.Config{NoTear: true, BeforeFlush: func(fd int) { jc.beforeFlush(ring, fd) }})
				return ring
			}})
			seq0 := v.jnl.j.Superblock().Sequence
			for round := 0; len(jc.cuts) < jc.want && round < 60; round++ {
				crashWorkload(t, v, jc, rand.New(rand.NewPCG(uint64(round), 3)), fmt.Sprintf("/r%d", round))
			}
			// The journal superblock's s_sequence is the first
			// transaction since the log was last empty: it moves only
			// when a full log was checkpointed.
			first := v.jnl.j.Superblock().Sequence
			t.Logf("log restarted at transaction %d (%d at open, %d now)", first, seq0, v.jnl.j.Sequence())
			if c.wraps && first < seq0+10 {
				t.Errorf("the log starts at transaction %d (%d at open): it never filled", first, seq0)
			}
			if n := v.strayAllocs.Load(); n != 0 {
				t.Errorf("%d allocations by writeback, outside a handle", n)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, img)
			if len(jc.cuts) < jc.want {
				t.Fatalf("%d cuts taken, want %d", len(jc.cuts), jc.want)
			}
			for i, cut := range jc.cuts {
				checkCut(t, c.typ, cut.img, fmt.Sprintf("cut %d (%s)", i, cut.desc), jc.acked[:cut.acked])
			}
			t.Logf("%d cuts, %d files acknowledged in all", len(jc.cuts), len(jc.acked))
		})
	}
}

// checkCut replays the cut image img three ways and checks them, and that
// a read-only open before any of them showed the same tree (device
// untouched).
func checkCut(t *testing.T, typ, img, cut string, acked []ackedFile) {
	t.Helper()
	byKernel, byFsck := copyFile(t, img), copyFile(t, img)
	view, _ := roView(t, img, false)
	v := mustOpenImage(t, img, openOpts{rw: true})
	for _, a := range acked {
		readBack(t, v, a.path, a.data)
	}
	ours := snapshotTree(t, v.Volume)
	if err := v.Close(); err != nil {
		t.Fatalf("%s: close: %v", cut, err)
	}
	sameTree(t, fmt.Sprintf("%s: read-only view (journal shown, not replayed) vs our replay", cut), view, ours)
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("%s: e2fsck -fn after our replay: %v\n%s", cut, err, out)
	}
	if out, err := testenv.Output("e2fsck", "-fy", byFsck); err != nil && !testenv.OnlySummaryFixed(err, out) {
		t.Fatalf("%s: e2fsck -fy: %v\n%s", cut, err, out)
	}
	sameTree(t, fmt.Sprintf("%s: ours vs e2fsck's replay", cut), ours,
		snapshotTree(t, mustOpenImage(t, byFsck, openOpts{readOnly: true}).Volume))
	if os.Geteuid() == 0 {
		mnt, done := mountRO(t, byKernel, typ)
		sameTree(t, fmt.Sprintf("%s: ours vs the kernel's replay", cut), ours, snapshotDir(t, mnt))
		done()
	}
	for _, p := range []string{img, byKernel, byFsck} {
		os.Remove(p)
	}
}
