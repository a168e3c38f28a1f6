package faultring_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
	"github.com/mpaged/mpaged/uring/ringtest"
)

// TestConformanceTransparent runs the shared ring suite through a fault ring
// that has a rule which never fires: wrapping must not change behaviour.
func TestConformanceTransparent(t *testing.T) {
	for _, in := range ringtest.Backends {
		t.Run(in.Name, func(t *testing.T) {
			ringtest.Run(t, func(t *testing.T, opts uring.Options) uring.Ring {
				f := faultring.New(in.Open(t, opts), 1)
				f.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Off: 1 << 50, Fault: faultring.Fault{Errno: syscall.EIO}})
				return f
			})
		})
	}
}

type fixture struct {
	ring *faultring.Ring
	file uring.File
	buf  []byte
}

func newFixture(t *testing.T, open func(*testing.T, uring.Options) uring.Ring) *fixture {
	r := faultring.New(open(t, uring.Options{}), 42)
	t.Cleanup(func() { _ = r.Close() })
	f, err := os.Create(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	h, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ring: r, file: h, buf: ringtest.Aligned(t, 8192)}
}

func (fx *fixture) req(op uring.Op, off int64, c uring.Handler) *uring.Request {
	q := &uring.Request{Op: op, File: fx.file, Offset: off, Handler: c, BufIndex: uring.NoBuffer}
	switch op {
	case uring.OpReadv, uring.OpWritev:
		q.Vecs = [][]byte{fx.buf[:4096], fx.buf[4096:]}
	case uring.OpRead, uring.OpWrite:
		q.Buf = fx.buf
	}
	return q
}

