package alloc

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func newTestPool(t testing.TB, cfg PoolConfig) *FramePool {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	p, err := NewFramePool(cfg)
	if err != nil {
		t.Fatalf("NewFramePool(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// checkInvariants: the bitmap, the free stack and the counter agree.
func checkInvariants(t testing.TB, p *FramePool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	bitmap := 0
	for _, a := range p.arenas {
		bitmap += a.countInUse()
	}
	total := len(p.arenas) * p.framesPerArena
	if int64(bitmap) != p.inUse || total-len(p.free) != bitmap {
		t.Fatalf("invariant broken: bitmap %d, inUse %d, free %d of %d", bitmap, p.inUse, len(p.free), total)
	}
}

func TestNewFramePoolConfig(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       PoolConfig
		wantErr   bool
		wantArena int
	}{
		{"defaults", PoolConfig{}, false, 64 << 20},
		{"small max shrinks default arena", PoolConfig{MaxBytes: 1 << 20}, false, 1 << 20},
		{"max not page multiple", PoolConfig{MaxBytes: 3*PageSize + 5}, false, 3 * PageSize},
		{"arena not page multiple", PoolConfig{ArenaBytes: PageSize + 1}, true, 0},
		{"negative arena", PoolConfig{ArenaBytes: -PageSize}, true, 0},
		{"negative max", PoolConfig{MaxBytes: -1}, true, 0},
		{"arena over max", PoolConfig{ArenaBytes: 2 * PageSize, MaxBytes: PageSize}, true, 0},
		{"max under a page", PoolConfig{MaxBytes: 100}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewFramePool(tc.cfg)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err = %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ArenaBytes() != tc.wantArena {
				t.Fatalf("ArenaBytes = %d, want %d", p.ArenaBytes(), tc.wantArena)
			}
		})
	}
}

func TestFramesAlignedDistinctWritable(t *testing.T) {
	const arenaPages = 16
	p := newTestPool(t, PoolConfig{ArenaBytes: arenaPages * PageSize, MaxBytes: 4 * arenaPages * PageSize})
	seen := map[uintptr]bool{}
	var frames [][]byte
	for i := range 3*arenaPages + 5 { // spills into a fourth arena
		f, err := p.Get()
		if err != nil {
			t.Fatalf("Get #%d: %v", i, err)
		}
		if len(f) != PageSize || cap(f) != PageSize {
			t.Fatalf("frame len %d cap %d, want %d", len(f), cap(f), PageSize)
		}
		a := addr(f)
		if a%PageSize != 0 {
			t.Fatalf("frame %#x not page-aligned", a)
		}
		if seen[a] {
			t.Fatalf("frame %#x handed out twice", a)
		}
		seen[a] = true
		for j := range f {
			f[j] = byte(i)
		}
		frames = append(frames, f)
	}
	// No frame overlaps another: each still holds its own pattern.
	for i, f := range frames {
		for _, c := range f {
			if c != byte(i) {
				t.Fatalf("frame %d overwritten", i)
			}
		}
	}
	if st := p.Stats(); st.Arenas != 4 || st.Frames != 4*arenaPages || st.InUse != int64(len(frames)) {
		t.Fatalf("Stats = %+v", st)
	}
	checkInvariants(t, p)
	for _, f := range frames {
		p.Put(f)
	}
	checkInvariants(t, p)
	if st := p.Stats(); st.InUse != 0 {
		t.Fatalf("InUse = %d after putting all back", st.InUse)
	}
}

func TestFramesFreshArenaIsZero(t *testing.T) {
	p := newTestPool(t, PoolConfig{ArenaBytes: 4 * PageSize, MaxBytes: 4 * PageSize})
	for range 4 {
		f, err := p.Get()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range f {
			if c != 0 {
				t.Fatal("fresh arena frame not zero")
			}
		}
		defer p.Put(f)
	}
}

func TestFramesGetPutCyclesNoGrowth(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 10_000
	}
	p := newTestPool(t, PoolConfig{ArenaBytes: 8 * PageSize})
	held := make([][]byte, 5) // a few frames out the whole time
	for i := range held {
		held[i], _ = p.Get()
	}
	before := p.Stats()
	for i := range n {
		f, err := p.Get()
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		f[0] = byte(i)
		p.Put(f)
	}
	if after := p.Stats(); after != before {
		t.Fatalf("stats moved over %d cycles: before %+v after %+v", n, before, after)
	}
	for _, f := range held {
		p.Put(f)
	}
	checkInvariants(t, p)
}

