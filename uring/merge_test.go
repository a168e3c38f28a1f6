package uring

import (
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestMergeIovecs: vecs that follow each other in memory become one entry,
// others their own; empty vecs take no entry (and a request of nothing
// one empty one).
func TestMergeIovecs(t *testing.T) {
	mem := make([]byte, 8*4096)
	at := func(i, n int) []byte { return mem[i*4096 : i*4096+n] }
	base := uint64(uintptr(unsafe.Pointer(&mem[0])))
	for _, tc := range []struct {
		name string
		vecs [][]byte
		want string // base offset:len per entry
	}{
		{"one", [][]byte{at(0, 4096)}, "[0:4096]"},
		{"adjacent", [][]byte{at(0, 4096), at(1, 4096), at(2, 4096)}, "[0:12288]"},
		{"gap", [][]byte{at(0, 4096), at(2, 4096)}, "[0:4096 8192:4096]"},
		{"short then adjacent", [][]byte{at(0, 100), mem[100:4096], at(1, 4096)}, "[0:8192]"},
		{"backwards", [][]byte{at(1, 4096), at(0, 4096)}, "[4096:4096 0:4096]"},
		{"empty in between", [][]byte{at(0, 4096), {}, at(1, 4096)}, "[0:8192]"},
		{"nothing", [][]byte{{}}, "[0:0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iov := make([]rawIovec, len(tc.vecs))
			n := mergeIovecs(iov, tc.vecs)
			var got []string
			for _, e := range iov[:n] {
				off := uint64(0)
				if e.len > 0 {
					off = e.base - base
				}
				got = append(got, fmt.Sprintf("%d:%d", off, e.len))
			}
			if s := fmt.Sprint(got); s != tc.want {
				t.Fatalf("got %s, want %s", s, tc.want)
			}
		})
	}
}

// TestFillIovecs: the sync ring merges vecs that follow each other in
// memory the same way.
func TestFillIovecs(t *testing.T) {
	mem := make([]byte, 4*4096)
	vecs := [][]byte{mem[:4096], mem[4096:8192], mem[3*4096:]}
	iov := make([]unix.Iovec, len(vecs))
	n := fillIovecs(iov, vecs)
	if n != 2 || iov[0].Len != 8192 || iov[1].Len != 4096 || iov[0].Base != &mem[0] || iov[1].Base != &mem[3*4096] {
		t.Fatalf("%d entries: %+v", n, iov[:n])
	}
}
