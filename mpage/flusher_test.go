package mpage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// fakeClock is the flusher tests' clock: it moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// flushFileBlocks is the device span of each flushEnv file: file i owns
// device bytes [i, i+1) * flushFileBytes, so a write's offset names its
// file.
const (
	flushFileBlocks = 256
	flushFileBytes  = flushFileBlocks * 4096
)

// flushEnv is an Env with n files of its own (linear mappings, one span
// each), a fake clock and a Flusher on the Env's cache (not started).
type flushEnv struct {
	*mpagetest.Env
	t     *testing.T
	clock *fakeClock
	files []*mpage.Mapping
	f     *mpage.Flusher
	logs  *logLines
}

// logLines collects a Flusher's Logf lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// newFlushEnv builds a flushEnv; owners[i], if any, is file i's Owner.
// The Flusher runs on the fake clock unless fcfg.Now says otherwise.
// Files are truncated and closed, and the Flusher stopped, when the test
// ends.
func newFlushEnv(t *testing.T, n int, ecfg mpagetest.EnvConfig, fcfg mpage.FlusherConfig, owners ...any) *flushEnv {
	t.Helper()
	ecfg.NoPattern = true
	e := &flushEnv{Env: mpagetest.NewEnvWith(t, ecfg), t: t, clock: newFakeClock(), logs: &logLines{}}
	for i := range n {
		var owner any
		if i < len(owners) {
			owner = owners[i]
		}
		m, err := mpage.NewMapping(e.fileConfig(i, owner, 0))
		if err != nil {
			t.Fatal(err)
		}
		e.files = append(e.files, m)
	}
	t.Cleanup(func() {
		e.Drain()
		for _, m := range e.files {
			if err := m.Truncate(0); err != nil {
				t.Errorf("truncate %s: %v", m.Name(), err)
			}
			if err := m.Close(); err != nil && !errors.Is(err, mpage.ErrClosed) {
				t.Errorf("close %s: %v", m.Name(), err)
			}
		}
	})
	fcfg.Cache, fcfg.Logf = e.Cache, e.logs.logf
	if fcfg.Now == nil {
		fcfg.Now = e.clock.Now
	}
	if fcfg.Interval == 0 {
		fcfg.Interval = time.Second
	}
	f, err := mpage.NewFlusher(fcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.f = f
	t.Cleanup(func() {
		if err := f.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return e
}

// fileConfig describes file i: its span of the device, linearly.
func (e *flushEnv) fileConfig(i int, owner any, size int64) mpage.MappingConfig {
	return mpage.MappingConfig{Device: e.Dev, Cache: e.Cache, BlockSize: 4096, Name: fmt.Sprintf("file %d", i),
		Mapper: mpage.LinearMapper{Start: uint64(i * flushFileBlocks), Blocks: flushFileBlocks}, Owner: owner, Size: size}
}

// dirty writes pages [first, first+n) of file i with a pattern of seed.
func (e *flushEnv) dirty(i int, first, n int, seed byte) {
	e.t.Helper()
	off := int64(first) * mpage.PageSize
	mustWrite(e.t, e.files[i], fill(n*mpage.PageSize, off, seed), off)
}

// written waits for the writes in flight, then returns the files written
// since the last call, in the order of their first write, and forgets the
// records. (A page still under writeback would be skipped by the next
// pass, as it should: the tests drain to be deterministic.)
func (e *flushEnv) written() []int {
	e.Drain()
	var out []int
	for _, r := range e.Ring.Records() {
		if r.Op != uring.OpWritev {
			continue
		}
		if i := int(r.Offset / flushFileBytes); !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	e.Ring.Reset()
	return out
}

// dirtyPages is each file's count of dirty pages.
func (e *flushEnv) dirtyPages() []int {
	out := make([]int, len(e.files))
	for i, m := range e.files {
		out[i] = m.DirtyPages()
	}
	return out
}

// onDisk checks that file i's pages [first, first+n) hold seed's pattern
// on the device.
func (e *flushEnv) onDisk(i, first, n int, seed byte) {
	e.t.Helper()
	e.Drain()
	off := int64(first) * mpage.PageSize
	dev := int64(i)*flushFileBytes + off
	if got, want := e.Disk()[dev:dev+int64(n)*mpage.PageSize], fill(n*mpage.PageSize, off, seed); !bytes.Equal(got, want) {
		e.t.Fatalf("file %d pages %d+%d are not on the device", i, first, n)
	}
}

// TestFlusherExpiry: a pass writes the mappings dirty for ExpireAge or
// longer, oldest first, and no others; dirtying a dirty mapping again
// keeps its dirtied time, dirtying a clean one stamps it anew.
func TestFlusherExpiry(t *testing.T) {
	e := newFlushEnv(t, 3, mpagetest.EnvConfig{}, mpage.FlusherConfig{ExpireAge: 5 * time.Second})
	steps := []struct {
		advance time.Duration // clock move before the step
		dirty   []int         // files whose pages 0-1 are dirtied
		pass    bool
		want    []int // files the pass writes, in order
		clean   []int // files then without dirty pages
	}{
		{0, []int{0}, false, nil, []int{1, 2}},
		{2 * time.Second, []int{1}, false, nil, []int{2}},
		{time.Second, []int{0}, false, nil, []int{2}}, // file 0 again: its time stays t0
		{time.Second, []int{2}, false, nil, nil},
		{1500 * time.Millisecond, nil, true, []int{0}, []int{0}}, // t0+5.5: only file 0
		{0, nil, true, nil, []int{0}},
		{2 * time.Second, nil, true, []int{1}, []int{0, 1}},            // t0+7.5: file 1 (5.5 s), not 2 (3.5 s)
		{500 * time.Millisecond, []int{0}, false, nil, []int{1}},       // t0+8: file 0 dirty again, stamped now
		{1500 * time.Millisecond, nil, true, []int{2}, []int{1, 2}},    // t0+9.5
		{3500 * time.Millisecond, nil, true, []int{0}, []int{0, 1, 2}}, // t0+13: file 0, 5 s after t0+8
	}
	for n, s := range steps {
		e.clock.Advance(s.advance)
		for _, i := range s.dirty {
			e.dirty(i, 0, 2, byte(n))
		}
		if s.pass {
			ps := e.f.RunPass()
			if got := e.written(); !slices.Equal(got, s.want) {
				t.Fatalf("step %d: pass wrote files %v, want %v", n, got, s.want)
			}
			if ps.Expired != int64(2*len(s.want)) || ps.Background != 0 {
				t.Fatalf("step %d: pass %+v, want %d expired pages and no background ones", n, ps, 2*len(s.want))
			}
		}
		for i, d := range e.dirtyPages() {
			if clean := slices.Contains(s.clean, i); clean != (d == 0) {
				t.Fatalf("step %d: file %d has %d dirty pages, want clean=%v", n, i, d, clean)
			}
		}
	}
	if when, ok := e.files[0].DirtiedWhen(); ok {
		t.Fatalf("file 0 still on the dirty list, dirtied %v", when)
	}
	// The last data of each file is on the device.
	e.onDisk(0, 0, 2, 7)
	e.onDisk(1, 0, 2, 1)
	e.onDisk(2, 0, 2, 3)
	st := e.Stats.Snapshot()
	if st.FlusherPasses != 5 || st.FlusherExpiredPages != 8 || st.FlusherBackgroundPages != 0 {
		t.Fatalf("stats: %d passes, %d expired and %d background pages; want 5, 8, 0", st.FlusherPasses, st.FlusherExpiredPages, st.FlusherBackgroundPages)
	}
}

// TestFlusherDirtiedWhen: the stamp is the first dirtying's, and the cache
// counts the mappings on its list.
func TestFlusherDirtiedWhen(t *testing.T) {
	e := newFlushEnv(t, 2, mpagetest.EnvConfig{}, mpage.FlusherConfig{})
	t0 := e.clock.Now()
	e.dirty(0, 0, 1, 1)
	e.clock.Advance(time.Second)
	e.dirty(0, 5, 1, 1)
	e.dirty(1, 0, 1, 1)
	if when, ok := e.files[0].DirtiedWhen(); !ok || !when.Equal(t0) {
		t.Fatalf("file 0 dirtied %v (%v), want %v", when, ok, t0)
	}
	if when, ok := e.files[1].DirtiedWhen(); !ok || !when.Equal(t0.Add(time.Second)) {
		t.Fatalf("file 1 dirtied %v (%v), want %v", when, ok, t0.Add(time.Second))
	}
	if n := e.Cache.Stats().DirtyMappings; n != 2 {
		t.Fatalf("%d dirty mappings, want 2", n)
	}
	if err := e.files[0].WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.files[0].DirtiedWhen(); ok || e.Cache.DirtyMappings() != 1 {
		t.Fatalf("file 0 still listed after its sync (%d dirty mappings)", e.Cache.DirtyMappings())
	}
}

// TestFlusherBackgroundThreshold: past the background threshold a pass
// writes dirty mappings (oldest first, then round robin), each up to its
// budget, until the cache is back at the threshold, whatever their age.
func TestFlusherBackgroundThreshold(t *testing.T) {
	// 256 pages; writers throttle at 230 dirty, background from 76.
	e := newFlushEnv(t, 4, mpagetest.EnvConfig{CacheBytes: 1 << 20, DirtyRatio: 0.9},
		mpage.FlusherConfig{BackgroundRatio: 0.3, PagesPerPass: 8})
	if got := e.f.BackgroundThreshold(); got != 76 {
		t.Fatalf("background threshold %d pages, want 76", got)
	}
	for i := range 4 {
		e.dirty(i, 0, 24, byte(i))
	}
	steps := []struct {
		name  string
		dirty [2]int // file, pages to dirty first (pages 100..)
		want  []int  // files written
		left  []int  // dirty pages per file afterwards
		more  bool
	}{
		// 96 dirty: files 0, 1, 2 take 8 pages each, and 72 is below 76.
		{"over", [2]int{}, []int{0, 1, 2}, []int{16, 16, 16, 24}, false},
		{"under", [2]int{}, nil, []int{16, 16, 16, 24}, false},
		// 82 dirty: file 3, the one not written yet, goes first.
		{"over again", [2]int{3, 10}, []int{3}, []int{16, 16, 16, 26}, false},
	}
	for _, s := range steps {
		if s.dirty[1] > 0 {
			e.dirty(s.dirty[0], 100, s.dirty[1], 9)
		}
		ps := e.f.RunPass()
		if got := e.written(); !slices.Equal(got, s.want) {
			t.Fatalf("%s: pass wrote files %v, want %v", s.name, got, s.want)
		}
		if got := e.dirtyPages(); !slices.Equal(got, s.left) {
			t.Fatalf("%s: dirty pages %v, want %v", s.name, got, s.left)
		}
		if ps.Expired != 0 || ps.Background != int64(8*len(s.want)) || ps.More != s.more {
			t.Fatalf("%s: pass %+v", s.name, ps)
		}
	}
	e.onDisk(0, 0, 8, 0)
	e.onDisk(3, 0, 8, 3)
}

// TestFlusherFairness: in the background part of a pass the mapping
// written longest ago goes first, so files take turns across passes even
// when each pass reaches the threshold before the last file; the oldest
// dirty file does not hog the device.
func TestFlusherFairness(t *testing.T) {
	// 256 pages, background from 24 (3/32 of the cache).
	e := newFlushEnv(t, 3, mpagetest.EnvConfig{CacheBytes: 1 << 20, DirtyRatio: 0.9},
		mpage.FlusherConfig{BackgroundRatio: 3.0 / 32, PagesPerPass: 4})
	for i := range 3 {
		e.dirty(i, 0, 12, byte(i+1))
	}
	for n, step := range []struct {
		more int   // pages file 0 gets dirtied first (a busy writer)
		want []int // files written, in order
		left []int
	}{
		{0, []int{0, 1, 2}, []int{8, 8, 8}}, // 36 dirty: 4 each reaches 24
		{8, []int{0, 1}, []int{12, 4, 8}},   // 32: file 0 first (served first last time)
		{8, []int{2, 0}, []int{16, 4, 4}},   // 32: file 2's turn, not file 0 again
		{0, nil, []int{16, 4, 4}},
	} {
		if step.more > 0 {
			e.dirty(0, 20+10*n, step.more, 9)
		}
		ps := e.f.RunPass()
		if got := e.written(); !slices.Equal(got, step.want) {
			t.Fatalf("pass %d wrote files %v, want %v", n, got, step.want)
		}
		if got := e.dirtyPages(); !slices.Equal(got, step.left) {
			t.Fatalf("pass %d: dirty pages %v, want %v", n, got, step.left)
		}
		if ps.Expired != 0 || ps.Background != int64(4*len(step.want)) {
			t.Fatalf("pass %d: %+v", n, ps)
		}
	}
	e.onDisk(2, 0, 8, 3)
}

// TestFlusherExpiredThenBackground: a mapping's budget covers the whole
// pass: written for its age, it goes behind the others in the background
// part with what is left of it.
func TestFlusherExpiredThenBackground(t *testing.T) {
	e := newFlushEnv(t, 3, mpagetest.EnvConfig{CacheBytes: 1 << 20, DirtyRatio: 0.9},
		mpage.FlusherConfig{BackgroundRatio: 0.01, PagesPerPass: 4, ExpireAge: 5 * time.Second})
	e.dirty(0, 0, 12, 1)
	e.clock.Advance(4 * time.Second)
	e.dirty(1, 0, 12, 2)
	e.dirty(2, 0, 12, 3)
	e.clock.Advance(time.Second) // file 0 has expired, 1 and 2 have not
	for pass, want := range []struct {
		files             []int
		expired, backgrnd int64
		left              []int
	}{
		{[]int{0, 1, 2}, 4, 8, []int{8, 8, 8}},
		{[]int{0, 1, 2}, 4, 8, []int{4, 4, 4}},
		{[]int{0, 1, 2}, 4, 8, []int{0, 0, 0}},
		{nil, 0, 0, []int{0, 0, 0}},
	} {
		ps := e.f.RunPass()
		if got := e.written(); !slices.Equal(got, want.files) {
			t.Fatalf("pass %d wrote files %v, want %v", pass, got, want.files)
		}
		if ps.Expired != want.expired || ps.Background != want.backgrnd {
			t.Fatalf("pass %d: %+v, want %d expired and %d background pages", pass, ps, want.expired, want.backgrnd)
		}
		if got := e.dirtyPages(); !slices.Equal(got, want.left) {
			t.Fatalf("pass %d: dirty pages %v, want %v", pass, got, want.left)
		}
	}
	for i := range 3 {
		e.onDisk(i, 0, 12, byte(i+1))
	}
}

// TestFlusherBudget: a pass writes at most PagesPerPass pages of a mapping,
// resuming where the last pass stopped (the writeback index), and says
// when it left work behind.
func TestFlusherBudget(t *testing.T) {
	for _, tc := range []struct {
		budget int
		left   []int    // dirty pages after each pass
		index  []uint64 // writeback index after each pass
		more   []bool
	}{
		{16, []int{24, 8, 0}, []uint64{16, 32, 0}, []bool{true, true, false}},
		// The walk stops on the budget at page 40, or runs out of pages
		// there: the index stays 40 either way (nothing left to visit).
		{40, []int{0, 0, 0}, []uint64{40, 40, 40}, []bool{true, false, false}},
		{1024, []int{0, 0, 0}, []uint64{40, 40, 40}, []bool{false, false, false}},
	} {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			e := newFlushEnv(t, 1, mpagetest.EnvConfig{}, mpage.FlusherConfig{PagesPerPass: tc.budget})
			e.dirty(0, 0, 40, 5)
			e.clock.Advance(time.Minute)
			for pass := range tc.left {
				ps := e.f.RunPass()
				m := e.files[0]
				if d, idx := m.DirtyPages(), m.WritebackIndex(); d != tc.left[pass] || idx != tc.index[pass] || ps.More != tc.more[pass] {
					t.Fatalf("pass %d: %d dirty pages, writeback index %d, more %v; want %d, %d, %v",
						pass, d, idx, ps.More, tc.left[pass], tc.index[pass], tc.more[pass])
				}
				if want := min(int64(tc.budget), int64(40-pass*tc.budget)); want > 0 && ps.Expired != want {
					t.Fatalf("pass %d: %d pages written, want %d", pass, ps.Expired, want)
				}
			}
			e.onDisk(0, 0, 40, 5)
		})
	}
}

// truncatingOwner is an InodeWriter that truncates and closes another
// mapping the first time it is called: a file dropped in the middle of a
// pass that has it in its batch.
type truncatingOwner struct {
	victim *mpage.Mapping
	err    error
	calls  int
}

func (o *truncatingOwner) WriteInode() (bool, error) {
	o.calls++
	if o.calls == 1 {
		o.err = errors.Join(o.victim.Truncate(0), o.victim.Close())
	}
	return false, nil
}

// TestFlusherMappingRemoved: a mapping whose dirty pages are truncated
// away leaves the dirty list (one that keeps some stays), and a mapping
// dropped while a pass holds it is passed over without harm.
func TestFlusherMappingRemoved(t *testing.T) {
	owner := &truncatingOwner{}
	e := newFlushEnv(t, 4, mpagetest.EnvConfig{}, mpage.FlusherConfig{}, owner)
	for i := range 4 {
		e.dirty(i, 0, 8, byte(i))
	}
	owner.victim = e.files[3]
	if err := e.files[1].Truncate(0); err != nil {
		t.Fatal(err)
	}
	if err := e.files[2].Truncate(4 * mpage.PageSize); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.files[1].DirtiedWhen(); ok {
		t.Fatal("file 1 still on the dirty list after truncation to 0")
	}
	if _, ok := e.files[2].DirtiedWhen(); !ok {
		t.Fatal("file 2 left the dirty list with 4 dirty pages")
	}
	if err := e.files[1].Close(); err != nil {
		t.Fatal(err)
	}
	if n := e.Cache.DirtyMappings(); n != 3 {
		t.Fatalf("%d dirty mappings, want 3 (files 0, 2, 3)", n)
	}
	e.clock.Advance(time.Minute)
	ps := e.f.RunPass()
	if owner.err != nil {
		t.Fatalf("dropping file 3 during the pass: %v", owner.err)
	}
	if got := e.written(); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("pass wrote files %v, want [0 2]", got)
	}
	if ps.Expired != 12 || ps.Errors != 0 {
		t.Fatalf("pass %+v, want 12 expired pages and no errors", ps)
	}
	if n := e.Cache.DirtyMappings(); n != 0 {
		t.Fatalf("%d dirty mappings after the pass", n)
	}
}

// gateOwner is an InodeWriter that blocks in its first call until
// released: a pass held in the middle.
type gateOwner struct {
	entered, release chan struct{}
	once             sync.Once
}

func (g *gateOwner) WriteInode() (bool, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return true, nil
}

// TestFlusherStopDuringPass: Stop stops a pass before its next mapping and
// waits for it (or says its context ran out); the cache can then take a
// new Flusher, which it refused while the first was attached.
func TestFlusherStopDuringPass(t *testing.T) {
	gate := &gateOwner{entered: make(chan struct{}), release: make(chan struct{})}
	e := newFlushEnv(t, 2, mpagetest.EnvConfig{}, mpage.FlusherConfig{Interval: time.Hour}, gate)
	if _, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: e.Cache}); !errors.Is(err, mpage.ErrFlusherAttached) {
		t.Fatalf("second flusher: %v, want ErrFlusherAttached", err)
	}
	e.dirty(0, 0, 4, 1)
	e.dirty(1, 0, 4, 2)
	e.clock.Advance(time.Minute)
	e.f.Start()
	e.f.Kick()
	<-gate.entered // the pass has written file 0 and sits in its inode write
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.f.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with the pass held: %v, want context.Canceled", err)
	}
	close(gate.release)
	if err := e.f.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.dirtyPages(); !slices.Equal(got, []int{0, 4}) {
		t.Fatalf("dirty pages %v after Stop, want [0 4]: the pass should stop before file 1", got)
	}
	if ps := e.f.RunPass(); !ps.Stopped || ps.Expired != 0 {
		t.Fatalf("pass after Stop: %+v", ps)
	}
	if st := e.Stats.Snapshot(); st.FlusherPasses != 1 || st.FlusherInodeWrites != 1 {
		t.Fatalf("%d passes, %d inode writes; want 1 and 1", st.FlusherPasses, st.FlusherInodeWrites)
	}
	f2, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: e.Cache})
	if err != nil {
		t.Fatalf("flusher after Stop: %v", err)
	}
	if ps := f2.RunPass(); ps.Expired != 4 {
		t.Fatalf("new flusher's pass: %+v, want file 1's 4 pages", ps)
	}
	if err := f2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestFlusherKickFromBalanceDirty: a writer crossing the background
