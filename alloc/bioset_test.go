package alloc

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testBio stands in for mpage's Bio.
type testBio struct {
	class int
	vecs  [][]byte
	owner atomic.Int32 // for the concurrency test: who holds it
}

type bioCounter struct{ made atomic.Int64 }

func (c *bioCounter) newBio(n int) *testBio {
	c.made.Add(1)
	return &testBio{class: n, vecs: make([][]byte, 0, n)}
}

// cost of a class with the default header/vec sizes.
func cost(class int) int64 { return defaultHeaderBytes + int64(class)*defaultVecBytes }

type try struct {
	nr int
	ok bool
}

func (t try) String() string { return fmt.Sprintf("%d:%v", t.nr, t.ok) }

func tracing(s *BioSet[testBio]) *[]try {
	var tr []try
	s.trace = func(nr int, ok bool) { tr = append(tr, try{nr, ok}) }
	return &tr
}

func fails(nrs ...int) []try {
	out := make([]try, len(nrs))
	for i, n := range nrs {
		out[i] = try{n, false}
	}
	return out
}

func TestBioSetAllocSequence(t *testing.T) {
	one16 := cost(16) // the budget holds exactly one 16-vec bio
	for _, tc := range []struct {
		name      string
		budget    int64
		held      []int // allocated (plain, no flags) before the call
		nr        int
		flags     Flags
		wantTrace []try
		wantGot   int
		wantClass int
		want      BioStats // counters after the call, for the call alone
	}{
		{
			name: "halves until a 16 fits", budget: one16, nr: 256, flags: MemAlloc,
			wantTrace: append(fails(256, 128, 64, 32), try{16, true}),
			wantGot:   16, wantClass: 16,
			want: BioStats{Allocs: 1, Degraded: 1, InUse: 1, InUseBytes: one16},
		},
		{
			name: "halving of an odd count", budget: one16, nr: 100, flags: MemAlloc,
			wantTrace: append(fails(100, 50, 25), try{12, true}),
			wantGot:   12, wantClass: 16,
			want: BioStats{Allocs: 1, Degraded: 1, InUse: 1, InUseBytes: one16},
		},
		{
			name: "clamped to MaxVecs, not degraded", budget: 1 << 20, nr: 1000, flags: MemAlloc,
			wantTrace: []try{{256, true}},
			wantGot:   256, wantClass: 256,
			want: BioStats{Allocs: 1, InUse: 1, InUseBytes: cost(256)},
		},
		{
			name: "fits first time", budget: 1 << 20, nr: 5, flags: MemAlloc,
			wantTrace: []try{{5, true}},
			wantGot:   5, wantClass: 16,
			want: BioStats{Allocs: 1, InUse: 1, InUseBytes: cost(16)},
		},
		{
			name: "without MemAlloc one try", budget: one16, nr: 256,
			wantTrace: fails(256),
			want:      BioStats{Failed: 1},
		},
		{
			name: "reaches zero", budget: one16, held: []int{16}, nr: 256, flags: MemAlloc,
			wantTrace: fails(256, 128, 64, 32, 16, 8, 4, 2, 1),
			want:      BioStats{Failed: 1},
		},
		{
			name: "reaches zero then reserve", budget: one16, held: []int{16}, nr: 256, flags: MemAlloc | UseReserve,
			wantTrace: fails(256, 128, 64, 32, 16, 8, 4, 2, 1),
			wantGot:   1, wantClass: 1,
			want: BioStats{Allocs: 1, Degraded: 1, ReserveUsed: 1, ReserveOut: 1, InUse: 1},
		},
		{
			name: "reserve without MemAlloc", budget: one16, held: []int{16}, nr: 64, flags: UseReserve,
			wantTrace: fails(64),
			wantGot:   1, wantClass: 1,
			want: BioStats{Allocs: 1, Degraded: 1, ReserveUsed: 1, ReserveOut: 1, InUse: 1},
		},
		{
			name: "room for a smaller class", budget: one16 + cost(4), held: []int{16}, nr: 64, flags: MemAlloc,
			wantTrace: append(fails(64, 32, 16, 8), try{4, true}),
			wantGot:   4, wantClass: 4,
			want: BioStats{Allocs: 1, Degraded: 1, InUse: 1, InUseBytes: cost(4)},
		},
		{
			name: "invalid nr is not a failure", budget: one16, nr: 0, flags: MemAlloc | UseReserve,
			want: BioStats{},
		},
		{
			name: "negative nr", budget: one16, nr: -3, flags: MemAlloc,
			want: BioStats{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bc bioCounter
			s := NewBioSet(BioSetConfig{BudgetBytes: tc.budget}, bc.newBio)
			type out struct {
				b   *testBio
				got int
			}
			var held []out
			for _, n := range tc.held {
				b, got := s.Alloc(n, 0)
				if b == nil {
					t.Fatalf("setup Alloc(%d) failed", n)
				}
				held = append(held, out{b, got})
			}
			before := s.Stats()
			tr := tracing(s)
			b, got := s.Alloc(tc.nr, tc.flags)
			if !reflect.DeepEqual(*tr, tc.wantTrace) && (len(*tr) > 0 || len(tc.wantTrace) > 0) {
				t.Errorf("tries %v, want %v", *tr, tc.wantTrace)
			}
			if got != tc.wantGot || (b == nil) != (tc.wantGot == 0) {
				t.Fatalf("Alloc(%d, %b) = %v, %d; want got %d", tc.nr, tc.flags, b, got, tc.wantGot)
			}
			if b != nil && (b.class != tc.wantClass || cap(b.vecs) != tc.wantClass) {
				t.Errorf("bio class %d cap %d, want %d", b.class, cap(b.vecs), tc.wantClass)
			}
			after := s.Stats()
			delta := BioStats{
				InUseBytes:  after.InUseBytes - before.InUseBytes,
				InUse:       after.InUse - before.InUse,
				Allocs:      after.Allocs - before.Allocs,
				Degraded:    after.Degraded - before.Degraded,
				Failed:      after.Failed - before.Failed,
				ReserveUsed: after.ReserveUsed - before.ReserveUsed,
				ReserveOut:  after.ReserveOut - before.ReserveOut,
			}
			if delta != tc.want {
				t.Errorf("stats delta %+v\n                want %+v", delta, tc.want)
			}
			s.trace = nil
			if b != nil {
				s.Free(b, got)
			}
			for _, h := range held {
				s.Free(h.b, h.got)
			}
			if st := s.Stats(); st.InUse != 0 || st.InUseBytes != 0 || st.ReserveOut != 0 {
				t.Errorf("after freeing all: %+v", st)
			}
		})
	}
}

