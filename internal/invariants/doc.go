// Package invariants holds assertions that cost nothing in a normal build
// and panic under the invariants build tag: page-flag transitions in the
// engine, slot states in the ring. make test runs the engine's suite once
// with -tags invariants.
package invariants
