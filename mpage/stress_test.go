package mpage_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
)

// TestConcurrentStress runs writers, readers, background writeback, fsyncs
// and eviction (a cache a quarter of the file) on one mapping under -race,
// against a model of the file.
//
// The file is split into 512-byte chunks; runs of 3 chunks belong to one
// writer each, so runs straddle pages and writers share pages. A writer
// writes its runs with increasing versions (the byte value). For each chunk
// the model keeps started (the version of the last write begun) and
// committed (of the last write returned): a reader must see, in every byte,
// a version between committed before its read and started after it. At the
// end every byte must hold its committed version in the cache, on the device
// and after the cache is dropped.
func TestConcurrentStress(t *testing.T) {
	for _, tc := range []struct {
		name   string
		block  int
		script string
		linear bool
		// budget, if set, is the BioSet's: room for two 4-vec Bios, so
		// reads and writes halve, take the reserve and wait for Frees
		// all the time, and the mapper's indirect-block reads nest in
		// writeback's and readahead's mapper calls while those hold a
		// Bio.
		budget int64
	}{
		{"linear-4k", 4096, "", true, 0},
		{"alloc-1k", 1024, "alloc at 64", false, 0},
		{"alloc-1k-tight-budget", 1024, "alloc at 64\nindirect 0-511 at 60\nindirect 512-1023 at 61", false, 2 * (256 + 4*32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const (
				fileBytes = 1 << 20
				chunk     = 512
				run       = 3
				writers   = 4
				readers   = 3
				versions  = 200
			)
			cfg := mpagetest.EnvConfig{BlockSize: tc.block, DiskBytes: 4 << 20, CacheBytes: fileBytes / 4,
				NoPattern: true, Script: tc.script, Size: fileBytes, NoRecord: true,
				Bios: alloc.BioSetConfig{BudgetBytes: tc.budget}}
			if tc.linear {
				cfg.Mapper = mpage.LinearMapper{Blocks: 4 << 20 / uint64(tc.block)}
			}
			e := mpagetest.NewEnvWith(t, cfg)
			m := e.Mapping
			m.SetReadahead(32)
			nChunks := fileBytes / chunk
			started := make([]atomic.Uint32, nChunks)
			committed := make([]atomic.Uint32, nChunks)
			owner := func(c int) int { return (c / run) % writers }

			var wg sync.WaitGroup
			var failed atomic.Bool
			fail := func(format string, args ...any) {
				if failed.CompareAndSwap(false, true) {
					t.Errorf(format, args...)
				}
			}
			stop := make(chan struct{})

			var writersWG sync.WaitGroup
			for w := range writers {
				writersWG.Add(1)
				go func() {
					defer writersWG.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					var mine []int // first chunk of each run this writer owns
					for c := 0; c < nChunks; c += run {
						if owner(c) == w {
							mine = append(mine, c)
						}
					}
					buf := make([]byte, run*chunk*4)
					for v := 1; v <= versions && !failed.Load(); v++ {
						// One to four consecutive runs of this writer:
						// they are not adjacent, so write each.
						k := 1 + rng.IntN(4)
						i0 := rng.IntN(len(mine))
						for j := range k {
							c0 := mine[(i0+j)%len(mine)]
							c1 := min(c0+run, nChunks)
							// Sometimes only part of the run.
							if rng.IntN(4) == 0 {
								c1 = c0 + 1 + rng.IntN(c1-c0)
							}
							for c := c0; c < c1; c++ {
								started[c].Store(uint32(v))
							}
							b := buf[:(c1-c0)*chunk]
							for i := range b {
								b[i] = byte(v)
							}
							if _, err := m.WriteAt(b, int64(c0*chunk)); err != nil {
								fail("writer %d: %v", w, err)
								return
							}
							for c := c0; c < c1; c++ {
								committed[c].Store(uint32(v))
							}
						}
					}
				}()
			}
			for r := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(r), 2))
					buf := make([]byte, 64<<10)
					lo := make([]uint32, len(buf)/chunk+2)
					for {
						select {
						case <-stop:
							return
						default:
						}
						n := 1 + rng.IntN(len(buf))
						off := rng.Int64N(fileBytes - int64(n))
						c0, c1 := int(off/chunk), int((off+int64(n)-1)/chunk)
						for c := c0; c <= c1; c++ {
							lo[c-c0] = committed[c].Load()
						}
						got, err := m.ReadAt(buf[:n], off)
						if err != nil || got != n {
							fail("reader %d: ReadAt(%d at %d) = %d, %v", r, n, off, got, err)
							return
						}
						for i := range n {
							c := int((off + int64(i)) / chunk)
							v := uint32(buf[i])
							if hi := started[c].Load(); v < lo[c-c0] || v > hi {
								fail("reader %d: byte %d (chunk %d) = %d, want %d..%d", r, off+int64(i), c, v, lo[c-c0], hi)
								return
							}
						}
					}
				}()
			}
			wg.Add(1)
			go func() { // an asynchronous reader: many pages in flight
				defer wg.Done()
				if err := stressAsyncReader(m, stop, fileBytes/mpage.PageSize, func(c int) (uint32, uint32) {
					return committed[c].Load(), started[c].Load()
				}); err != nil {
					fail("async reader: %v", err)
				}
			}()
			wg.Add(2)
			go func() { // background writeback
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					wbc := mpage.WritebackControl{SyncMode: mpage.SyncNone, NrToWrite: 32, Nonblocking: true}
					if err := m.WritePages(&wbc); err != nil {
						fail("writeback: %v", err)
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
			go func() { // fsyncs of random ranges
				defer wg.Done()
				rng := rand.New(rand.NewPCG(9, 9))
				for {
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
					a := rng.Int64N(fileBytes)
					if err := m.WriteAndWait(a, a+rng.Int64N(256<<10)); err != nil {
						fail("fsync: %v", err)
						return
					}
				}
			}()
			writersWG.Wait()
			close(stop)
			wg.Wait()
			if failed.Load() {
				return
			}
			if err := m.WriteAndWait(0, -1); err != nil {
				t.Fatal(err)
			}
			e.Drain()
			want := make([]byte, fileBytes)
			for c := range nChunks {
				v := byte(committed[c].Load())
				for i := range chunk {
					want[c*chunk+i] = v
				}
			}
			checkEqual(t, "cache", mustRead(t, m, fileBytes, 0), want)
			checkEqual(t, "device", deviceView(e, fileBytes), want)
			dropCache(t, m)
			checkEqual(t, "reread", mustRead(t, m, fileBytes, 0), want)
			st := e.Stats.Snapshot()
			t.Logf("evictions %d, throttle waits %d, write bios %d (%d pages), read bios %d, block I/Os %d/%d, cache %+v",
				st.Evictions, st.ThrottleWaits, st.Bios[mpage.Write], st.BioPages[mpage.Write], st.Bios[mpage.Read],
				st.BlockIOs[mpage.Read], st.BlockIOs[mpage.Write], e.Cache.Stats())
			if st.Evictions == 0 {
				t.Error("no evictions: the test did not exercise them")
			}
			if bs := e.Dev.BioStats(); tc.budget > 0 {
				t.Logf("bios: %+v", bs)
				if bs.Degraded == 0 || bs.ReserveUsed+bs.Waits == 0 {
					t.Error("the budget never ran short: the test did not exercise it")
				}
			}
		})
	}
}

