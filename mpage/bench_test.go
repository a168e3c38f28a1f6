package mpage_test

import (
	"runtime"
	"testing"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// benchTarget is what the benchmarks run on: a mapping and its ring.
type benchTarget struct {
	m     *mpage.Mapping
	ring  uring.Ring
	stats *mpage.Stats
}

const (
	benchFile   = 64 << 20 // bytes
	benchCache  = 16 << 20
	benchWindow = 256 // pages per iteration: one full Bio
)

func recorderTarget(b *testing.B) benchTarget {
	e := mpagetest.NewEnvWith(b, mpagetest.EnvConfig{BlockSize: 4096, DiskBytes: benchFile, CacheBytes: benchCache,
		Size: benchFile, NoRecord: true, Mapper: mpage.LinearMapper{Blocks: benchFile / 4096}})
	return benchTarget{m: e.Mapping, ring: e.Ring, stats: e.Stats}
}

func nativeTarget(b *testing.B) benchTarget {
	nf := newNativeFile(b, make([]byte, benchFile), benchCache)
	return benchTarget{m: nf.mapping, ring: nf.ring, stats: nf.dev.Stats()}
}

func BenchmarkReadPages(b *testing.B) {
	b.Run("recorder", func(b *testing.B) { benchReadPages(b, recorderTarget(b)) })
	b.Run("native", func(b *testing.B) { benchReadPages(b, nativeTarget(b)) })
}

func BenchmarkWritePages(b *testing.B) {
	b.Run("recorder", func(b *testing.B) { benchWritePages(b, recorderTarget(b)) })
	b.Run("native", func(b *testing.B) { benchWritePages(b, nativeTarget(b)) })
}

// benchReadPages reads the file a window at a time, cycling through it; the
// cache holds a quarter of the file, so every window evicts an old one:
// steady state for the read path, eviction included.
func benchReadPages(b *testing.B, tg benchTarget) {
	windows := uint64(benchFile / mpage.PageSize / benchWindow)
	read := func(i uint64) {
		start := (i % windows) * benchWindow
		n, err := tg.m.ReadPages(start, benchWindow, 0)
		if err != nil || n != benchWindow {
			b.Fatalf("ReadPages(%d) = %d, %v", start, n, err)
		}
		p := mpage.FindPage(tg.m, start+benchWindow-1)
		p.WaitUnlocked()
		if !p.Has(mpage.Uptodate) {
			b.Fatal("read failed")
		}
		p.Release()
	}
	// Warm up: fill the cache and the free lists.
	for i := range 2 * windows {
		read(i)
	}
	b.SetBytes(benchWindow * mpage.PageSize)
	b.ReportAllocs()
	measure(b, tg, mpage.Read, func(i int) { read(uint64(i) + 2*windows) })
}

// benchWritePages dirties a window (WriteAt of whole cached pages) and
// writes it back, cycling over windows that stay cached.
func benchWritePages(b *testing.B, tg benchTarget) {
	const windows = 8 // 8 MiB: fits the cache, under its dirty limit
	buf := make([]byte, benchWindow*mpage.PageSize)
	for i := range buf {
		buf[i] = byte(i)
	}
	write := func(i int) {
		off := int64(i%windows) * int64(len(buf))
		if _, err := tg.m.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		wbc := mpage.WritebackControl{SyncMode: mpage.SyncNone}
		if err := tg.m.WritePages(&wbc); err != nil || wbc.Written != benchWindow {
			b.Fatalf("WritePages: %d written, %v", wbc.Written, err)
		}
		tg.m.WaitWriteback(off, off+int64(len(buf))-1)
	}
	// Warm up: eight passes, not two. Besides the Bio free lists, the
	// mapping's tag trees (btree nodes from the cache's shared free list)
	// must settle: a completion ends writeback last page first, and the
	// writeback tree, emptied from its top end, takes a few dozen windows
	// to stop growing node slices (about 20 allocations in all, none per
	// window once settled).
	for i := range 8 * windows {
		write(i)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	measure(b, tg, mpage.Write, write)
}

// measure runs fn b.N times and reports SQEs per MiB, pages per Bio and
// heap allocations per page.
func measure(b *testing.B, tg benchTarget, dir mpage.Dir, fn func(i int)) {
	var ms0, ms1 runtime.MemStats
	st0 := tg.stats.Snapshot()
	r0 := tg.ring.Stats()
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fn(i)
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	st1 := tg.stats.Snapshot()
	r1 := tg.ring.Stats()
	pages := float64(b.N) * benchWindow
	mib := pages * mpage.PageSize / (1 << 20)
	b.ReportMetric(float64(r1.SQEs-r0.SQEs)/mib, "SQEs/MiB")
	if bios := st1.Bios[dir] - st0.Bios[dir]; bios > 0 {
		b.ReportMetric(float64(st1.BioPages[dir]-st0.BioPages[dir])/float64(bios), "pages/bio")
	}
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/pages, "allocs/page")
}

// BenchmarkReaderRandom: random 4 KiB page reads through a Reader, 32 in
// flight from one goroutine, on a file four times the cache: every read a
// miss that evicts (the engine's cost per random read, the ring's below).
// An iteration is 256 reads (1 MiB), like the window benchmarks'.
func BenchmarkReaderRandom(b *testing.B) {
	b.Run("recorder", func(b *testing.B) { benchReaderRandom(b, recorderTarget(b)) })
	b.Run("native", func(b *testing.B) { benchReaderRandom(b, nativeTarget(b)) })
}

func benchReaderRandom(b *testing.B, tg benchTarget) {
	const pages = benchFile / mpage.PageSize
	rd := tg.m.NewReader(32)
	x := uint64(1)
	step := func() {
		for rd.InFlight() < rd.Depth() {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			if err := rd.Start(x%pages, 1, 0); err != nil {
				b.Fatal(err)
			}
		}
		res, _ := rd.Wait()
		if res.Err != nil {
			b.Fatal(res.Err)
		}
		res.Page.Release()
	}
	for range 2 * pages { // warm up: fill the cache and the free lists
		step()
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.SetBytes(benchWindow * mpage.PageSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for range benchWindow {
			step()
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	reads := float64(b.N) * benchWindow
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/reads, "ns/read")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/reads, "allocs/page")
	for {
		res, ok := rd.Wait()
		if !ok {
			break
		}
		res.Page.Release()
	}
}
