//go:build !race

package mpage_test

const raceEnabled = false
