//go:build race

package testenv

// RaceEnabled: built with -race, where sync.Pool drops a share of what is
// put back on purpose, so allocation counts mean nothing.
const RaceEnabled = true