func TestFramesMaxBytesExhaustion(t *testing.T) {
	p := newTestPool(t, PoolConfig{ArenaBytes: 2 * PageSize, MaxBytes: 5 * PageSize}) // room for 2 arenas
	var out [][]byte
	for range 4 {
		f, err := p.Get()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	_, err := p.Get()
	if !errors.Is(err, ErrNoFrames) {
		t.Fatalf("Get past MaxBytes: err = %v, want ErrNoFrames", err)
	}
	if !strings.Contains(err.Error(), "MaxBytes") {
		t.Errorf("error lacks context: %v", err)
	}
	if st := p.Stats(); st.Arenas != 2 {
		t.Fatalf("Arenas = %d, want 2", st.Arenas)
	}
	p.Put(out[1])
	f, err := p.Get() // a Put makes room again
	if err != nil || addr(f) != addr(out[1]) {
		t.Fatalf("Get after Put: %#x, %v; want the frame just put (%#x)", addr(f), err, addr(out[1]))
	}
	out[1] = f
	for _, f := range out {
		p.Put(f)
	}
}

func TestFramesPutPanics(t *testing.T) {
	p := newTestPool(t, PoolConfig{ArenaBytes: 4 * PageSize})
	f, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Put(f)
	g, _ := p.Get()
	p.Put(g)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"double free", g, "double free"},
		{"heap memory", make([]byte, PageSize), "foreign"},
		{"inside a frame", f[1:], "not at a frame start"},
		{"empty", nil, "empty slice"},
		{"zero cap", f[:0:0], "empty slice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("Put did not panic")
				}
				if !strings.Contains(fmt.Sprint(r), tc.want) {
					t.Fatalf("panic %q, want it to mention %q", r, tc.want)
				}
			}()
			p.Put(tc.b)
		})
	}
	checkInvariants(t, p) // a refused Put changes nothing
	// A resliced frame still puts back.
	h, _ := p.Get()
	p.Put(h[:10])
}