// threshold wakes a Flusher that would otherwise sleep for an hour.
func TestFlusherKickFromBalanceDirty(t *testing.T) {
	passes := make(chan mpage.PassStats, 64)
	e := newFlushEnv(t, 1, mpagetest.EnvConfig{CacheBytes: 1 << 20, DirtyRatio: 0.8},
		mpage.FlusherConfig{Interval: time.Hour, BackgroundRatio: 0.1, OnPass: func(ps mpage.PassStats) {
			select {
			case passes <- ps:
			default:
			}
		}})
	e.f.Start()
	// 25 pages start background writeback; WriteAt balances every 16
	// pages, so the kick comes at page 32, far below the 204 where the
	// writer would throttle (and write pages itself).
	e.dirty(0, 0, 64, 4)
	var ps mpage.PassStats
	select {
	case ps = <-passes:
	case <-time.After(time.Minute): // a guard against hanging, not a timing assertion
		t.Fatal("no pass after the writer crossed the background threshold")
	}
	if ps.Background == 0 || ps.Expired != 0 {
		t.Fatalf("kicked pass %+v, want background pages", ps)
	}
	if st := e.Stats.Snapshot(); st.ThrottleWaits != 0 {
		t.Fatalf("the writer was throttled %d times", st.ThrottleWaits)
	}
}