func TestBioSetReserve(t *testing.T) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{BudgetBytes: cost(4), Reserve: 2}, bc.newBio)
	if bc.made.Load() != 2 {
		t.Fatalf("reserve built %d bios, want 2", bc.made.Load())
	}
	s.SetBudget(0) // only the reserve serves
	r1, g1 := s.Alloc(16, MemAlloc|UseReserve)
	r2, g2 := s.Alloc(1, UseReserve)
	if r1 == nil || r2 == nil || g1 != 1 || g2 != 1 || r1 == r2 {
		t.Fatalf("reserve allocs: %p %d, %p %d", r1, g1, r2, g2)
	}
	if b, _ := s.Alloc(1, MemAlloc|UseReserve); b != nil {
		t.Fatal("a third bio from a reserve of two")
	}
	st := s.Stats()
	if st.ReserveUsed != 2 || st.ReserveOut != 2 || st.InUse != 2 || st.InUseBytes != 0 || st.Failed != 1 || st.Degraded != 1 {
		t.Fatalf("stats %+v", st)
	}
	s.Free(r1, g1)
	if st := s.Stats(); st.ReserveOut != 1 {
		t.Fatalf("Free did not return the bio to the reserve: %+v", st)
	}
	r3, _ := s.Alloc(4, MemAlloc|UseReserve)
	if r3 != r1 {
		t.Fatal("reserve did not hand back the bio just freed")
	}
	s.Free(r3, 1)
	s.Free(r2, 1)

	// A budget-charged 1-vec bio freed while reserve bios are out refills
	// the reserve first; the accounting still comes back to zero.
	s.SetBudget(cost(1))
	b, gb := s.Alloc(1, 0)
	r, gr := s.Alloc(1, UseReserve)
	if b == nil || r == nil || s.Stats().ReserveOut != 1 || s.Stats().InUseBytes != cost(1) {
		t.Fatalf("setup: %+v", s.Stats())
	}
	s.Free(b, gb)
	if st := s.Stats(); st.ReserveOut != 0 || st.InUseBytes != cost(1) {
		t.Fatalf("after freeing the budget bio: %+v", st)
	}
	s.Free(r, gr)
	if st := s.Stats(); st.ReserveOut != 0 || st.InUseBytes != 0 || st.InUse != 0 {
		t.Fatalf("after freeing all: %+v", st)
	}
	if len(s.reserve) != 2 {
		t.Fatalf("reserve holds %d, want 2", len(s.reserve))
	}
}