// stressAsyncReader reads random pages through a Reader, 16 in flight,
// until stop, and checks every 512-byte chunk of each page against
// versions(chunk): its committed version when the read started and its
// started version when it completed bound what the page may hold.
func stressAsyncReader(m *mpage.Mapping, stop <-chan struct{}, pages int, versions func(c int) (lo, hi uint32)) error {
	const chunk, perPage = 512, mpage.PageSize / 512
	rd := m.NewReader(16)
	rng := rand.New(rand.NewPCG(7, 7))
	// lo[page] are the versions of the page's chunks when its last read
	// started: a later read of the same page raises them, which a read
	// in flight still meets (a version never goes down).
	lo := make([][perPage]uint32, pages)
	var data [mpage.PageSize]byte
	defer drainReader(rd)
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		for rd.InFlight() < rd.Depth() {
			idx := rng.IntN(pages)
			for i := range perPage {
				lo[idx][i], _ = versions(idx*perPage + i)
			}
			if err := rd.Start(uint64(idx), 1, uint64(idx)); err != nil {
				return err
			}
		}
		res, _ := rd.Wait()
		if res.Err != nil {
			return fmt.Errorf("page %d: %w", res.Index, res.Err)
		}
		// Copy first, as ReadAt does: writers may change the page
		// meanwhile, and the versions they started bound what the copy
		// holds only when read after it.
		copy(data[:], res.Page.Data)
		res.Page.Release()
		for i := range perPage {
			_, hi := versions(int(res.Index)*perPage + i)
			for _, v := range data[i*chunk : (i+1)*chunk] {
				if uint32(v) < lo[res.Index][i] || uint32(v) > hi {
					return fmt.Errorf("page %d chunk %d holds %d, want %d..%d", res.Index, i, v, lo[res.Index][i], hi)
				}
			}
		}
	}
}

// drainReader waits for every read rd has in flight and drops its pages.
func drainReader(rd *mpage.Reader) {
	for {
		res, ok := rd.Wait()
		if !ok {
			return
		}
		if res.Page != nil {
			res.Page.Release()
		}
	}
}