// TestFlusherFailingMapping: a mapping whose writes fail is backed off
// (1, 2, 4 Intervals) and logged once per window while the others are
// written every pass; once the device recovers, so does it.
func TestFlusherFailingMapping(t *testing.T) {
	e := newFlushEnv(t, 2, mpagetest.EnvConfig{CacheBytes: 512 << 10, DirtyRatio: 0.9},
		mpage.FlusherConfig{BackgroundRatio: 0.01})
	e.Ring.FailAt(uring.OpWritev, 0, syscall.EIO) // file 0's first page
	e.dirty(0, 0, 4, 1)
	var failingPasses []int
	for pass := 1; pass <= 10; pass++ {
		e.clock.Advance(time.Second)
		e.dirty(1, 0, 4, byte(pass))
		e.f.RunPass()
		got := e.written()
		if !slices.Contains(got, 1) {
			t.Fatalf("pass %d: file 1 not written (wrote %v)", pass, got)
		}
		if slices.Contains(got, 0) {
			failingPasses = append(failingPasses, pass)
		}
		e.onDisk(1, 0, 4, byte(pass))
	}
	// Tried at 1 (fails unseen), 2 (seen: back off 1 s), 3 (2 s), 5 (4 s), 9.
	if want := []int{1, 2, 3, 5, 9}; !slices.Equal(failingPasses, want) {
		t.Fatalf("file 0 written in passes %v, want %v", failingPasses, want)
	}
	st := e.Stats.Snapshot()
	if st.FlusherErrors != 4 {
		t.Fatalf("%d flusher errors, want 4", st.FlusherErrors)
	}
	if logs := e.logs.get(); len(logs) != 1 || !strings.Contains(logs[0], "file 0") {
		t.Fatalf("logs %q: want one line about file 0 (rate-limited)", logs)
	}
	if e.files[0].Err() == nil || e.files[0].DirtyPages() != 4 {
		t.Fatalf("file 0: error %v, %d dirty pages; want the error and 4", e.files[0].Err(), e.files[0].DirtyPages())
	}
	e.Ring.ClearFaults()
	e.clock.Advance(8 * time.Second) // past its 8 s back-off
	e.f.RunPass()
	e.onDisk(0, 0, 4, 1)
	if err := e.files[0].Err(); err != nil || e.files[0].DirtyPages() != 0 {
		t.Fatalf("file 0 after recovery: %v, %d dirty pages", err, e.files[0].DirtyPages())
	}
}

