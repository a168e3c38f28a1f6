package alloc

import (
	"fmt"
	"sync"
)

// Flags select how BioSet.Alloc behaves when the budget is short.
type Flags uint8

const (
	// MemAlloc: on failure halve the requested vec count until it fits or
	// reaches zero (the seed's mpage_alloc). Without it Alloc tries once.
	MemAlloc Flags = 1 << iota
	// UseReserve: when not even the smallest try fits the budget, take a
	// 1-vec bio from the reserve, so I/O that must go on (writeback,
	// reads a metadata lookup depends on) always makes progress.
	UseReserve
	// Wait: block until a Free makes room rather than return nothing. Never
	// from a completion handler: the Free it waits for may be its own.
	Wait
)

// MaxVecs is the largest vec count a bio can have; Alloc clamps to it.
const MaxVecs = 256

// Classes are the vec counts bios are built with. A request for n vecs is
// served by the smallest class >= n. Read-only.
var Classes = [...]int{1, 4, 16, 64, 128, 256}

// classes is the private copy the allocator uses, so writes to Classes
// cannot corrupt it.
var classes = Classes

const numClasses = len(Classes)

// classOf[n] is the index of the smallest class >= n, for 1 <= n <= MaxVecs.
var classOf = func() (t [MaxVecs + 1]uint8) {
	c := 0
	for n := 1; n <= MaxVecs; n++ {
		for classes[c] < n {
			c++
		}
		t[n] = uint8(c)
	}
	return t
}()

const (
	defaultBudgetBytes = 8 << 20
	defaultHeaderBytes = 256
	defaultVecBytes    = 32
	defaultReserve     = 4
)

// BioSetConfig configures a BioSet. Zero fields take their defaults.
type BioSetConfig struct {
	BudgetBytes int64 // bytes bios may be charged in total; default 8 MiB
	HeaderBytes int   // per-bio cost; default 256
	VecBytes    int   // per-vec cost; default 32
	// Reserve is the number of 1-vec bios kept outside the budget for
	// UseReserve callers; default 4, negative means none.
	Reserve int
	// Pressure, if set, scales the budget down under memory pressure.
	Pressure *PressureMonitor
}

// BioStats is a snapshot of a BioSet.
type BioStats struct {
	InUseBytes  int64 // bytes charged to the budget by bios now out (reserve bios are not charged)
	InUse       int64 // bios now out, reserve bios included
	Allocs      int64 // successful Allocs, reserve included
	Degraded    int64 // successful Allocs that got fewer vecs than asked (after clamping to MaxVecs)
	Failed      int64 // Allocs that returned nil
	ReserveUsed int64 // Allocs served from the reserve
	ReserveOut  int64 // reserve bios now out
	Waits       int64 // times an Alloc with Wait blocked
	BudgetBytes int64 // effective budget now: configured, scaled by pressure
}

// BioSet hands out bios (of a caller's type B, which alloc knows nothing
// about) with a vec count under a byte budget. A bio of class c costs
// HeaderBytes + c*VecBytes; the sum over bios out may not pass the
// effective budget. Freed bios are kept on per-class free lists and reused,
// so steady-state Alloc/Free does not allocate.
//
// Under memory pressure the budget shrinks (see PressureMonitor) to throttle
// how much I/O is built at once; it never starves: when nothing is charged
// to the budget, a request that fits the configured budget is admitted
// whatever the pressure, so the set always makes progress.
//
// All methods are safe for concurrent use.
type BioSet[B any] struct {
	newBio   func(classVecs int) *B
	pressure *PressureMonitor
	cost     [numClasses]int64

	mu   sync.Mutex
	cond sync.Cond // signalled when room may have appeared; L is &mu

	budget     int64 // configured
	inUseBytes int64 // invariant: sum of cost over budget-charged bios out
	inUse      int64
	reserveOut int64
	waiters    int
	// free[c] holds idle bios of class c, at most freeMax[c] of them (the
	// most that fit the configured budget at once, plus one), so a budget
	// shrink or a burst cannot pin memory forever.
	free    [numClasses][]*B
	freeMax [numClasses]int
	// reserve holds idle reserve bios; len(reserve)+reserveOut == the
	// configured Reserve at all times.
	reserve []*B

	allocs, degraded, failed, reserveUsed, waits int64

	// trace, if set (tests only), sees every try of Alloc: the vec count
	// tried and whether it fit. Called with mu held.
	trace func(tryNr int, ok bool)
}