func TestFramesOnArenaAndBufIndex(t *testing.T) {
	const arenaBytes = 4 * PageSize
	type call struct {
		index int
		mem   []byte
	}
	var calls []call
	var logged []string
	p := newTestPool(t, PoolConfig{
		ArenaBytes: arenaBytes,
		OnArena: func(index int, mem []byte) error {
			calls = append(calls, call{index, mem})
			if index == 1 {
				return errors.New("register refused")
			}
			return nil
		},
		Logf: func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) },
	})
	var frames [][]byte
	for range 3 * 4 {
		f, err := p.Get()
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	if len(calls) != 3 {
		t.Fatalf("OnArena called %d times, want 3", len(calls))
	}
	for i, c := range calls {
		if c.index != i || len(c.mem) != arenaBytes || addr(c.mem)%PageSize != 0 {
			t.Fatalf("OnArena call %d: index %d, len %d, addr %#x", i, c.index, len(c.mem), addr(c.mem))
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "register refused") || !strings.Contains(logged[0], "arena 1") {
		t.Fatalf("logged %q, want one line about arena 1", logged)
	}
	for _, f := range frames {
		want := -1
		for _, c := range calls {
			if addr(f) >= addr(c.mem) && addr(f) < addr(c.mem)+arenaBytes {
				want = c.index
			}
		}
		if got := p.BufIndex(f); got != want || want < 0 {
			t.Fatalf("BufIndex(%#x) = %d, want %d", addr(f), got, want)
		}
	}
	whole := calls[2].mem
	for _, tc := range []struct {
		name string
		b    []byte
		want int
	}{
		{"whole arena", whole, 2},
		{"tail of arena", whole[arenaBytes-10:], 2},
		{"sub-range of a frame", frames[0][100:200], 0},
		{"empty but inside", frames[0][5:5], 0},
		{"heap", make([]byte, 10), -1},
		{"nil", nil, -1},
	} {
		if got := p.BufIndex(tc.b); got != tc.want {
			t.Errorf("%s: BufIndex = %d, want %d", tc.name, got, tc.want)
		}
		if got := p.Contains(tc.b); got != (tc.want >= 0) {
			t.Errorf("%s: Contains = %v", tc.name, got)
		}
	}
	for _, f := range frames {
		p.Put(f)
	}
}

func TestFramesClose(t *testing.T) {
	p, err := NewFramePool(PoolConfig{ArenaBytes: 4 * PageSize})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := p.Get()
	g, _ := p.Get()
	err = p.Close()
	if !errors.Is(err, ErrFramesInUse) || !strings.Contains(err.Error(), "2 frames") {
		t.Fatalf("Close with 2 frames out: %v", err)
	}
	f[0] = 1 // still mapped
	p.Put(f)
	p.Put(g)
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Get(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if p.BufIndex(f) != -1 {
		t.Fatal("BufIndex finds a frame after Close")
	}
}

func TestFramesConcurrent(t *testing.T) {
	p := newTestPool(t, PoolConfig{ArenaBytes: 16 * PageSize, MaxBytes: 64 * PageSize})
	const workers, rounds = 8, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var mine [][]byte
			for i := range rounds {
				if len(mine) < 6 {
					f, err := p.Get()
					if err != nil {
						t.Errorf("worker %d: %v", w, err)
						return
					}
					f[0], f[PageSize-1] = byte(w), byte(w)
					mine = append(mine, f)
				}
				if i%3 == 0 {
					f := mine[0]
					if f[0] != byte(w) || f[PageSize-1] != byte(w) {
						t.Errorf("worker %d: frame shared with another worker", w)
						return
					}
					p.Put(f)
					mine = mine[1:]
				}
				if len(mine) > 0 && p.BufIndex(mine[len(mine)-1]) < 0 {
					t.Errorf("worker %d: BufIndex lost a frame", w)
					return
				}
			}
			for _, f := range mine {
				p.Put(f)
			}
		})
	}
	wg.Wait()
	checkInvariants(t, p)
	if st := p.Stats(); st.InUse != 0 || st.Arenas > 4 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestFramesGetPutAllocs(t *testing.T) {
	p := newTestPool(t, PoolConfig{ArenaBytes: 4 * PageSize})
	warm, _ := p.Get()
	p.Put(warm)
	allocs := testing.AllocsPerRun(1000, func() {
		f, err := p.Get()
		if err != nil {
			panic(err)
		}
		_ = p.BufIndex(f)
		p.Put(f)
	})
	if allocs != 0 {
		t.Fatalf("Get/BufIndex/Put: %v allocs per run, want 0", allocs)
	}
}

func BenchmarkFramePoolGetPut(b *testing.B) {
	p := newTestPool(b, PoolConfig{ArenaBytes: 16 * PageSize})
	b.ReportAllocs()
	for b.Loop() {
		f, err := p.Get()
		if err != nil {
			b.Fatal(err)
		}
		p.Put(f)
	}
}

func BenchmarkFramePoolGetPutParallel(b *testing.B) {
	p := newTestPool(b, PoolConfig{ArenaBytes: 256 * PageSize})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f, err := p.Get()
			if err != nil {
				b.Error(err)
				return
			}
			p.Put(f)
		}
	})
}