// errOwner is an InodeWriter that fails.
type errOwner struct{ calls int }

func (o *errOwner) WriteInode() (bool, error) {
	o.calls++
	return false, syscall.ENOSPC
}

// TestFlusherInodeWriter: the Owner's inode write follows the mapping's
// pages; its failure backs the mapping off like a write error.
func TestFlusherInodeWriter(t *testing.T) {
	gate := &gateOwner{entered: make(chan struct{}), release: make(chan struct{})}
	close(gate.release)
	bad := &errOwner{}
	// An Interval of an hour backs a failing mapping off for an hour.
	e := newFlushEnv(t, 2, mpagetest.EnvConfig{}, mpage.FlusherConfig{Interval: time.Hour}, gate, bad)
	e.dirty(0, 0, 2, 1)
	e.dirty(1, 0, 2, 1)
	e.clock.Advance(time.Minute)
	ps := e.f.RunPass()
	if ps.Inodes != 1 || ps.Errors != 1 || bad.calls != 1 {
		t.Fatalf("pass %+v, %d failing inode writes; want 1 inode, 1 error, 1 call", ps, bad.calls)
	}
	if logs := e.logs.get(); len(logs) != 1 || !strings.Contains(logs[0], "write inode") || !strings.Contains(logs[0], syscall.ENOSPC.Error()) {
		t.Fatalf("logs %q", logs)
	}
	e.dirty(1, 4, 1, 2)
	e.clock.Advance(time.Minute)
	e.f.RunPass()
	if bad.calls != 1 {
		t.Fatal("the failing owner was not backed off")
	}
	if st := e.Stats.Snapshot(); st.FlusherInodeWrites != 1 || st.FlusherErrors != 1 {
		t.Fatalf("%d inode writes, %d errors; want 1 and 1", st.FlusherInodeWrites, st.FlusherErrors)
	}
}

