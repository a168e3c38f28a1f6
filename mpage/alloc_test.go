package mpage_test

import (
	"testing"

	"github.com/mpaged/mpaged/internal/invariants"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
)

// allocTarget is a mapping to measure allocations on: over the in-memory
// recorder ring (the engine alone), or over the native ring on a file.
type allocTarget struct {
	name string
	open func(t *testing.T, fileBytes, cacheBytes int64) *mpage.Mapping
}

var allocTargets = []allocTarget{
	{"recorder", func(t *testing.T, fileBytes, cacheBytes int64) *mpage.Mapping {
		return mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, DiskBytes: fileBytes, CacheBytes: cacheBytes,
			Size: fileBytes, NoRecord: true, Mapper: mpage.LinearMapper{Blocks: uint64(fileBytes / 4096)}}).Mapping
	}},
	{"native", func(t *testing.T, fileBytes, cacheBytes int64) *mpage.Mapping {
		return newNativeFile(t, make([]byte, fileBytes), cacheBytes).mapping
	}},
}

// TestReadWriteAllocs: the steady-state read and write paths allocate
// nothing per page. A step handles one page: a cold page of a sequential
// stream (readahead, eviction), a random miss through ReadAt, a random
// miss through a Reader, a page written (and every 64 pages written back);
// the cache is a quarter of the file, so pages are evicted all along.
// After three passes of warm-up (free lists, pools and index nodes reach
// their size), AllocsPerRun runs batches of 64 steps over two passes and
// must report 0: fewer than one allocation per 64 pages. What is left is
// not per page: a free list reaching a new high-water mark (a Bio of a
// size class a rare readahead window needs, a pool's ring growing), a few
// in a pass of 4096 pages.
func TestReadWriteAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts need full runs")
	}
	if testenv.RaceEnabled || invariants.Enabled {
		t.Skip("-race (sync.Pool drops items on purpose) or -tags invariants (checks box their arguments): allocation counts mean nothing")
	}
	const (
		fileBytes  = 16 << 20
		cacheBytes = 4 << 20
		pages      = fileBytes / mpage.PageSize
		batchPages = 64
	)
	type path struct {
		name string
		run  func(t *testing.T, m *mpage.Mapping) func()
	}
	paths := []path{
		{"sequential ReadAt", func(t *testing.T, m *mpage.Mapping) func() {
			buf := make([]byte, mpage.PageSize)
			next := int64(0)
			return func() {
				mustReadInto(t, m, buf, next*mpage.PageSize)
				next = (next + 1) % pages
			}
		}},
		{"random ReadAt", func(t *testing.T, m *mpage.Mapping) func() {
			buf := make([]byte, mpage.PageSize)
			x := uint64(1)
			return func() {
				x = xorshift(x)
				mustReadInto(t, m, buf, int64(x%pages)*mpage.PageSize)
			}
		}},
		{"random Reader", func(t *testing.T, m *mpage.Mapping) func() {
			rd := m.NewReader(32)
			x := uint64(1)
			t.Cleanup(func() { drainReader(rd) })
			return func() {
				for rd.InFlight() < rd.Depth() {
					x = xorshift(x)
					if err := rd.Start(x%pages, 1, 0); err != nil {
						t.Fatal(err)
					}
				}
				res, _ := rd.Wait()
				if res.Err != nil {
					t.Fatal(res.Err)
				}
				res.Page.Release()
			}
		}},
		{"write and write back", func(t *testing.T, m *mpage.Mapping) func() {
			buf := make([]byte, mpage.PageSize)
			next := int64(0)
			return func() {
				if _, err := m.WriteAt(buf, next*mpage.PageSize); err != nil {
					t.Fatal(err)
				}
				if next%64 == 63 {
					wbc := mpage.WritebackControl{SyncMode: mpage.SyncNone}
					if err := m.WritePages(&wbc); err != nil {
						t.Fatal(err)
					}
				}
				next = (next + 1) % pages
			}
		}},
	}
	for _, tg := range allocTargets {
		for _, p := range paths {
			t.Run(tg.name+"/"+p.name, func(t *testing.T) {
				m := tg.open(t, fileBytes, cacheBytes)
				fn := p.run(t, m)
				batch := func() {
					for range batchPages {
						fn()
					}
				}
				for range 3 * pages / batchPages { // warm up: three passes
					batch()
				}
				// AllocsPerRun's integer average per batch: 0 means
				// fewer allocations than one per batchPages pages.
				if allocs := testing.AllocsPerRun(2*pages/batchPages, batch); allocs != 0 {
					t.Errorf("%v allocations per %d pages", allocs, batchPages)
				}
			})
		}
	}
}

func mustReadInto(t *testing.T, m *mpage.Mapping, buf []byte, off int64) {
	if n, err := m.ReadAt(buf, off); err != nil || n != len(buf) {
		t.Fatalf("ReadAt(%d at %d) = %d, %v", len(buf), off, n, err)
	}
}

func xorshift(x uint64) uint64 {
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	return x
}
