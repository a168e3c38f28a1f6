package mpage_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// fill returns n bytes of a pattern that names its offset and seed, so a
// misplaced page shows.
func fill(n int, off int64, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		o := off + int64(i)
		b[i] = byte(o>>12) ^ byte(o) ^ seed
	}
	return b
}

func mustWrite(t *testing.T, m *mpage.Mapping, b []byte, off int64) {
	t.Helper()
	if n, err := m.WriteAt(b, off); err != nil || n != len(b) {
		t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(b), off, n, err)
	}
}

func mustRead(t *testing.T, m *mpage.Mapping, n int, off int64) []byte {
	t.Helper()
	b := make([]byte, n)
	got, err := m.ReadAt(b, off)
	if err != nil && !(err == io.EOF && got == n) {
		t.Fatalf("ReadAt(%d at %d) = %d, %v", n, off, got, err)
	}
	return b[:got]
}

// linearEnv is an Env whose file is the whole disk (block n at device block
// n), with the given cache size.
func linearEnv(t testing.TB, diskBytes, cacheBytes int64, size int64) *mpagetest.Env {
	return mpagetest.NewEnvWith(t, mpagetest.EnvConfig{
		BlockSize: 4096, DiskBytes: diskBytes, CacheBytes: cacheBytes, Size: size,
		Mapper: mpage.LinearMapper{Blocks: uint64(diskBytes / 4096)},
	})
}

// TestPageLockTable: many goroutines take the same page lock; the counter it
// guards is a plain int, so the race detector checks that Lock/Unlock order
// memory. A second table spreads the goroutines over many pages (many wait
// buckets, shared buckets).
func TestPageLockTable(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pages      int
		goroutines int
		iters      int
	}{
		{"one page", 1, 16, 2000},
		{"eight pages", 8, 32, 500},
		{"many pages share buckets", 600, 8, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := linearEnv(t, 8<<20, 8<<20, 8<<20)
			pages := make([]*mpage.Page, tc.pages)
			for i := range pages {
				p, _, err := mpage.GrabPage(e.Mapping, uint64(i))
				if err != nil {
					t.Fatal(err)
				}
				p.Unlock()
				pages[i] = p
			}
			counts := make([]int, tc.pages)
			var wg sync.WaitGroup
			for g := range tc.goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range tc.iters {
						k := (g + i) % tc.pages
						p := pages[k]
						if i%3 == 0 {
							for !p.TryLock() {
								p.WaitUnlocked()
							}
						} else {
							mpage.LockPage(p)
						}
						if !p.Has(mpage.Locked) {
							t.Error("Lock returned without the page locked")
						}
						counts[k]++
						p.Unlock()
					}
				}()
			}
			wg.Wait()
			total := 0
			for _, c := range counts {
				total += c
			}
			if want := tc.goroutines * tc.iters; total != want {
				t.Fatalf("counted %d, want %d", total, want)
			}
			for _, p := range pages {
				if p.Has(mpage.Locked) {
					t.Fatalf("page %d still locked", p.Index)
				}
				p.Release()
			}
		})
	}
}

// TestWritebackWaitTable: goroutines sleep on pages under writeback (held
// in the ring) and all wake when the writes complete; WaitWriteback on a
// page not under writeback returns at once.
func TestWritebackWaitTable(t *testing.T) {
	e := linearEnv(t, 8<<20, 8<<20, 0)
	const n = 40
	mustWrite(t, e.Mapping, fill(n*mpage.PageSize, 0, 1), 0)
	e.Ring.Hold()
	if err := e.Mapping.WritePages(&mpage.WritebackControl{SyncMode: mpage.SyncAll}); err != nil {
		t.Fatal(err)
	}
	var woke sync.WaitGroup
	var waiting sync.WaitGroup
	var early atomicBool
	for i := range n {
		p := mpage.FindPage(e.Mapping, uint64(i))
		if !p.Has(mpage.Writeback) {
			t.Fatalf("page %d not under writeback", i)
		}
		for range 3 {
			woke.Add(1)
			waiting.Add(1)
			go func() {
				defer woke.Done()
				waiting.Done()
				p.WaitWriteback()
				if p.Has(mpage.Writeback) {
					early.set()
				}
			}()
		}
		defer p.Release()
	}
	waiting.Wait()
	time.Sleep(20 * time.Millisecond)
	if e.Ring.Held() == 0 {
		t.Fatal("writes completed while held")
	}
	e.Ring.Release()
	done := make(chan struct{})
	go func() { woke.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waiters not woken")
	}
	if early.get() {
		t.Fatal("a waiter woke with the page still under writeback")
	}
	p := mpage.FindPage(e.Mapping, 0)
	p.WaitWriteback() // not under writeback: returns
	p.Release()
}