// NewBioSet returns a BioSet whose bios are built by newBio, called with the
// class's vec count (slices inside B should get that capacity). newBio must
// not return nil and must not call into the set; the reserve is built here.
func NewBioSet[B any](cfg BioSetConfig, newBio func(classVecs int) *B) *BioSet[B] {
	if newBio == nil {
		panic("alloc: NewBioSet with nil newBio")
	}
	if cfg.BudgetBytes <= 0 {
		cfg.BudgetBytes = defaultBudgetBytes
	}
	if cfg.HeaderBytes <= 0 {
		cfg.HeaderBytes = defaultHeaderBytes
	}
	if cfg.VecBytes <= 0 {
		cfg.VecBytes = defaultVecBytes
	}
	switch {
	case cfg.Reserve == 0:
		cfg.Reserve = defaultReserve
	case cfg.Reserve < 0:
		cfg.Reserve = 0
	}
	s := &BioSet[B]{newBio: newBio, pressure: cfg.Pressure, budget: cfg.BudgetBytes}
	s.cond.L = &s.mu
	for c, n := range classes {
		s.cost[c] = int64(cfg.HeaderBytes) + int64(n)*int64(cfg.VecBytes)
	}
	s.setFreeMax()
	s.reserve = make([]*B, 0, cfg.Reserve)
	for range cfg.Reserve {
		s.reserve = append(s.reserve, s.mustNew(0))
	}
	return s
}

func (s *BioSet[B]) mustNew(c int) *B {
	b := s.newBio(classes[c])
	if b == nil {
		panic(fmt.Sprintf("alloc: newBio(%d) returned nil", classes[c]))
	}
	return b
}

// setFreeMax recomputes the free-list bounds from the configured budget.
func (s *BioSet[B]) setFreeMax() {
	for c := range s.freeMax {
		s.freeMax[c] = int(s.budget/s.cost[c]) + 1
	}
}

// effectiveBudget is the configured budget scaled by pressure. mu held.
func (s *BioSet[B]) effectiveBudget() int64 {
	if s.pressure == nil {
		return s.budget
	}
	return s.pressure.Level().scale(s.budget)
}

// Alloc returns a bio able to hold got vecs, 1 <= got <= nr, built for the
// smallest class >= got, or (nil, 0). nr is clamped to MaxVecs; nr <= 0 is
// invalid and returns (nil, 0) without counting a failure.
//
// Without MemAlloc it tries nr once. With MemAlloc it tries nr, nr/2,
// nr/4, ... (each rounded up to its class for the cost) until one fits or
// the count reaches zero. Then, with UseReserve, it takes a 1-vec bio from
// the reserve (got == 1). Then, with Wait, it blocks until a Free (or
// SetBudget) makes room and starts over; Wait does not block, and fails,
// when nothing is out that could make room, since that wait would never end.
//
// The caller must hand got back to Free with the bio.
func (s *BioSet[B]) Alloc(nr int, flags Flags) (b *B, got int) {
	if nr <= 0 {
		return nil, 0
	}
	if nr > MaxVecs {
		nr = MaxVecs
	}
	s.mu.Lock()
	for {
		budget := s.effectiveBudget()
		for try := nr; try > 0; try /= 2 {
			c := int(classOf[try])
			cost := s.cost[c]
			// The second clause is the progress rule: an empty set admits
			// anything that fits the configured budget.
			ok := s.inUseBytes+cost <= budget || (s.inUseBytes == 0 && cost <= s.budget)
			if s.trace != nil {
				s.trace(try, ok)
			}
			if ok {
				return s.take(c, cost, try, nr)
			}
			if flags&MemAlloc == 0 {
				break
			}
		}
		if flags&UseReserve != 0 && len(s.reserve) > 0 {
			n := len(s.reserve) - 1
			b = s.reserve[n]
			s.reserve[n] = nil
			s.reserve = s.reserve[:n]
			s.reserveOut++
			s.reserveUsed++
			s.inUse++
			s.allocs++
			if nr > 1 {
				s.degraded++
			}
			s.mu.Unlock()
			return b, 1
		}
		// Room can only come from a budget-charged bio being freed, or, for
		// UseReserve, a reserve bio coming home.
		canWait := s.inUseBytes > 0 || (flags&UseReserve != 0 && s.reserveOut > 0)
		if flags&Wait == 0 || !canWait {
			s.failed++
			s.mu.Unlock()
			return nil, 0
		}
		s.waiters++
		s.waits++
		s.cond.Wait()
		s.waiters--
	}
}

