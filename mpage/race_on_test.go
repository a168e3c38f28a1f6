//go:build race

package mpage_test

// raceEnabled: built with -race, where sync.Pool drops a share of what is
// put back on purpose, so allocation counts mean nothing.
const raceEnabled = true