type atomicBool struct {
	mu sync.Mutex
	v  bool
}

func (a *atomicBool) set() { a.mu.Lock(); a.v = true; a.mu.Unlock() }
func (a *atomicBool) get() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}

// TestCacheLimitEviction: a cache of N pages reading 4N pages stays within
// its limit by evicting clean pages (CLOCK), and never evicts dirty ones.
func TestCacheLimitEviction(t *testing.T) {
	for _, ra := range []int{0, 8, mpage.MaxReadahead} {
		t.Run(fmt.Sprintf("readahead=%d", ra), func(t *testing.T) {
			const limit = 64 // pages
			const fileBytes = 4 * limit * mpage.PageSize
			e := linearEnv(t, 4<<20, limit*mpage.PageSize, 0)
			want := fill(fileBytes, 0, 7)
			copy(e.Disk(), want)
			e.Mapping.SetSize(fileBytes)
			e.Mapping.SetReadahead(ra)
			if got := e.Cache.Stats().Limit; got != limit {
				t.Fatalf("limit %d pages, want %d", got, limit)
			}
			// Dirty pages at the far end of the file, never written back.
			dirty := fill(8*mpage.PageSize, 0, 99)
			dirtyOff := int64(fileBytes - 8*mpage.PageSize)
			mustWrite(t, e.Mapping, dirty, dirtyOff)

			maxPages := 0
			for off := int64(0); off < dirtyOff; off += mpage.PageSize {
				got := mustRead(t, e.Mapping, mpage.PageSize, off)
				if !bytes.Equal(got, want[off:off+mpage.PageSize]) {
					t.Fatalf("page at %d: wrong data", off)
				}
				maxPages = max(maxPages, e.Cache.Stats().Pages)
			}
			e.Drain()
			st := e.Cache.Stats()
			ev := e.Stats.Evictions.Load()
			t.Logf("pages %d (max seen %d) limit %d evictions %d", st.Pages, maxPages, st.Limit, ev)
			if st.Pages > st.Limit {
				t.Errorf("cache holds %d pages, limit %d", st.Pages, st.Limit)
			}
			if ev == 0 {
				t.Error("no evictions")
			}
			for i := range 8 {
				p := mpage.FindPage(e.Mapping, uint64(dirtyOff/mpage.PageSize)+uint64(i))
				if p == nil {
					t.Fatalf("dirty page %d evicted", i)
				}
				if !p.Has(mpage.Dirty) || !bytes.Equal(p.Data, dirty[i*mpage.PageSize:(i+1)*mpage.PageSize]) {
					t.Errorf("dirty page %d: flags %s or data changed", i, p.Flags())
				}
				p.Release()
			}
		})
	}
}

// TestDirtyThrottle: writing far more than the dirty limit throttles the
// writer (it writes back and waits), and all data is right afterwards, in
// the cache and on the disk.
func TestDirtyThrottle(t *testing.T) {
	const cachePages = 64
	e := linearEnv(t, 4<<20, cachePages*mpage.PageSize, 0)
	lim := e.Cache.Stats().DirtyLimit
	data := fill(320*mpage.PageSize, 0, 3)
	for off := 0; off < len(data); off += 64 << 10 {
		mustWrite(t, e.Mapping, data[off:off+64<<10], int64(off))
		if st := e.Cache.Stats(); st.Dirty > lim+64 {
			t.Errorf("dirty %d far over the limit %d", st.Dirty, lim)
		}
	}
	if w := e.Stats.ThrottleWaits.Load(); w == 0 {
		t.Errorf("no throttle waits writing %d pages with a dirty limit of %d", len(data)/mpage.PageSize, lim)
	}
	if err := e.Mapping.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	if !bytes.Equal(e.Disk()[:len(data)], data) {
		t.Fatal("disk differs from what was written")
	}
	if got := mustRead(t, e.Mapping, len(data), 0); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if st := e.Cache.Stats(); st.Dirty != 0 || st.Writeback != 0 {
		t.Fatalf("after WriteAndWait: %d dirty, %d writeback", st.Dirty, st.Writeback)
	}
}

