package ext

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mpaged/mpaged/mpage"
)

// stepClock is a clock that moves only when told to.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// waitWriteback waits until no page of v's cached mappings is under
// writeback.
func (v *Volume) waitWriteback() {
	v.mu.Lock()
	ms := []*mpage.Mapping{v.meta}
	for _, n := range v.nodes {
		ms = append(ms, n.m)
	}
	v.mu.Unlock()
	for _, m := range ms {
		m.WaitWriteback(0, 1<<62-1)
	}
}

// TestFlusherWritesBack: files written through a writable volume and never
// synced reach the image by background writeback alone, data and metadata:
// a second engine opening the image read-only (while the writer still has
// it) finds every file with its size and bytes, and every directory. Two
// files are written straight into their mappings, so writeback allocates
// their blocks and WriteInode commits their inodes: one written back by
// the flusher, one by another writeback (its inode mark lists it). After
// the writer's Close, e2fsck -fn finds nothing.
func TestFlusherWritesBack(t *testing.T) {
	for _, c := range []struct {
		typ   string
		bs    int
		extra []string
	}{{"ext2", 1024, nil}, {"ext2", 4096, nil}, {"ext4", 1024, noJournal}, {"ext4", 4096, noJournal}} {
		t.Run(fmt.Sprintf("%s-%dk", c.typ, c.bs/1024), func(t *testing.T) {
			w := newWenv(t, c.typ, c.bs, "16M", "", c.extra...)
			clock := &stepClock{t: time.Unix(1_700_000_000, 0)}
			fl, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: w.v.cache, Now: clock.Now,
				Interval: time.Second, ExpireAge: 5 * time.Second, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { fl.Stop(context.Background()) })

			w.mkdir("/d")
			w.put("/d/a", randBytes(1, 300_000))
			w.put("/d/small", []byte("hello"))
			w.writeAt("/b", 5000, randBytes(2, 70_000))
			w.writeAt("/b", 200_000, randBytes(3, 3*c.bs))
			f, err := w.v.Create("/wb", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			data := randBytes(4, (nDirect+c.bs/4+9)*c.bs+100)
			if _, err := f.Mapping().WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
			w.files["/wb"] = data
			// /wb2's pages are written by someone else's writeback (a
			// throttled writer's): the allocation leaves its inode to
			// commit with no page of it dirty, and the inode mark keeps
			// it listed for the flusher.
			f2, err := w.v.Create("/wb2", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			data2 := randBytes(5, 7*c.bs+10)
			m2 := f2.Mapping()
			if _, err := m2.WriteAt(data2, 0); err != nil {
				t.Fatal(err)
			}
			if err := m2.WritePages(&mpage.WritebackControl{SyncMode: mpage.SyncNone}); err != nil {
				t.Fatal(err)
			}
			if _, listed := m2.DirtiedWhen(); !listed || m2.DirtyPages() != 0 {
				t.Fatalf("/wb2 after its writeback: listed %v with %d dirty pages; want listed by the inode mark", listed, m2.DirtyPages())
			}
			f2.Close()
			w.files["/wb2"] = data2

			passes := 0
			for ; w.v.cache.Stats().DirtyMappings > 0; passes++ {
				if passes == 20 {
					t.Fatalf("cache still dirty after %d passes: %+v", passes, w.v.cache.Stats())
				}
				clock.Advance(6 * time.Second)
				fl.RunPass()
				w.v.waitWriteback()
			}
			st := w.v.stats.Snapshot()
			if st.FlusherInodeWrites < 2 || st.FlusherExpiredPages == 0 || st.FlusherErrors != 0 {
				t.Fatalf("after %d passes: %d inode writes, %d expired pages, %d errors", passes,
					st.FlusherInodeWrites, st.FlusherExpiredPages, st.FlusherErrors)
			}
			if st.MapCalls[mpage.Write] == 0 {
				t.Fatal("writeback allocated nothing: /wb did not test WriteInode")
			}

			r := mustOpenImage(t, w.img, openOpts{})
			reader := *w
			reader.v = r
			reader.verifyEngine("written back, read by a second engine")
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if err := fl.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			w.verify() // Close, e2fsck -fn, debugfs, the kernel's driver
		})
	}
}