func TestBioSetNoReserve(t *testing.T) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{Reserve: -1}, bc.newBio)
	s.SetBudget(0)
	if b, _ := s.Alloc(1, MemAlloc|UseReserve|Wait); b != nil {
		t.Fatal("got a bio with no budget and no reserve")
	}
	if bc.made.Load() != 0 {
		t.Fatalf("built %d reserve bios, want 0", bc.made.Load())
	}
}

// waitForWaiters polls until n Allocs are blocked in s.
func waitForWaiters(t *testing.T, s *BioSet[testBio], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		w := s.waiters
		s.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type allocResult struct {
	b   *testBio
	got int
}

func TestBioSetWait(t *testing.T) {
	var bc bioCounter
	t.Run("until a Free", func(t *testing.T) {
		s := NewBioSet(BioSetConfig{BudgetBytes: cost(16)}, bc.newBio)
		a, ga := s.Alloc(16, 0)
		done := make(chan allocResult)
		go func() {
			b, got := s.Alloc(16, Wait)
			done <- allocResult{b, got}
		}()
		waitForWaiters(t, s, 1)
		select {
		case r := <-done:
			t.Fatalf("Alloc with Wait returned %v before any Free", r)
		default:
		}
		s.Free(a, ga)
		r := <-done
		if r.b == nil || r.got != 16 {
			t.Fatalf("woken Alloc = %v", r)
		}
		s.Free(r.b, r.got)
		if st := s.Stats(); st.Waits != 1 || st.Failed != 0 || st.InUse != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("small waiter woken by Free", func(t *testing.T) {
		// Two waiters, one that needs everything, one that needs little:
		// a Free wakes both (Broadcast), and the small one gets through.
		s := NewBioSet(BioSetConfig{BudgetBytes: cost(16)}, bc.newBio)
		a, ga := s.Alloc(4, 0)
		b, gb := s.Alloc(4, 0)
		big, small := make(chan allocResult, 1), make(chan allocResult, 1)
		go func() { x, g := s.Alloc(16, Wait); big <- allocResult{x, g} }()
		waitForWaiters(t, s, 1)
		go func() { x, g := s.Alloc(4, Wait); small <- allocResult{x, g} }()
		waitForWaiters(t, s, 2)
		s.Free(a, ga)
		r := <-small
		s.Free(b, gb)
		s.Free(r.b, r.got)
		r = <-big
		s.Free(r.b, r.got)
		if st := s.Stats(); st.InUse != 0 || st.InUseBytes != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("for the reserve", func(t *testing.T) {
		s := NewBioSet(BioSetConfig{Reserve: 1}, bc.newBio)
		s.SetBudget(0)
		r, gr := s.Alloc(1, UseReserve)
		done := make(chan allocResult)
		go func() {
			b, got := s.Alloc(8, MemAlloc|UseReserve|Wait)
			done <- allocResult{b, got}
		}()
		waitForWaiters(t, s, 1)
		s.Free(r, gr)
		if res := <-done; res.b != r || res.got != 1 {
			t.Fatalf("woken Alloc = %v, want the reserve bio", res)
		}
	})
	t.Run("until SetBudget", func(t *testing.T) {
		s := NewBioSet(BioSetConfig{BudgetBytes: cost(4)}, bc.newBio)
		a, ga := s.Alloc(4, 0)
		done := make(chan allocResult)
		go func() { b, got := s.Alloc(64, Wait); done <- allocResult{b, got} }()
		waitForWaiters(t, s, 1)
		s.SetBudget(cost(4) + cost(64))
		r := <-done
		if r.got != 64 {
			t.Fatalf("woken Alloc = %v", r)
		}
		s.Free(r.b, r.got)
		s.Free(a, ga)
	})
	t.Run("never for the impossible", func(t *testing.T) {
		// Nothing is out, so no Free can come: Wait must fail, not hang.
		s := NewBioSet(BioSetConfig{BudgetBytes: cost(4), Reserve: -1}, bc.newBio)
		if b, _ := s.Alloc(16, Wait); b != nil {
			t.Fatal("a 16-vec bio from a 4-vec budget")
		}
		if st := s.Stats(); st.Failed != 1 || st.Waits != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestBioSetPressure(t *testing.T) {
	var bc bioCounter
	var pm PressureMonitor // manual
	s := NewBioSet(BioSetConfig{BudgetBytes: 4 * cost(16), Pressure: &pm}, bc.newBio)
	for _, tc := range []struct {
		level      Level
		wantBudget int64
		wantFit    int
	}{
		{LevelNone, 4 * cost(16), 4},
		{LevelSome, 2 * cost(16), 2},
		{LevelFull, cost(16), 1},
		{LevelCritical, cost(16), 1},
		{LevelNone, 4 * cost(16), 4},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			pm.SetLevel(tc.level)
			if st := s.Stats(); st.BudgetBytes != tc.wantBudget {
				t.Fatalf("effective budget %d, want %d", st.BudgetBytes, tc.wantBudget)
			}
			var out []*testBio
			for {
				b, _ := s.Alloc(16, 0)
				if b == nil {
					break
				}
				out = append(out, b)
			}
			if len(out) != tc.wantFit {
				t.Fatalf("%d 16-vec bios fit, want %d", len(out), tc.wantFit)
			}
			for _, b := range out {
				s.Free(b, 16)
			}
		})
	}
	t.Run("pressure never starves", func(t *testing.T) {
		s := NewBioSet(BioSetConfig{BudgetBytes: cost(64), Pressure: &pm}, bc.newBio)
		pm.SetLevel(LevelCritical) // effective budget below one 64-vec bio
		a, ga := s.Alloc(64, 0)
		if a == nil {
			t.Fatal("an empty set refused a bio that fits its configured budget")
		}
		if b, _ := s.Alloc(1, 0); b != nil {
			t.Fatal("second bio admitted over the scaled budget")
		}
		s.Free(a, ga)
		pm.SetLevel(LevelNone)
	})
}

func TestBioSetFreePanics(t *testing.T) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{}, bc.newBio)
	b, got := s.Alloc(16, 0)
	for _, tc := range []struct {
		name string
		free func()
		want string
	}{
		{"nil", func() { s.Free(nil, 1) }, "nil bio"},
		{"got zero", func() { s.Free(b, 0) }, "out of"},
		{"got too big", func() { s.Free(b, MaxVecs+1) }, "out of"},
		{"more than out", func() { s.Free(b, 256) }, "not out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), tc.want) {
					t.Fatalf("panic %v, want one mentioning %q", r, tc.want)
				}
			}()
			tc.free()
		})
	}
	s.Free(b, got)
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("double free did not panic")
			}
		}()
		s.Free(b, got)
	}()
	if st := s.Stats(); st.InUse != 0 || st.InUseBytes != 0 {
		t.Fatalf("a refused Free changed the accounting: %+v", st)
	}
}

