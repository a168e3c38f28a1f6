// Package drills holds the reliability drills: faults injected through the
// fault ring, power cuts through a crash-clone device, SIGKILLs of the real
// daemon, load against a small cache and hostile input. Each drill is a Go
// test in this package that records one Row; TestMain prints the rows as
// one summary table (and writes it to the file named by -drills.summary).
//
// The short drills run in `make test`; `make drills` runs the long ones
// (-drills.long, or MPAGED_DRILLS=long). A drill asserts its own promise
// (no acknowledged byte lost, no 5xx, no panic); the table is the record of
// how much was tried, for RELIABILITY.md.
package drills