// TestReadaheadGrowth: a sequential reader's readahead windows start at 16
// pages and double to 256, each one multipage Bio, started by the marker
// page before the reader runs out.
func TestReadaheadGrowth(t *testing.T) {
	const fileBytes = 8 << 20
	e := linearEnv(t, fileBytes, 64<<20, fileBytes)
	for off := int64(0); off < fileBytes; off += 4096 {
		mustRead(t, e.Mapping, 4096, off)
	}
	e.Drain()
	var sizes []int
	for _, r := range e.Ring.Records() {
		if r.Op != uring.OpReadv {
			t.Fatalf("unexpected %s", r)
		}
		sizes = append(sizes, r.Vecs)
	}
	t.Logf("bio sizes: %v", sizes)
	want := []int{16, 32, 64, 128, 256}
	if len(sizes) < len(want)+1 {
		t.Fatalf("only %d bios", len(sizes))
	}
	for i, w := range want {
		if sizes[i] != w {
			t.Fatalf("bio %d has %d pages, want %d (all: %v)", i, sizes[i], w, sizes)
		}
	}
	total := 0
	for i, s := range sizes {
		total += s
		if i >= len(want) && i < len(sizes)-1 && s != mpage.MaxReadahead {
			t.Errorf("bio %d has %d pages, want %d", i, s, mpage.MaxReadahead)
		}
	}
	if total != fileBytes/mpage.PageSize {
		t.Errorf("read %d pages, file has %d", total, fileBytes/mpage.PageSize)
	}
	if m := e.Stats.CacheMisses.Load(); m != 1 {
		t.Errorf("%d cache misses, want 1 (readahead should stay ahead)", m)
	}
}

// TestTruncate: truncating down drops the pages past EOF (dirty ones too)
// and zeroes the tail of the block holding the new EOF, in the cache and on
// the device, so extending the file again shows zeroes there whether that
// page was cached, cached clean and then evicted, or not cached at all. The
// ScriptedMapper's Punch plays the file system freeing the blocks past EOF.
func TestTruncate(t *testing.T) {
	for _, bs := range []int{1024, 4096} {
		for _, how := range []string{"dirty", "clean", "uncached"} {
			t.Run(fmt.Sprintf("block=%d/%s", bs, how), func(t *testing.T) {
				e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: bs, DiskBytes: 1 << 20, Script: "alloc at 16"})
				m := e.Mapping
				data := fill(40000, 0, 5)
				mustWrite(t, m, data, 0)
				if err := m.WriteAndWait(0, -1); err != nil {
					t.Fatal(err)
				}
				switch how {
				case "dirty":
					mustWrite(t, m, fill(20000, 9000, 6), 9000)
					copy(data[9000:], fill(20000, 9000, 6))
				case "uncached":
					dropCache(t, m)
				}
				const cut = 10000
				if err := m.Truncate(cut); err != nil {
					t.Fatal(err)
				}
				e.Mapper.Punch(uint64((cut + bs - 1) / bs))
				if got := m.Size(); got != cut {
					t.Fatalf("size %d", got)
				}
				if n := m.Pages(); n > 3 {
					t.Errorf("%d pages cached after truncate to 3 pages", n)
				}
				buf := make([]byte, 20000)
				if n, err := m.ReadAt(buf, 0); n != cut || err != io.EOF || !bytes.Equal(buf[:n], data[:cut]) {
					t.Fatalf("read after truncate: %d, %v (data equal %v)", n, err, bytes.Equal(buf[:n], data[:n]))
				}
				if err := m.WriteAndWait(0, -1); err != nil {
					t.Fatal(err)
				}
				if how == "clean" {
					dropCache(t, m)
				}
				// Extend with a write past the old data: the gap reads zero.
				mustWrite(t, m, []byte("end"), 30000)
				want := append(append(append([]byte(nil), data[:cut]...), make([]byte, 30000-cut)...), "end"...)
				checkEqual(t, "after extending", mustRead(t, m, len(want), 0), want)
				if err := m.WriteAndWait(0, -1); err != nil {
					t.Fatal(err)
				}
				dropCache(t, m)
				checkEqual(t, "after extending, from the device", mustRead(t, m, len(want), 0), want)
			})
		}
	}
}

// dropCache writes nothing back: it drops every page (clean or not) and
// keeps i_size, as an eviction of everything would.
func dropCache(t *testing.T, m *mpage.Mapping) {
	t.Helper()
	size := m.Size()
	if err := m.Truncate(0); err != nil {
		t.Fatal(err)
	}
	m.SetSize(size)
}

func checkEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	i := 0
	for got[i] == want[i] {
		i++
	}
	t.Fatalf("%s: first difference at %d: got %#x, want %#x", what, i, got[i], want[i])
}

// TestWriteErrorAccounting: the mapping's write error stays until every page
// whose write failed has reached the device, and pages whose Error came from
// a failed read do not take part in that count.
func TestWriteErrorAccounting(t *testing.T) {
	e := linearEnv(t, 1<<20, 4<<20, 8*mpage.PageSize)
	m := e.Mapping
	// Page 0 fails to read: Error, not Uptodate.
	e.Ring.FailAt(uring.OpReadv, 0, syscall.EIO)
	if _, err := m.ReadAt(make([]byte, 10), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read error %v, want EIO", err)
	}
	e.Ring.ClearFaults()
	e.Drain()
	// Page 5 fails to write.
	mustWrite(t, m, fill(mpage.PageSize, 5*mpage.PageSize, 1), 5*mpage.PageSize)
	e.Ring.FailAt(uring.OpWritev, 5*mpage.PageSize, syscall.EIO)
	if err := m.WriteAndWait(0, -1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("WriteAndWait = %v, want EIO", err)
	}
	e.Ring.ClearFaults()
	// Page 0 is overwritten whole (no read needed) and written fine.
	mustWrite(t, m, fill(mpage.PageSize, 0, 2), 0)
	if err := m.WritePages(&mpage.WritebackControl{SyncMode: mpage.SyncAll, RangeStart: 0, RangeEnd: mpage.PageSize - 1}); err != nil {
		t.Fatal(err)
	}
	m.WaitWriteback(0, mpage.PageSize-1)
	if err := m.Err(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("page 5 still has not reached the device, but Err() = %v", err)
	}
	// Truncating a page whose read failed does not clear it either.
	e.Ring.FailAt(uring.OpReadv, 7*mpage.PageSize, syscall.EIO)
	if _, err := m.ReadAt(make([]byte, 10), 7*mpage.PageSize); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read error %v, want EIO", err)
	}
	e.Ring.ClearFaults()
	if err := m.Truncate(7 * mpage.PageSize); err != nil {
		t.Fatal(err)
	}
	if err := m.Err(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("after truncating a read-failed page, Err() = %v", err)
	}
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if err := m.Err(); err != nil {
		t.Fatalf("after the retry, Err() = %v", err)
	}
}

// TestRingRefuses: when the ring refuses a Bio (closed), the Bio completes
// on the spot as failed: readers get EIO instead of hanging on a locked
// page, writers keep their pages dirty and see the error.
func TestRingRefuses(t *testing.T) {
	e := linearEnv(t, 1<<20, 4<<20, 0)
	m := e.Mapping
	mustWrite(t, m, fill(3*mpage.PageSize, 0, 1), 0)
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	dropCache(t, m)
	mustWrite(t, m, fill(mpage.PageSize, 5*mpage.PageSize, 2), 5*mpage.PageSize)
	if err := e.Ring.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := m.ReadAt(make([]byte, 100), 0); !errors.Is(err, syscall.EIO) {
			t.Errorf("read on a closed ring: %v, want EIO", err)
		}
		if err := m.WriteAndWait(0, -1); !errors.Is(err, uring.ErrClosed) {
			t.Errorf("write-back on a closed ring: %v", err)
		}
		p := mpage.FindPage(m, 5)
		if p == nil || !p.Has(mpage.Dirty) || p.Has(mpage.Writeback) {
			t.Errorf("page 5 after a refused write: %v", p.Flags())
		}
		p.Release()
		if err := e.Dev.Flush(); !errors.Is(err, uring.ErrClosed) {
			t.Errorf("flush on a closed ring: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("hung on a closed ring")
	}
}

// TestFlushError: a failed device flush is reported.
func TestFlushError(t *testing.T) {
	e := linearEnv(t, 1<<20, 4<<20, 0)
	if err := e.Dev.Flush(); err != nil {
		t.Fatal(err)
	}
	e.Ring.Fail(mpagetest.Rule{Op: uring.OpFsync, Errno: syscall.EIO})
	if err := e.Dev.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush = %v, want EIO", err)
	}
}