func TestBioSetSetBudgetTrimsFreeLists(t *testing.T) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{BudgetBytes: 10 * cost(4)}, bc.newBio)
	var out []*testBio
	for range 10 {
		b, _ := s.Alloc(4, 0)
		out = append(out, b)
	}
	for _, b := range out {
		s.Free(b, 4)
	}
	c := int(classOf[4])
	if len(s.free[c]) != 10 {
		t.Fatalf("free list %d, want 10", len(s.free[c]))
	}
	s.SetBudget(2 * cost(4))
	if len(s.free[c]) != 3 || s.free[c][:4][3] != nil {
		t.Fatalf("free list %d after shrink (or a trimmed slot still referenced), want 3", len(s.free[c]))
	}
	if got := s.Cost(3); got != cost(4) {
		t.Fatalf("Cost(3) = %d, want %d", got, cost(4))
	}
}

func TestBioSetCyclesNoLeak(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 20_000
	}
	var bc bioCounter
	// Tight: two 256-vec bios do not fit, so degraded, reserve and failed
	// paths all run.
	s := NewBioSet(BioSetConfig{BudgetBytes: 12 << 10}, bc.newBio)
	rng := rand.New(rand.NewPCG(1, 2))
	type held struct {
		b   *testBio
		got int
	}
	var out []held
	for i := range n {
		if len(out) < 8 {
			nr := 1 + rng.IntN(MaxVecs)
			flags := [...]Flags{MemAlloc | UseReserve, MemAlloc, 0}[rng.IntN(3)]
			if b, got := s.Alloc(nr, flags); b != nil {
				if got > nr || cap(b.vecs) < got {
					t.Fatalf("cycle %d: Alloc(%d) got %d with capacity %d", i, nr, got, cap(b.vecs))
				}
				out = append(out, held{b, got})
			}
		}
		if len(out) > 0 && rng.IntN(2) == 0 {
			k := rng.IntN(len(out))
			s.Free(out[k].b, out[k].got)
			out[k] = out[len(out)-1]
			out = out[:len(out)-1]
		}
	}
	for _, h := range out {
		s.Free(h.b, h.got)
	}
	st := s.Stats()
	if st.InUse != 0 || st.InUseBytes != 0 || st.ReserveOut != 0 {
		t.Fatalf("leak after %d cycles: %+v", n, st)
	}
	if st.Degraded == 0 || st.ReserveUsed == 0 || st.Failed == 0 {
		t.Fatalf("not every path ran: %+v", st)
	}
	for c := range s.free {
		if len(s.free[c]) > s.freeMax[c] {
			t.Fatalf("free list %d holds %d > bound %d", classes[c], len(s.free[c]), s.freeMax[c])
		}
	}
	// At most 8 bios are out at once, so reuse bounds how many were built.
	if made := bc.made.Load(); made > int64(numClasses*9+defaultReserve) {
		t.Fatalf("built %d bios over %d cycles; free lists are not reused", made, n)
	}
	t.Logf("%d cycles: %+v, %d bios built", n, st, bc.made.Load())
}

