// Package alloc owns the engine's memory: the page frames that page-cache
// pages and I/O live in, the bios that carry runs of pages to the ring, and
// the memory-pressure input that throttles how much I/O is built at once.
// It knows nothing of pages, files or rings (it imports neither mpage nor
// uring); mpage plugs its Bio type into the generic BioSet.
//
// # Page frames
//
// A FramePool hands out PageSize frames carved from anonymous mmap'd arenas
// (64 MiB by default), mapped lazily up to PoolConfig.MaxBytes. The memory
// is outside the Go heap: the collector never moves or frees it, it is
// page-aligned (valid for O_DIRECT), and each arena can be registered with
// io_uring as fixed buffer #index through PoolConfig.OnArena, after which
// BufIndex gives the buffer index of any frame. Frames are recycled, so a
// frame's content is unspecified: callers that need zeros must clear it.
// Put panics on memory that is not a frame of the pool, or a frame that is
// not out (double free). Close refuses, with ErrFramesInUse, while frames
// are out.
//
// # Bios
//
// A BioSet[B] hands out bios of the caller's type B in vec-count classes
// (Classes: 1, 4, 16, 64, 128, 256) under a byte budget, each bio costing
// HeaderBytes + class*VecBytes. Alloc(nr, flags) follows the seed's
// mpage_alloc: with MemAlloc a failed try halves the vec count until one
// fits or the count reaches zero (zero means the caller falls back to the
// per-block path, "confused"). Linux could never reach that loop, because
// its allocator sleeps instead of failing; here the budget is real, so the
// degraded path is live. UseReserve adds a last resort, a small reserve
// of 1-vec bios outside the budget, so writeback and reads progress even
// when the budget is exhausted (mpage uses it for the per-block path and
// for reads nested in a block mapper's metadata read). Wait blocks until
// a Free makes room.
//
// A PressureMonitor reads PSI (/proc/pressure/memory, or the cgroup's
// memory.pressure, see CgroupPSIPath) and scales the budget down: by 2 at
// LevelSome, by 4 at LevelFull and LevelCritical. Pressure throttles, it
// never starves: a set with nothing charged admits any request that fits the
// configured budget.
//
// # Concurrency
//
// FramePool, BioSet and PressureMonitor are safe for concurrent use. Get,
// Put, Alloc and Free are O(1) (Alloc: O(log nr) tries), take one mutex, and
// do not allocate in steady state; BufIndex, Contains and Level take no lock.
// Alloc with Wait blocks and must not be called from a ring completion
// handler, where the Free it waits for may be queued behind it; handlers use
// MemAlloc and UseReserve only. Callbacks (OnArena, newBio) run without the
// pool and set locks, but must not call Get, Close or Alloc.
//
// # Example
//
//	frames, err := alloc.NewFramePool(alloc.PoolConfig{
//		OnArena: func(i int, mem []byte) error { return ring.RegisterBuffer(i, mem) },
//	})
//	if err != nil { ... }
//	pm, err := alloc.NewPressureMonitor(alloc.CgroupPSIPath(), 0, alloc.Thresholds{})
//	if err != nil {
//		log.Printf("running without memory pressure input: %v", err)
//		pm = nil
//	} else {
//		pm.Start()
//		defer pm.Close()
//	}
//	bios := alloc.NewBioSet(alloc.BioSetConfig{Pressure: pm},
//		func(n int) *Bio { return &Bio{Vecs: make([][]byte, 0, n)} })
//
//	bio, got := bios.Alloc(nrPages, alloc.MemAlloc|alloc.UseReserve)
//	if bio == nil {
//		// confused: do the pages one block at a time
//	}
//	// ... add up to got frames, submit; on completion:
//	bios.Free(bio, got)
package alloc
