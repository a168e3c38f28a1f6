package uring

import (
	"sync/atomic"
	"time"
)

// Counters are the atomic counters behind Stats. Backends outside this
// package embed them so every ring reports the same way.
type Counters struct {
	Submitted  atomic.Uint64
	Completed  atomic.Uint64
	SQEs       atomic.Uint64
	Enters     atomic.Uint64
	Resubmits  atomic.Uint64
	Retries    atomic.Uint64
	Errors     atomic.Uint64
	Overflows  atomic.Uint64
	FixedBufIO atomic.Uint64
	Cancelled  atomic.Uint64
	BytesRead  atomic.Uint64
	BytesWrite atomic.Uint64
	InFlight   atomic.Int64
	// Latency is kept only when timing is on, by op class.
	Latency [NumLatencyOps]LatencyHist
}

// Snapshot copies the counters.
func (c *Counters) Snapshot() Stats {
	return Stats{
		Submitted:  c.Submitted.Load(),
		Completed:  c.Completed.Load(),
		SQEs:       c.SQEs.Load(),
		Enters:     c.Enters.Load(),
		Resubmits:  c.Resubmits.Load(),
		Retries:    c.Retries.Load(),
		Errors:     c.Errors.Load(),
		Overflows:  c.Overflows.Load(),
		FixedBufIO: c.FixedBufIO.Load(),
		Cancelled:  c.Cancelled.Load(),
		BytesRead:  c.BytesRead.Load(),
		BytesWrite: c.BytesWrite.Load(),
		InFlight:   c.InFlight.Load(),
		Latency: [NumLatencyOps]LatencySnapshot{
			c.Latency[LatencyRead].Snapshot(), c.Latency[LatencyWrite].Snapshot(), c.Latency[LatencyOther].Snapshot(),
		},
	}
}

// Accept counts n accepted requests and stamps their submission time when
// timing is on.
func (c *Counters) Accept(r *Request, timing bool) {
	c.Submitted.Add(1)
	c.InFlight.Add(1)
	if timing {
		r.Submitted = time.Now()
	}
}

// Finish records r's result and delivers its completion. It is the one place
// a backend hands a request back, so the counters and the contract (Res and
// Err set before the handler runs, InFlight dropped first so a handler that
// checks congestion sees the truth) hold for all of them.
func (c *Counters) Finish(r *Request, res int, err error, timing bool) {
	r.Res, r.Err = res, err
	if err != nil {
		c.Errors.Add(1)
	}
	switch {
	case r.Op.IsRead():
		c.BytesRead.Add(uint64(res))
	case r.Op.IsWrite():
		c.BytesWrite.Add(uint64(res))
	}
	if timing {
		r.Completed = time.Now()
		c.Latency[latencyClass(r.Op)].Observe(r.Completed.Sub(r.Submitted))
	}
	c.InFlight.Add(-1)
	c.Completed.Add(1)
	r.Handler.Complete(r)
}