// TestReadaheadRandom: a standalone random miss reads what was asked, not a
// readahead window; a miss at the start of the file or right after the
// previous read starts the initial window and sequential reads ramp up.
func TestReadaheadRandom(t *testing.T) {
	const fileBytes = 8 << 20
	e := linearEnv(t, fileBytes, 64<<20, fileBytes)
	m := e.Mapping
	for _, off := range []int64{5 << 20, 1 << 20, 3<<20 + 8192, 7 << 20} {
		mustRead(t, m, 4096, off)
	}
	mustRead(t, m, 3*4096, 6<<20) // three pages asked: three read
	e.Drain()
	var sizes []int
	for _, r := range e.Ring.Records() {
		sizes = append(sizes, r.Vecs)
	}
	if fmt.Sprint(sizes) != "[1 1 1 1 3]" {
		t.Fatalf("random reads: bio sizes %v, want [1 1 1 1 3]", sizes)
	}
	e.Ring.Reset()
	// Sequential from where the last random read (6 MiB, 3 pages) ended.
	for off := int64(6<<20 + 3*4096); off < 6<<20+64*4096; off += 4096 {
		mustRead(t, m, 4096, off)
	}
	e.Drain()
	sizes = sizes[:0]
	for _, r := range e.Ring.Records() {
		sizes = append(sizes, r.Vecs)
	}
	if len(sizes) < 3 || sizes[0] != 16 || sizes[1] != 32 {
		t.Fatalf("sequential after random: bio sizes %v, want 16, 32, ...", sizes)
	}
	e.Ring.Reset()
	// The start of the file gets the initial window outright.
	mustRead(t, m, 4096, 0)
	e.Drain()
	if r := e.Ring.Records(); len(r) != 1 || r[0].Vecs != 16 {
		t.Fatalf("read at 0: %v", r)
	}
}

// TestReadaheadWindowsAhead: once windows are full (256 pages), a stream
// keeps several in flight past its reader, so the device has the next Bio
// queued when one completes: four, or fewer when the cache is small (a
// quarter of it) or the ring is (a quarter of its entries). The reader
// reads pages 0..112; the marker of the last ramp-up window (page 112)
// starts the full windows.
func TestReadaheadWindowsAhead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cache    int64
		entries  int
		frontier int64 // pages covered by the reads started
	}{
		{"four", 64 << 20, 64, 1264},
		{"cache bound", 4 << 20, 64, 496},
		{"ring bound", 64 << 20, 8, 752},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const fileBytes = 16 << 20
			e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, DiskBytes: fileBytes, CacheBytes: tc.cache,
				Size: fileBytes, Entries: tc.entries, Mapper: mpage.LinearMapper{Blocks: fileBytes / 4096}})
			for page := int64(0); page <= 112; page++ {
				mustRead(t, e.Mapping, 4096, page*4096)
			}
			e.Drain()
			var frontier int64
			var sizes []int
			for _, r := range e.Ring.Records() {
				frontier = max(frontier, (r.Offset+int64(r.Len))/4096)
				sizes = append(sizes, r.Vecs)
			}
			if frontier != tc.frontier {
				t.Fatalf("reads cover pages up to %d, want %d (bio sizes %v)", frontier, tc.frontier, sizes)
			}
			for i, s := range sizes {
				if i >= 4 && s != mpage.MaxReadahead {
					t.Fatalf("bio %d has %d pages, want full windows (sizes %v)", i, s, sizes)
				}
			}
		})
	}
}

// TestDirtyThrottleWritesDeep: a writer throttled over the dirty limit
// writes the mapping down to half the limit before it waits, so many Bios
// are in flight, not one: with the ring holding completions and Bios of 4
// pages, the writer stuck in the throttle has at least half the limit
// under writeback.
func TestDirtyThrottleWritesDeep(t *testing.T) {
	const cachePages = 64
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, DiskBytes: 4 << 20, CacheBytes: cachePages * mpage.PageSize,
		MaxBioVecs: 4, Mapper: mpage.LinearMapper{Blocks: 1024}})
	lim := e.Cache.Stats().DirtyLimit
	e.Ring.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := e.Mapping.WriteAt(fill(48*mpage.PageSize, 0, 5), 0)
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats.ThrottleWaits.Load() == 0 || e.Cache.Stats().Writeback == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the writer was not throttled: %+v", e.Cache.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let it reach its wait
	if wb := e.Cache.Stats().Writeback; wb < lim/2 {
		t.Errorf("%d pages under writeback while throttled, want at least %d (half the limit %d)", wb, lim/2, lim)
	}
	e.Ring.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