func (fx *fixture) do(t *testing.T, op uring.Op, off int64) *uring.Request {
	t.Helper()
	c := ringtest.NewCollector(1)
	if err := fx.ring.Submit(fx.req(op, off, c)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	return c.Wait(t, 1, 10*time.Second)[0]
}

func TestFaultKinds(t *testing.T) {
	for _, in := range ringtest.Backends {
		t.Run(in.Name, func(t *testing.T) {
			t.Run("EIOInRange", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				rule := fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWritev), Off: 64 << 10, End: 128 << 10, Fault: faultring.Fault{Errno: syscall.EIO}})
				if q := fx.do(t, uring.OpWritev, 0); q.Err != nil || q.Res != 8192 {
					t.Fatalf("write outside the range: res %d err %v", q.Res, q.Err)
				}
				// 60 KiB..68 KiB overlaps the range's start.
				if q := fx.do(t, uring.OpWritev, 60<<10); !errors.Is(q.Err, syscall.EIO) || q.Res != 0 {
					t.Fatalf("write overlapping the range: res %d err %v, want EIO", q.Res, q.Err)
				}
				if q := fx.do(t, uring.OpReadv, 64<<10); q.Err != nil {
					t.Fatalf("read in range with a writev-only rule: %v", q.Err)
				}
				if rule.Fired() != 1 {
					t.Fatalf("rule fired %d times, want 1", rule.Fired())
				}
			})
			t.Run("ENOSPCCount", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWrite, uring.OpWritev), Count: 2, Fault: faultring.Fault{Errno: syscall.ENOSPC}})
				var got []bool
				for i := range 4 {
					q := fx.do(t, uring.OpWrite, int64(i)*8192)
					got = append(got, errors.Is(q.Err, syscall.ENOSPC))
				}
				if want := []bool{true, true, false, false}; !slices.Equal(got, want) {
					t.Fatalf("ENOSPC pattern %v, want %v", got, want)
				}
				if st := fx.ring.FaultStats(); st.Errors != 2 {
					t.Fatalf("fault stats %+v, want 2 errors", st)
				}
			})
			t.Run("EAGAINRetried", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				rule := fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpReadv), Count: 3, Fault: faultring.Fault{Transient: true, Backoff: time.Millisecond}})
				q := fx.do(t, uring.OpReadv, 0)
				if q.Err != nil || q.Res != 8192 {
					t.Fatalf("read after 3 transient EAGAINs: res %d err %v, want success", q.Res, q.Err)
				}
				if rule.Fired() != 3 || fx.ring.FaultStats().Transients != 3 {
					t.Fatalf("EAGAIN fired %d times (stats %+v), want 3", rule.Fired(), fx.ring.FaultStats())
				}
			})
			t.Run("ShortTransfer", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpReadv), Nth: 2, Fault: faultring.Fault{Short: 5000}})
				if q := fx.do(t, uring.OpReadv, 0); q.Res != 8192 {
					t.Fatalf("first read: res %d, want 8192", q.Res)
				}
				q := fx.do(t, uring.OpReadv, 0)
				if q.Err != nil || q.Res != 5000 {
					t.Fatalf("second read (nth=2 short): res %d err %v, want 5000", q.Res, q.Err)
				}
				if len(q.Vecs) != 2 || len(q.Vecs[0])+len(q.Vecs[1]) != 8192 {
					t.Fatal("short fault did not give the caller its vecs back")
				}
				if q := fx.do(t, uring.OpReadv, 0); q.Res != 8192 {
					t.Fatalf("third read: res %d, want 8192", q.Res)
				}
			})
			t.Run("ShortHalfSingleBuffer", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpWrite), Fault: faultring.Fault{Short: -1}})
				q := fx.do(t, uring.OpWrite, 0)
				if q.Err != nil || q.Res != 4096 || len(q.Buf) != 8192 {
					t.Fatalf("half-short write: res %d err %v buf %d", q.Res, q.Err, len(q.Buf))
				}
			})
			t.Run("Delay", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				const d = 30 * time.Millisecond
				fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpFsync), Fault: faultring.Fault{Delay: d}})
				start := time.Now()
				q := fx.do(t, uring.OpFsync, 0)
				if q.Err != nil {
					t.Fatal(q.Err)
				}
				// A lower bound only: the completion cannot come before
				// the delay, however slow the machine.
				if el := time.Since(start); el < d {
					t.Fatalf("delayed completion after %v, want >= %v", el, d)
				}
			})
			t.Run("ProbabilityIsSeeded", func(t *testing.T) {
				count := func() int64 {
					fx := newFixture(t, in.Open)
					rule := fx.ring.Add(faultring.Rule{Ops: faultring.Ops(uring.OpNop), Prob: 0.25, Fault: faultring.Fault{Errno: syscall.EIO}})
					c := ringtest.NewCollector(400)
					for range 400 {
						if err := fx.ring.Submit(&uring.Request{Op: uring.OpNop, Handler: c, BufIndex: uring.NoBuffer}); err != nil {
							t.Fatal(err)
						}
					}
					failed := int64(0)
					for _, q := range c.Wait(t, 400, 10*time.Second) {
						if q.Err != nil {
							failed++
						}
					}
					if failed != rule.Fired() {
						t.Fatalf("%d failed but the rule fired %d times", failed, rule.Fired())
					}
					return failed
				}
				a, b := count(), count()
				if a != b || a < 50 || a > 150 {
					t.Fatalf("p=0.25 over 400 ops failed %d then %d, want equal and near 100", a, b)
				}
			})
			t.Run("ToggleAndRemove", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				rule := fx.ring.Add(faultring.Rule{Fault: faultring.Fault{Errno: syscall.EIO}})
				fx.ring.SetEnabled(false)
				if q := fx.do(t, uring.OpReadv, 0); q.Err != nil {
					t.Fatalf("disabled ring injected %v", q.Err)
				}
				fx.ring.SetEnabled(true)
				if q := fx.do(t, uring.OpReadv, 0); !errors.Is(q.Err, syscall.EIO) {
					t.Fatalf("enabled ring: %v, want EIO", q.Err)
				}
				fx.ring.Remove(rule)
				if q := fx.do(t, uring.OpReadv, 0); q.Err != nil {
					t.Fatalf("after Remove: %v", q.Err)
				}
			})
			t.Run("CloseWithDelayedInFlight", func(t *testing.T) {
				fx := newFixture(t, in.Open)
				fx.ring.Add(faultring.Rule{Fault: faultring.Fault{Delay: 50 * time.Millisecond}})
				c := ringtest.NewCollector(8)
				for i := range 8 {
					if err := fx.ring.Submit(fx.req(uring.OpWritev, int64(i)*8192, c)); err != nil {
						t.Fatal(err)
					}
				}
				if err := fx.ring.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
				if len(c.C) != 8 {
					t.Fatalf("%d of 8 delayed completions delivered by Close", len(c.C))
				}
				if fx.ring.InFlight() != 0 {
					t.Fatalf("in flight after close: %d", fx.ring.InFlight())
				}
				if err := fx.ring.Submit(fx.req(uring.OpNop, 0, c)); !errors.Is(err, uring.ErrClosed) {
					t.Fatalf("submit after close: %v", err)
				}
			})
		})
	}
}

