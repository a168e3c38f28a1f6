// Package faultring wraps a uring.Ring and injects faults into chosen
// requests: errors (EIO, ENOSPC, any errno), transient EAGAIN that is
// retried, short transfers, and delayed completions. Tests drive the engine's
// error paths with it, and the daemon exposes it behind a flag for drills.
//
// Faults are chosen by Rules, in the spirit of Pebble's vfs/errorfs: a rule
// matches by op, by byte range, by the nth matching call, at most Count
// times, and with a probability; the first rule that fires decides the
// request's fault. Rules can be added, removed and the whole ring switched
// off at run time.
//
// Requests that no rule touches go straight to the inner ring with their own
// handler, so a fault ring with no rules costs one lock per Submit. Faulted
// requests take a slower path that may allocate.
//
// What the caller sees:
//   - Errno: the request does not reach the device; it completes with Res 0
//     and the errno.
//   - Transient (EAGAIN): the request is retried after Backoff, as a real
//     backend retries EAGAIN; the caller sees a late success.
//   - Short: the device is asked for only Short bytes (or half when Short is
//     negative) and the request completes with that many and no error, like
//     a premature end of file.
//   - Delay: the request runs normally and its completion is held for Delay.
package faultring

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mpaged/mpaged/uring"
)

// OpMask selects ops; the zero mask selects every op.
type OpMask uint32

// Ops builds a mask from ops.
func Ops(ops ...uring.Op) OpMask {
	var m OpMask
	for _, o := range ops {
		m |= 1 << o
	}
	return m
}

// Has reports whether the mask selects o.
func (m OpMask) Has(o uring.Op) bool { return m == 0 || m&(1<<o) != 0 }

// Fault is what happens to a request a rule picks. Exactly one of the
// fields should be set; Errno wins over Transient, Transient over Short,
// Short over Delay.
type Fault struct {
	Errno     syscall.Errno
	Transient bool          // EAGAIN, retried after Backoff
	Backoff   time.Duration // for Transient; default 1ms
	Short     int           // bytes the device is asked for; <0 means half
	Delay     time.Duration // completion held this long
}

func (f Fault) String() string {
	switch {
	case f.Errno != 0:
		return "errno " + errnoName(f.Errno)
	case f.Transient:
		return "eagain"
	case f.Short != 0:
		return fmt.Sprintf("short %d", f.Short)
	case f.Delay > 0:
		return "delay " + f.Delay.String()
	}
	return "none"
}

// Rule picks requests for a fault. A request matches when its op is in Ops
// and its bytes [Offset, Offset+Len) overlap [Off, End) (End 0: no bound).
// Among matches, the rule fires on the Nth one only (Nth 0: on each), at
// most Count times (0: no limit), each time with probability Prob (0: 1).
type Rule struct {
	Name  string
	Ops   OpMask
	Off   int64
	End   int64
	Nth   int
	Count int
	Prob  float64
	Fault Fault
}

// Installed is a rule in a ring, with its counters.
type Installed struct {
	Rule
	matched atomic.Int64
	fired   atomic.Int64
}

// Fired is how many times the rule has injected its fault.
func (r *Installed) Fired() int64 { return r.fired.Load() }

// Matched is how many requests matched the rule's op and range.
func (r *Installed) Matched() int64 { return r.matched.Load() }

func (r *Rule) matches(q *uring.Request) bool {
	if !r.Ops.Has(q.Op) {
		return false
	}
	if r.Off == 0 && r.End == 0 {
		return true
	}
	if q.Offset == uring.OffsetCurrent {
		return false
	}
	end := q.Offset + int64(q.Len())
	if q.Len() == 0 {
		end = q.Offset + 1
	}
	return end > r.Off && (r.End == 0 || q.Offset < r.End)
}

// Stats count injected faults by kind.
type Stats struct {
	Errors, Transients, Shorts, Delays int64
}

// Ring is a uring.Ring that injects faults into the requests it forwards.
type Ring struct {
	inner uring.Ring

	mu      sync.Mutex
	rules   []*Installed
	rng     *rand.Rand
	enabled bool
	closing bool

	pending sync.WaitGroup // faulted requests not yet delivered
	held    atomic.Int64   // of those, how many the inner ring no longer counts
	stats   struct{ errors, transients, shorts, delays atomic.Int64 }
}

