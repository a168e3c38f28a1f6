package uring

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestOpenFallsBackToSync(t *testing.T) {
	saved := newNative
	defer func() { newNative = saved }()
	newNative = func(Options) (Ring, error) {
		return nil, fmt.Errorf("uring: setup: operation not permitted: %w", ErrUnavailable)
	}
	var logged []string
	opts := Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }}

	r, err := Open(BackendAuto, opts)
	if err != nil {
		t.Fatalf("auto open with io_uring unavailable: %v", err)
	}
	defer r.Close()
	if b := r.Features().Backend; b != BackendSync {
		t.Fatalf("backend %q, want sync", b)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "falling back") {
		t.Fatalf("log lines %q, want one saying it falls back", logged)
	}

	// Asking for native explicitly must not fall back silently.
	if _, err := Open(BackendNative, opts); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("native open: %v, want ErrUnavailable", err)
	}
	// Other setup errors are not hidden behind the fallback.
	newNative = func(Options) (Ring, error) { return nil, errors.New("uring: setup: bad entries") }
	if _, err := Open(BackendAuto, opts); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("auto open with a non-availability error: %v", err)
	}
	if _, err := Open("spdk", opts); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

func TestOpenNative(t *testing.T) {
	r, err := Open(BackendAuto, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b := r.Features().Backend; b != BackendNative && b != BackendSync {
		t.Fatalf("backend %q", b)
	}
}