// countOwner is an InodeWriter that counts its calls and always writes.
type countOwner struct{ calls int }

func (o *countOwner) WriteInode() (bool, error) {
	o.calls++
	return true, nil
}

// TestFlusherInodeMark: MarkInodeDirty lists a mapping that has no dirty
// page (its owner's inode changed by someone else's writeback) until the
// Flusher has called WriteInode; a failed inode write keeps it listed.
// Without an InodeWriter the mark means nothing.
func TestFlusherInodeMark(t *testing.T) {
	good, bad := &countOwner{}, &errOwner{}
	e := newFlushEnv(t, 3, mpagetest.EnvConfig{}, mpage.FlusherConfig{Interval: time.Minute}, good, bad)
	t0 := e.clock.Now()
	for _, m := range e.files {
		m.MarkInodeDirty()
	}
	if _, listed := e.files[2].DirtiedWhen(); listed {
		t.Fatal("a mapping without an InodeWriter was listed by its mark")
	}
	e.clock.Advance(time.Second)
	e.dirty(0, 0, 2, 1)
	if err := e.files[0].WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if when, listed := e.files[0].DirtiedWhen(); !listed || !when.Equal(t0) || e.Cache.DirtyMappings() != 2 {
		t.Fatalf("file 0 after its pages were written: listed %v at %v (want %v), %d dirty mappings; want it kept by the mark",
			listed, when, t0, e.Cache.DirtyMappings())
	}
	e.clock.Advance(time.Minute)
	ps := e.f.RunPass()
	if good.calls != 1 || bad.calls != 1 || ps.Inodes != 1 || ps.Errors != 1 || ps.Expired != 0 {
		t.Fatalf("pass %+v, inode writes %d good and %d failing; want 1 and 1", ps, good.calls, bad.calls)
	}
	if _, listed := e.files[0].DirtiedWhen(); listed {
		t.Fatal("file 0 still listed after its inode was written")
	}
	if _, listed := e.files[1].DirtiedWhen(); !listed {
		t.Fatal("file 1 left the list though its inode write failed")
	}
	e.clock.Advance(2 * time.Minute) // past its back-off
	e.f.RunPass()
	if bad.calls != 2 || good.calls != 1 {
		t.Fatalf("second pass: %d good and %d failing inode writes, want 1 and 2", good.calls, bad.calls)
	}
}