func TestParseRule(t *testing.T) {
	tests := []struct {
		spec    string
		want    faultring.Rule
		wantErr string
	}{
		{spec: "op=writev|write,off=0,end=1048576,errno=EIO,count=3", want: faultring.Rule{Ops: faultring.Ops(uring.OpWritev, uring.OpWrite), End: 1 << 20, Count: 3, Fault: faultring.Fault{Errno: syscall.EIO}}},
		{spec: "op=readv,prob=0.01,delay=20ms", want: faultring.Rule{Ops: faultring.Ops(uring.OpReadv), Prob: 0.01, Fault: faultring.Fault{Delay: 20 * time.Millisecond}}},
		{spec: "name=x,eagain,nth=2", want: faultring.Rule{Name: "x", Nth: 2, Fault: faultring.Fault{Transient: true}}},
		{spec: "short=-1,off=0x1000", want: faultring.Rule{Off: 4096, Fault: faultring.Fault{Short: -1}}},
		{spec: "errno=enospc", want: faultring.Rule{Fault: faultring.Fault{Errno: syscall.ENOSPC}}},
		{spec: "", wantErr: "exactly one"},
		{spec: "errno=EIO,delay=1s", wantErr: "exactly one"},
		{spec: "errno=EWHAT", wantErr: "unknown errno"},
		{spec: "op=open,errno=EIO", wantErr: "unknown op"},
		{spec: "prob=2,errno=EIO", wantErr: "outside"},
		{spec: "off=10,end=5,errno=EIO", wantErr: "not after"},
		{spec: "off=-1,errno=EIO", wantErr: "negative"},
		{spec: "delay=-5ms", wantErr: "positive"},
		{spec: "short=0", wantErr: "injects nothing"},
		{spec: "bogus=1,errno=EIO", wantErr: "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := faultring.ParseRule(tc.spec)
			if tc.wantErr != "" {
				if !errors.Is(err, faultring.ErrBadSpec) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRule(%q) err %v, want ErrBadSpec containing %q", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.want.Name || got.Ops != tc.want.Ops || got.Off != tc.want.Off || got.End != tc.want.End ||
				got.Nth != tc.want.Nth || got.Count != tc.want.Count || got.Prob != tc.want.Prob || got.Fault != tc.want.Fault {
				t.Fatalf("ParseRule(%q) = %+v, want %+v", tc.spec, got, tc.want)
			}
		})
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"op=writev|write,off=0,end=1048576,errno=EIO,count=3", "eagain,nth=2", "short=-1", "delay=1ms,prob=0.5", ",,=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		r, err := faultring.ParseRule(spec)
		if err != nil {
			if !errors.Is(err, faultring.ErrBadSpec) {
				t.Fatalf("error not ErrBadSpec: %v", err)
			}
			return
		}
		if r.Prob < 0 || r.Prob > 1 || r.Off < 0 || (r.End != 0 && r.End <= r.Off) {
			t.Fatalf("accepted an inconsistent rule %+v from %q", r, spec)
		}
	})
}