func TestBioSetConcurrent(t *testing.T) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{BudgetBytes: 6 * cost(64), Reserve: 2}, bc.newBio)
	const workers = 8
	rounds := 5000
	if testing.Short() {
		rounds = 500
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			type held struct {
				b   *testBio
				got int
			}
			var out []held
			for range rounds {
				nr := 1 + rng.IntN(MaxVecs)
				flags := MemAlloc | UseReserve
				if len(out) == 0 {
					flags |= Wait // safe: holding nothing, so no cycle of waiters
				}
				if len(out) < 3 {
					if b, got := s.Alloc(nr, flags); b != nil {
						if !b.owner.CompareAndSwap(0, int32(w+1)) {
							t.Errorf("worker %d: bio handed out twice", w)
							return
						}
						out = append(out, held{b, got})
					} else if flags&Wait != 0 {
						t.Errorf("worker %d: Alloc with Wait returned nil", w)
						return
					}
				}
				if len(out) > 0 && rng.IntN(2) == 0 {
					h := out[0]
					out = out[1:]
					h.b.owner.Store(0)
					s.Free(h.b, h.got)
				}
				_ = s.Stats()
			}
			for _, h := range out {
				h.b.owner.Store(0)
				s.Free(h.b, h.got)
			}
		})
	}
	wg.Wait()
	if st := s.Stats(); st.InUse != 0 || st.InUseBytes != 0 || st.ReserveOut != 0 {
		t.Fatalf("after concurrent run: %+v", st)
	}
}

func TestBioSetAllocFreeAllocs(t *testing.T) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{BudgetBytes: cost(16)}, bc.newBio)
	var pm PressureMonitor
	s.pressure = &pm
	for _, tc := range []struct {
		name string
		nr   int
		hold int // vecs held during the run, to force the degraded/reserve path
		fl   Flags
	}{
		{"fits", 16, 0, 0},
		{"degraded", 256, 0, MemAlloc},
		{"reserve", 64, 16, MemAlloc | UseReserve},
		{"failed", 64, 16, MemAlloc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h *testBio
			if tc.hold > 0 {
				h, _ = s.Alloc(tc.hold, 0)
				defer s.Free(h, tc.hold)
			}
			b, got := s.Alloc(tc.nr, tc.fl) // warm the free list
			if b != nil {
				s.Free(b, got)
			}
			allocs := testing.AllocsPerRun(1000, func() {
				b, got := s.Alloc(tc.nr, tc.fl)
				if b != nil {
					s.Free(b, got)
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocs per Alloc/Free, want 0", allocs)
			}
		})
	}
}

func BenchmarkBioSetAllocFree(b *testing.B) {
	var bc bioCounter
	for _, bm := range []struct {
		name   string
		budget int64
		nr     int
		flags  Flags
	}{
		{"fits/64", 0, 64, MemAlloc},
		{"degraded/256to16", cost(16), 256, MemAlloc},
	} {
		b.Run(bm.name, func(b *testing.B) {
			s := NewBioSet(BioSetConfig{BudgetBytes: bm.budget}, bc.newBio)
			b.ReportAllocs()
			for b.Loop() {
				bio, got := s.Alloc(bm.nr, bm.flags)
				s.Free(bio, got)
			}
		})
	}
}

func BenchmarkBioSetAllocFreeParallel(b *testing.B) {
	var bc bioCounter
	s := NewBioSet(BioSetConfig{}, bc.newBio)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bio, got := s.Alloc(64, MemAlloc|UseReserve)
			s.Free(bio, got)
		}
	})
}
