//go:build !race

package testenv

// RaceEnabled: built with -race (see race_on.go).
const RaceEnabled = false