// take charges cost and returns a bio of class c; it releases mu.
func (s *BioSet[B]) take(c int, cost int64, got, nr int) (*B, int) {
	s.inUseBytes += cost
	s.inUse++
	s.allocs++
	if got < nr {
		s.degraded++
	}
	var b *B
	if n := len(s.free[c]); n > 0 {
		b = s.free[c][n-1]
		s.free[c][n-1] = nil
		s.free[c] = s.free[c][:n-1]
	}
	s.mu.Unlock()
	if b == nil {
		b = s.mustNew(c) // outside the lock: newBio allocates
	}
	return b, got
}

// Free returns a bio from Alloc with the got Alloc returned. A 1-vec bio
// refills the reserve first if reserve bios are out (bios of one class are
// interchangeable, and the accounting stays exact: the bio still out then
// carries the budget charge). Free panics on nil, a got out of range, or a
// Free the accounting shows was never allocated.
func (s *BioSet[B]) Free(b *B, got int) {
	if b == nil || got <= 0 || got > MaxVecs {
		panic(fmt.Sprintf("alloc: BioSet.Free(%p, %d): nil bio or got out of [1,%d]", b, got, MaxVecs))
	}
	c := int(classOf[got])
	s.mu.Lock()
	switch {
	case s.inUse == 0 || (!(c == 0 && s.reserveOut > 0) && s.inUseBytes < s.cost[c]):
		s.mu.Unlock()
		panic(fmt.Sprintf("alloc: BioSet.Free(%p, %d) of a bio that is not out (double free or wrong got)", b, got))
	case c == 0 && s.reserveOut > 0:
		s.reserveOut--
		s.reserve = append(s.reserve, b) // never grows: cap is the configured Reserve
	default:
		s.inUseBytes -= s.cost[c]
		if len(s.free[c]) < s.freeMax[c] {
			s.free[c] = append(s.free[c], b)
		}
	}
	s.inUse--
	if s.waiters > 0 {
		s.cond.Broadcast() // a waiter for a small class may fit where a big one does not
	}
	s.mu.Unlock()
}

// SetBudget changes the configured budget (negative means 0: only the
// reserve serves). Bios already out stay out; a lower budget takes effect as
// they are freed. Waiters re-check.
func (s *BioSet[B]) SetBudget(bytes int64) {
	if bytes < 0 {
		bytes = 0
	}
	s.mu.Lock()
	s.budget = bytes
	s.setFreeMax()
	for c := range s.free {
		if n := len(s.free[c]); n > s.freeMax[c] {
			clear(s.free[c][s.freeMax[c]:])
			s.free[c] = s.free[c][:s.freeMax[c]]
		}
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Stats returns a snapshot of the set's counters.
func (s *BioSet[B]) Stats() BioStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return BioStats{
		InUseBytes:  s.inUseBytes,
		InUse:       s.inUse,
		Allocs:      s.allocs,
		Degraded:    s.degraded,
		Failed:      s.failed,
		ReserveUsed: s.reserveUsed,
		ReserveOut:  s.reserveOut,
		Waits:       s.waits,
		BudgetBytes: s.effectiveBudget(),
	}
}

// Cost returns what a bio serving n vecs is charged against the budget.
func (s *BioSet[B]) Cost(n int) int64 {
	if n < 1 {
		n = 1
	}
	if n > MaxVecs {
		n = MaxVecs
	}
	return s.cost[classOf[n]]
}
