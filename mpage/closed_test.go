package mpage_test

import (
	"errors"
	"testing"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
)

// TestClosedMappingRefusesPages: after Close, creating a page fails with
// ErrClosed instead of retrying forever, and reads of uncached data fail.
func TestClosedMappingRefusesPages(t *testing.T) {
	env := mpagetest.NewEnv(t, 4096, 1<<20, 1<<20)
	m := env.Mapping
	m.SetSize(64 << 10)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mpage.GrabPage(m, 3); !errors.Is(err, mpage.ErrClosed) {
		t.Fatalf("grabPage on a closed mapping: %v, want ErrClosed", err)
	}
	if _, err := m.ReadPages(0, 4, 0); !errors.Is(err, mpage.ErrClosed) {
		t.Fatalf("ReadPages on a closed mapping: %v, want ErrClosed", err)
	}
}