// New wraps inner. seed makes probabilistic rules repeatable.
func New(inner uring.Ring, seed uint64) *Ring {
	return &Ring{inner: inner, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), enabled: true}
}

// Inner is the wrapped ring.
func (f *Ring) Inner() uring.Ring { return f.inner }

// Add installs a rule and returns it with its counters.
func (f *Ring) Add(r Rule) *Installed {
	rule := &Installed{Rule: r}
	f.mu.Lock()
	f.rules = append(f.rules, rule)
	f.mu.Unlock()
	return rule
}

// Remove uninstalls a rule returned by Add.
func (f *Ring) Remove(rule *Installed) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.rules {
		if r == rule {
			f.rules = append(f.rules[:i], f.rules[i+1:]...)
			return
		}
	}
}

// Clear removes every rule.
func (f *Ring) Clear() {
	f.mu.Lock()
	f.rules = nil
	f.mu.Unlock()
}

// SetEnabled switches injection on or off without forgetting the rules.
func (f *Ring) SetEnabled(on bool) {
	f.mu.Lock()
	f.enabled = on
	f.mu.Unlock()
}

// FaultStats counts what was injected.
func (f *Ring) FaultStats() Stats {
	return Stats{
		Errors:     f.stats.errors.Load(),
		Transients: f.stats.transients.Load(),
		Shorts:     f.stats.shorts.Load(),
		Delays:     f.stats.delays.Load(),
	}
}

// pick returns the fault for q, if a rule fires. Caller holds f.mu.
func (f *Ring) pick(q *uring.Request) (Fault, bool) {
	if !f.enabled {
		return Fault{}, false
	}
	for _, r := range f.rules {
		if !r.matches(q) {
			continue
		}
		n := r.matched.Add(1)
		if r.Nth > 0 && n != int64(r.Nth) {
			continue
		}
		if r.Count > 0 && r.fired.Load() >= int64(r.Count) {
			continue
		}
		if r.Prob > 0 && r.Prob < 1 && f.rng.Float64() >= r.Prob {
			continue
		}
		r.fired.Add(1)
		return r.Fault, true
	}
	return Fault{}, false
}

// Submit forwards the requests, diverting the ones a rule picks.
func (f *Ring) Submit(reqs ...*uring.Request) error {
	// The valid requests before an invalid one are accepted, as every
	// backend does.
	for i, q := range reqs {
		if err := uring.Validate(q); err != nil {
			if i > 0 {
				if serr := f.Submit(reqs[:i]...); serr != nil {
					return serr
				}
			}
			return err
		}
	}
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		return uring.ErrClosed
	}
	plain := true
	var faults []Fault
	if f.enabled && len(f.rules) > 0 {
		for _, q := range reqs {
			fault, ok := f.pick(q)
			if ok {
				plain = false
			}
			faults = append(faults, fault)
		}
	}
	if !plain {
		f.pending.Add(len(reqs))
	}
	f.mu.Unlock()
	if plain {
		return f.inner.Submit(reqs...)
	}
	for i, q := range reqs {
		f.start(q, faults[i])
	}
	return nil
}

// intercept stands in for a faulted request's handler while the inner ring
// has it.
type intercept struct {
	f     *Ring
	orig  uring.Handler
	fault Fault
	buf   []byte
	vecs  [][]byte
}

// start sends q on its way with fault applied. q counts in f.pending until
// finish delivers it.
func (f *Ring) start(q *uring.Request, fault Fault) {
	switch {
	case fault.Errno != 0:
		f.stats.errors.Add(1)
		f.holdAndDeliver(q, q.Handler, 0, 0, fault.Errno)
		return
	case fault.Transient:
		f.stats.transients.Add(1)
		backoff := fault.Backoff
		if backoff <= 0 {
			backoff = time.Millisecond
		}
		f.held.Add(1)
		time.AfterFunc(backoff, func() {
			f.held.Add(-1)
			f.retry(q)
		})
		return
	case fault.Short == 0 && fault.Delay <= 0:
		f.forward(q, q.Handler)
		return
	}
	ic := &intercept{f: f, orig: q.Handler, fault: fault, buf: q.Buf, vecs: q.Vecs}
	if fault.Short != 0 {
		f.stats.shorts.Add(1)
		shorten(q, fault.Short)
	} else {
		f.stats.delays.Add(1)
	}
	q.Handler = ic
	f.forward(q, ic.orig)
}