// TestFlusherCongestion: a congested device stops the pass before it
// writes; the next pass, uncongested, writes.
func TestFlusherCongestion(t *testing.T) {
	e := newFlushEnv(t, 1, mpagetest.EnvConfig{}, mpage.FlusherConfig{})
	e.dirty(0, 0, 8, 3)
	e.clock.Advance(time.Minute)
	e.Ring.SetInFlight(1000)
	if ps := e.f.RunPass(); !ps.Congested || ps.Expired != 0 {
		t.Fatalf("congested pass %+v", ps)
	}
	e.Ring.SetInFlight(-1)
	if ps := e.f.RunPass(); ps.Congested || ps.Expired != 8 {
		t.Fatalf("pass %+v, want 8 pages", ps)
	}
	e.onDisk(0, 0, 8, 3)
	if st := e.Stats.Snapshot(); st.FlusherCongested != 1 || st.FlusherPasses != 2 {
		t.Fatalf("%d congested of %d passes, want 1 of 2", st.FlusherCongested, st.FlusherPasses)
	}
}

// TestFlusherConfig: background ratios out of range are refused.
func TestFlusherConfig(t *testing.T) {
	for _, tc := range []struct {
		ratio float64
		ok    bool
	}{{0, true}, {0.1, true}, {0.39, true}, {0.4, false}, {0.9, false}, {-0.1, false}, {1, false}} {
		e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{CacheBytes: 1 << 20}) // dirty ratio 0.4
		f, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: e.Cache, BackgroundRatio: tc.ratio})
		if (err == nil) != tc.ok {
			t.Fatalf("ratio %v: %v", tc.ratio, err)
		}
		if f != nil {
			if err := f.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestDirtyTaggingAllocs: the write path's dirty tagging, which puts the
// mapping on the cache's dirty list and takes it off again, allocates
// nothing.
func TestDirtyTaggingAllocs(t *testing.T) {
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{NoRecord: true, Mapper: mpage.LinearMapper{Blocks: 4096}})
	m, buf := e.Mapping, make([]byte, mpage.PageSize)
	cycle := func() {
		if _, err := m.WriteAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		if _, listed := m.DirtiedWhen(); !listed {
			t.Fatal("dirty mapping not on the dirty list")
		}
		if err := m.WriteAndWait(0, -1); err != nil {
			t.Fatal(err)
		}
		if _, listed := m.DirtiedWhen(); listed {
			t.Fatal("clean mapping on the dirty list")
		}
	}
	cycle() // the page and the Bio machinery exist from here on
	if n := testing.AllocsPerRun(1000, cycle); n != 0 {
		t.Fatalf("%v allocations per write and writeback of a page", n)
	}
}

