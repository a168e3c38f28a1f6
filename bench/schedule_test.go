package bench

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestRunOrderAlternates(t *testing.T) {
	for _, n := range []int{1, 2, 3, 6} {
		firsts := map[int]bool{}
		for rep := range 2 * n {
			order := runOrder(n, rep)
			sorted := slices.Sorted(slices.Values(order))
			for i, v := range sorted {
				if v != i {
					t.Fatalf("n=%d rep %d: order %v is not a permutation", n, rep, order)
				}
			}
			if rep%2 == 1 {
				prev := runOrder(n, rep-1)
				// Odd repetitions run the even one's order backwards
				// when no rotation happens in between: A B, B A.
				if rep/2 == (rep-1)/2 && !slices.Equal(order, reversed(prev)) {
					t.Fatalf("n=%d rep %d: %v is not %v reversed", n, rep, order, prev)
				}
			}
			firsts[order[0]] = true
		}
		if len(firsts) != n {
			t.Fatalf("n=%d: only runners %v go first in %d repetitions", n, firsts, 2*n)
		}
	}
}

func reversed(s []int) []int {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// fakeRunner applies to the workloads it names.
type fakeRunner struct {
	name    string
	applies []string
}

func (f fakeRunner) Name() string                      { return f.name }
func (f fakeRunner) Applies(w Workload) bool           { return slices.Contains(f.applies, w.Name) }
func (f fakeRunner) Setup(context.Context, *Env) error { return nil }
func (f fakeRunner) Run(context.Context, Workload) (Result, error) {
	return Result{}, errors.New("fake")
}
func (f fakeRunner) Teardown() error { return nil }

func TestSchedule(t *testing.T) {
	cfg, err := Config{Quick: true, Repetitions: 2, Workloads: []string{"seqread", "randread"}}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	runners := []Runner{
		fakeRunner{"a", []string{"seqread", "randread"}},
		fakeRunner{"b", []string{"seqread"}},
		fakeRunner{"c", []string{"seqread", "randread"}},
	}
	var got []string
	for _, p := range schedule(cfg, cfg.workloads(), runners) {
		got = append(got, p.w.Name+"/"+p.runner.Name()+"/"+string(rune('0'+p.w.Rep)))
	}
	want := []string{
		"seqread/a/0", "seqread/b/0", "seqread/c/0",
		"seqread/c/1", "seqread/b/1", "seqread/a/1",
		"randread/a/0", "randread/c/0",
		"randread/c/1", "randread/a/1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("schedule\n got %v\nwant %v", got, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       Config
		size     int64
		duration time.Duration
		reps     int
		cache    int64
	}{
		{"full", Config{}, defaultSize, defaultDuration, defaultRepetitions, defaultCacheBytes},
		{"quick", Config{Quick: true}, quickSize, quickDuration, quickRepetitions, quickCacheBytes},
		{"quick, flags win", Config{Quick: true, Size: 128 << 20, Duration: time.Second, Repetitions: 5, CacheBytes: 2 << 20},
			128 << 20, time.Second, 5, 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.in.normalize()
			if err != nil {
				t.Fatal(err)
			}
			if c.Size != tc.size || c.Duration != tc.duration || c.Repetitions != tc.reps || c.CacheBytes != tc.cache ||
				c.BlockSize != defaultBlockSize || c.Format != FormatTable {
				t.Fatalf("normalize = size %d, duration %v, reps %d, cache %d, bs %d, format %q", c.Size, c.Duration, c.Repetitions, c.CacheBytes, c.BlockSize, c.Format)
			}
		})
	}
}

func TestConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
	}{
		{"block size not a power of two", Config{BlockSize: 100 << 10}},
		{"block size under 4 KiB", Config{BlockSize: 2048}},
		{"size not whole blocks", Config{Size: 1<<20 + 4096}},
		{"size under 4 blocks", Config{Size: 256 << 10}},
		{"negative depth", Config{Depth: -1}},
		{"tiny duration", Config{Duration: time.Millisecond}},
		{"negative repetitions", Config{Repetitions: -2}},
		{"small cache", Config{CacheBytes: 4096}},
		{"format", Config{Format: "xml"}},
		{"workload", Config{Workloads: []string{"seqread", "zigzag"}}},
		{"runner", Config{Runners: []string{"dd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.in.normalize(); !errors.Is(err, ErrConfig) {
				t.Fatalf("normalize = %v, want ErrConfig", err)
			}
		})
	}
}

func TestWorkloadsFromConfig(t *testing.T) {
	c, err := Config{BlockSize: 1 << 20, Workloads: []string{"mix", "seqread", "randread"}}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	ws := c.workloads()
	var names []string
	for _, w := range ws {
		names = append(names, w.Name)
	}
	// Run order is the harness's (reads first), not the flag's.
	if !slices.Equal(names, []string{"seqread", "randread", "mix"}) {
		t.Fatalf("workloads %v", names)
	}
	for _, w := range ws {
		wantBS, wantDepth := 1<<20, 32
		if w.Pattern == Random {
			wantBS = randomBlockSize
		}
		if w.Name == "randread" {
			wantDepth = 128
		}
		if w.BlockSize != wantBS || w.Depth != wantDepth || w.Region != defaultSize || w.Duration != defaultDuration {
			t.Errorf("%s: bs %d depth %d region %d duration %v", w.Name, w.BlockSize, w.Depth, w.Region, w.Duration)
		}
	}
	c.Depth = 4
	for _, w := range c.workloads() {
		if w.Depth != 4 {
			t.Errorf("%s: depth %d with --depth 4", w.Name, w.Depth)
		}
	}
}

func TestSplitList(t *testing.T) {
	if got := SplitList(" seqread, ,mix,"); !slices.Equal(got, []string{"seqread", "mix"}) {
		t.Fatalf("SplitList = %q", got)
	}
	if got := SplitList(""); got != nil {
		t.Fatalf("SplitList(\"\") = %q", got)
	}
}