// deviceView assembles the file's bytes from the device through the
// mapper's extents (or linearly for a LinearMapper).
func deviceView(e *mpagetest.Env, n int) []byte {
	out := make([]byte, n)
	if _, ok := e.Mapping.Mapper().(mpage.LinearMapper); ok {
		copy(out, e.Disk())
		return out
	}
	bs := int64(e.BlockSize)
	for _, x := range e.Mapper.Extents() {
		for i := range x.N {
			fo := int64(x.Start+i) * bs
			if fo >= int64(n) {
				break
			}
			do := int64(x.PBlock+i) * bs
			copy(out[fo:min(fo+bs, int64(n))], e.Disk()[do:do+bs])
		}
	}
	return out
}

// TestConcurrentTruncate races truncates (down and up) with readers,
// writers, writeback and eviction. The data is not modelled; the test is
// for the page lifecycle: no panic (unlock of an unlocked page, a page
// released too often, a frame freed twice), no deadlock, no error other
// than EOF, and a consistent cache at the end.
func TestConcurrentTruncate(t *testing.T) {
	const fileBytes = 1 << 20
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 1024, DiskBytes: 4 << 20, CacheBytes: fileBytes / 4,
		Size: fileBytes, NoRecord: true, Mapper: mpage.LinearMapper{Blocks: 4096}})
	m := e.Mapping
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		if failed.CompareAndSwap(false, true) {
			t.Errorf(format, args...)
		}
	}
	worker := func(seed uint64, fn func(rng *rand.Rand) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 3))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fn(rng); err != nil {
					fail("%v", err)
					return
				}
			}
		}()
	}
	buf := func() []byte { return make([]byte, 40000) }
	for i := range 3 {
		b := buf()
		worker(uint64(i), func(rng *rand.Rand) error {
			n := 1 + rng.IntN(len(b))
			_, err := m.ReadAt(b[:n], rng.Int64N(fileBytes))
			if err != nil && err != io.EOF {
				return fmt.Errorf("read: %w", err)
			}
			return nil
		})
	}
	for i := range 2 {
		b := buf()
		worker(10+uint64(i), func(rng *rand.Rand) error {
			n := 1 + rng.IntN(len(b))
			_, err := m.WriteAt(b[:n], rng.Int64N(fileBytes-int64(n)))
			return err
		})
	}
	wg.Add(1)
	go func() { // an asynchronous reader: many pages in flight
		defer wg.Done()
		rd := m.NewReader(8)
		defer drainReader(rd)
		rng := rand.New(rand.NewPCG(40, 3))
		for {
			select {
			case <-stop:
				return
			default:
			}
			for rd.InFlight() < rd.Depth() {
				if err := rd.Start(uint64(rng.IntN(fileBytes/mpage.PageSize)), 1, 0); err != nil {
					fail("async read: %v", err)
					return
				}
			}
			res, _ := rd.Wait()
			if res.Err != nil && !errors.Is(res.Err, io.EOF) {
				fail("async read of page %d: %v", res.Index, res.Err)
				return
			}
			if res.Page != nil {
				res.Page.Release()
			}
		}
	}()
	worker(20, func(rng *rand.Rand) error {
		wbc := mpage.WritebackControl{SyncMode: mpage.SyncNone, NrToWrite: 64}
		return m.WritePages(&wbc)
	})
	worker(21, func(rng *rand.Rand) error {
		time.Sleep(time.Millisecond)
		return m.WriteAndWait(0, -1)
	})
	worker(30, func(rng *rand.Rand) error {
		time.Sleep(500 * time.Microsecond)
		if err := m.Truncate(rng.Int64N(fileBytes)); err != nil {
			return err
		}
		time.Sleep(500 * time.Microsecond)
		m.SetSize(fileBytes) // grow again (a truncate up)
		return nil
	})
	time.Sleep(time.Second)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		for i := uint64(0); i < fileBytes/mpage.PageSize; i++ {
			if p := mpage.FindPage(m, i); p != nil {
				if p.Flags()&(mpage.Locked|mpage.Writeback) != 0 {
					fmt.Fprintf(os.Stderr, "stuck: page %d: %s\n", i, p.Flags())
				}
				p.Release()
			}
		}
		fmt.Fprintf(os.Stderr, "stuck: size %d, ring in flight %d, held %d, cache %+v\n", m.Size(), e.Ring.InFlight(), e.Ring.Held(), e.Cache.Stats())
		buf := make([]byte, 1<<20)
		fmt.Fprintf(os.Stderr, "%s\n", buf[:runtime.Stack(buf, true)])
		t.Fatal("workers did not stop: deadlock?")
	}
	if failed.Load() {
		return
	}
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	st := e.Cache.Stats()
	if st.Dirty != 0 || st.Writeback != 0 || st.Pages != m.Pages() || st.FramesInUse != int64(st.Pages) {
		t.Fatalf("cache after the storm: %+v, mapping pages %d", st, m.Pages())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if st := e.Cache.Stats(); st.Pages != 0 || st.FramesInUse != 0 {
		t.Fatalf("after Close: %+v", st)
	}
	t.Logf("evictions %d", e.Stats.Evictions.Load())
}
