package main

import (
	"os"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// TestMain removes the binary the end-to-end tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilt()
	os.Exit(code)
}