// retry resubmits a request after a transient fault; rules see it again, so
// a Count-limited EAGAIN rule fails it that many times.
func (f *Ring) retry(q *uring.Request) {
	f.mu.Lock()
	fault, ok := f.pick(q)
	f.mu.Unlock()
	if ok {
		f.start(q, fault)
		return
	}
	f.forward(q, q.Handler)
}

// forward hands q to the inner ring; a refusal (the inner ring closed under
// a retry) completes q with ECANCELED so it still gets its one completion.
func (f *Ring) forward(q *uring.Request, orig uring.Handler) {
	final := q.Handler
	if _, ok := final.(*intercept); !ok {
		q.Handler = &intercept{f: f, orig: orig, buf: q.Buf, vecs: q.Vecs}
	}
	if err := f.inner.Submit(q); err != nil {
		ic := q.Handler.(*intercept)
		q.Buf, q.Vecs, q.Handler = ic.buf, ic.vecs, ic.orig
		f.holdAndDeliver(q, ic.orig, 0, 0, syscall.ECANCELED)
	}
}

// Complete runs when the inner ring finishes a faulted request.
func (ic *intercept) Complete(q *uring.Request) {
	q.Buf, q.Vecs, q.Handler = ic.buf, ic.vecs, ic.orig
	ic.f.holdAndDeliver(q, ic.orig, ic.fault.Delay, q.Res, q.Err)
}

// holdAndDeliver completes q on a goroutine of its own, after delay, so a
// handler never runs on the submitter's stack.
func (f *Ring) holdAndDeliver(q *uring.Request, h uring.Handler, delay time.Duration, res int, err error) {
	f.held.Add(1)
	deliver := func() {
		q.Res, q.Err = res, err
		f.held.Add(-1)
		h.Complete(q)
		f.pending.Done()
	}
	if delay > 0 {
		time.AfterFunc(delay, deliver)
	} else {
		go deliver()
	}
}

func shorten(q *uring.Request, short int) {
	n := q.Len()
	keep := short
	if keep < 0 || keep >= n {
		keep = n / 2
	}
	if q.Op == uring.OpRead || q.Op == uring.OpWrite {
		q.Buf = q.Buf[:keep]
		return
	}
	var vecs [][]byte
	for _, v := range q.Vecs {
		if keep == 0 {
			break
		}
		m := min(len(v), keep)
		vecs = append(vecs, v[:m])
		keep -= m
	}
	if len(vecs) == 0 {
		// A zero-byte transfer of a vectored op still needs one vec.
		vecs = [][]byte{q.Vecs[0][:0]}
	}
	q.Vecs = vecs
}

// RegisterFile forwards to the inner ring.
func (f *Ring) RegisterFile(fd int) (uring.File, error) { return f.inner.RegisterFile(fd) }

// UnregisterFile forwards to the inner ring.
func (f *Ring) UnregisterFile(h uring.File) error { return f.inner.UnregisterFile(h) }

// RegisterBuffer forwards to the inner ring.
func (f *Ring) RegisterBuffer(i int, mem []byte) error { return f.inner.RegisterBuffer(i, mem) }

// InFlight counts the inner ring's requests and the faulted ones held here.
func (f *Ring) InFlight() int { return f.inner.InFlight() + int(f.held.Load()) }

// Stats are the inner ring's.
func (f *Ring) Stats() uring.Stats { return f.inner.Stats() }

// Features are the inner ring's, marked as wrapped.
func (f *Ring) Features() uring.Features {
	ft := f.inner.Features()
	ft.Backend = "fault(" + ft.Backend + ")"
	return ft
}

// Close refuses new requests, closes the inner ring (which drains or
// cancels), then waits for held completions to be delivered.
func (f *Ring) Close() error {
	f.mu.Lock()
	f.closing = true
	f.mu.Unlock()
	err := f.inner.Close()
	f.pending.Wait()
	return err
}

func errnoName(e syscall.Errno) string {
	for name, v := range errnos {
		if v == e {
			return name
		}
	}
	return fmt.Sprintf("errno%d", int(e))
}
