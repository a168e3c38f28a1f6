// Package metrics is the daemon's Prometheus instrumentation: one registry
// of its own (never the client library's default registerer), the handler
// that serves it at GET /metrics, and everything registered there:
//
//   - the Go runtime and process collectors and mpaged_build_info;
//   - the engine collector, which turns engine.Snapshot into mpaged_*
//     metrics (Bios and pages per Bio, per-block fallback and why, errors,
//     the page cache, Bio allocation, page frames, the ring and its latency
//     histograms, the volume);
//   - the HTTP middleware Instrument, for the API's routes (promhttp's
//     series and labels, recorded without its per-request label maps);
//   - state gauges the daemon sets: mpaged_up (ready), read-only, clean.
//
// # Reading the engine
//
// mpage, alloc and uring keep their counters as plain atomics and know
// nothing of Prometheus. The engine collector reads them only when scraped,
// from one Snapshot per scrape, so the I/O path never calls into this
// package and gains no allocation from it. What it exports is the table
// engineTable in engine.go: a new counter in mpage.Stats is one more line
// there. Names use base units (bytes, seconds), counters end in _total, and
// labels take a fixed, small set of values (op, reason, state, errno).
//
// # Concurrency
//
// All methods are safe for concurrent use, and scrapes may run in
// parallel. SetEngine may be called at any time (the engine is swapped
// atomically; a scrape sees the old or the new one whole). Snapshot, which
// a scrape calls, takes only the short locks engine.Snapshot documents, so
// a scrape never waits on I/O and I/O never waits on a scrape.
//
// # Example
//
//	m := metrics.New(metrics.Options{Version: version, Backend: cfg.Backend, Logf: log.Printf})
//	e, err := engine.Open(cfg)
//	if err != nil { ... }
//	m.SetEngine(e)
//	m.SetReadOnly(!cfg.Write)
//	mux := http.NewServeMux()
//	mux.Handle("GET /metrics", m.Handler())
//	mux.Handle("/v1/files/", m.Instrument("files", filesHandler))
//	m.SetReady(true)
package metrics