// TestFlusherConcurrent runs the Flusher's goroutine (real clock, a pass
// every millisecond, data expiring after two) under -race against writers
// that write, truncate, and sync, close and reopen their files, in a cache
// small enough for throttling, eviction and background writeback. Every
// page a writer left must be on the device and in the cache at the end.
func TestFlusherConcurrent(t *testing.T) {
	const (
		writers = 4
		iters   = 200
	)
	passes := make(chan struct{}, 1)
	e := newFlushEnv(t, writers, mpagetest.EnvConfig{CacheBytes: 512 << 10, NoRecord: true},
		mpage.FlusherConfig{Now: time.Now, Interval: time.Millisecond, ExpireAge: 2 * time.Millisecond, PagesPerPass: 16,
			OnPass: func(mpage.PassStats) {
				select {
				case passes <- struct{}{}:
				default:
				}
			}})
	e.f.Start()
	// model[w][p] is the version page p of file w must hold at the end;
	// 0: unknown (never written, or cut off by a truncation and not
	// written since: the device may hold anything there).
	model := make([][stressPages]int, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := flushWriter(e, w, iters, &model[w]); err != nil {
				errs <- fmt.Errorf("writer %d: %w", w, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// One more pass, known to run: a kick after the writers are done.
	for len(passes) > 0 {
		<-passes
	}
	e.f.Kick()
	select {
	case <-passes:
	case <-time.After(time.Minute): // a guard against hanging, not a timing assertion
		t.Fatal("no pass after a kick")
	}
	if err := e.f.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for w, m := range e.files {
		if err := m.WriteAndWait(0, -1); err != nil {
			t.Fatal(err)
		}
		e.Drain()
		end := int(m.Size() / mpage.PageSize)
		cached := mustRead(t, m, end*mpage.PageSize, 0)
		for p, v := range model[w][:end] {
			if v == 0 {
				continue
			}
			dev := e.Disk()[int64(w)*flushFileBytes+int64(p)*mpage.PageSize:][:mpage.PageSize]
			want := bytes.Repeat([]byte{byte(v)}, mpage.PageSize)
			if !bytes.Equal(dev, want) || !bytes.Equal(cached[p*mpage.PageSize:][:mpage.PageSize], want) {
				t.Fatalf("file %d page %d: device %#x, cache %#x, want %#x", w, p, dev[0], cached[p*mpage.PageSize], v)
			}
		}
	}
	st := e.Stats.Snapshot()
	t.Logf("flusher: %d passes, %d expired and %d background pages, %d congested; throttle waits %d, evictions %d",
		st.FlusherPasses, st.FlusherExpiredPages, st.FlusherBackgroundPages, st.FlusherCongested, st.ThrottleWaits, st.Evictions)
	if st.FlusherErrors != 0 || len(e.logs.get()) != 0 {
		t.Fatalf("%d flusher errors: %q", st.FlusherErrors, e.logs.get())
	}
}

// stressPages is the size of a TestFlusherConcurrent file in pages.
const stressPages = 64

// flushWriter is one writer of TestFlusherConcurrent: runs of whole pages
// of version v, now and then a truncation, or a sync, close and reopen of
// its file (a new Mapping over the same blocks).
func flushWriter(e *flushEnv, w, iters int, model *[stressPages]int) error {
	rng := rand.New(rand.NewPCG(uint64(w), 7))
	buf := make([]byte, 4*mpage.PageSize)
	for v := 1; v <= iters; v++ {
		m := e.files[w]
		switch r := rng.IntN(40); {
		case r == 0:
			n := rng.IntN(len(model))
			if err := m.Truncate(int64(n) * mpage.PageSize); err != nil {
				return err
			}
			clear(model[n:])
		case r == 1:
			if err := m.WriteAndWait(0, -1); err != nil {
				return err
			}
			if err := m.Close(); err != nil {
				return err
			}
			nm, err := mpage.NewMapping(e.fileConfig(w, nil, m.Size()))
			if err != nil {
				return err
			}
			e.files[w] = nm
		default:
			p, k := rng.IntN(len(model)), 1+rng.IntN(4)
			k = min(k, len(model)-p)
			b := buf[:k*mpage.PageSize]
			for i := range b {
				b[i] = byte(v)
			}
			if _, err := m.WriteAt(b, int64(p)*mpage.PageSize); err != nil {
				return err
			}
			for i := range k {
				model[p+i] = v
			}
		}
	}
	return nil
}

// BenchmarkDirtyFlip is the write path's cost around the dirty list: one
// page written (the mapping goes from clean to dirty: onto the list) and
// written back (off it again) per op, and a page rewritten while the
// mapping stays dirty (no list work).
func BenchmarkDirtyFlip(b *testing.B) {
	for _, tc := range []struct {
		name string
		sync bool
	}{{"write+writeback", true}, {"rewrite-dirty", false}} {
		b.Run(tc.name, func(b *testing.B) {
			e := mpagetest.NewEnvWith(b, mpagetest.EnvConfig{NoRecord: true, Mapper: mpage.LinearMapper{Blocks: 4096}})
			m, buf := e.Mapping, make([]byte, 512)
			if _, err := m.WriteAt(buf, 0); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.WriteAt(buf, 0); err != nil {
					b.Fatal(err)
				}
				if tc.sync {
					if err := m.WriteAndWait(0, -1); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkFlusherPass is one background pass over many small dirty
// files (one page each, the cache over its background threshold): the
// list walk, the round-robin sort and a nonblocking WritePages per file.
// Dirtying the files again is outside the timer.
func BenchmarkFlusherPass(b *testing.B) {
	const files = 512
	e := mpagetest.NewEnvWith(b, mpagetest.EnvConfig{NoRecord: true, DiskBytes: files * mpage.PageSize, CacheBytes: 4 << 20, DirtyRatio: 0.9, Entries: 4096})
	f, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: e.Cache, BackgroundRatio: 0.01})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Stop(context.Background()) })
	ms := make([]*mpage.Mapping, files)
	for i := range ms {
		if ms[i], err = mpage.NewMapping(mpage.MappingConfig{Device: e.Dev, Cache: e.Cache, BlockSize: 4096,
			Mapper: mpage.LinearMapper{Start: uint64(i), Blocks: 1}, Name: "f"}); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		e.Drain()
		for _, m := range ms {
			m.Truncate(0)
			m.Close()
		}
	})
	buf := make([]byte, mpage.PageSize)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		e.Drain()
		for _, m := range ms {
			if _, err := m.WriteAt(buf, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if ps := f.RunPass(); ps.Background < files-int64(f.BackgroundThreshold()) {
			b.Fatalf("pass %+v", ps)
		}
	}
}
