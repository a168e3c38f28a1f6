package ext

import (
	"encoding/binary"
	"testing"
)

// TestCRC32CU32: summing a uint32 by hand equals crc32c over its 4
// little-endian bytes, for any running value, without an allocation.
func TestCRC32CU32(t *testing.T) {
	for _, tc := range []struct{ crc, v uint32 }{
		{0, 0}, {^uint32(0), 0}, {^uint32(0), 1}, {0x12345678, 0x9abcdef0}, {0xdeadbeef, 11}, {1, ^uint32(0)},
	} {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], tc.v)
		if got, want := crc32cU32(tc.crc, tc.v), crc32c(tc.crc, b[:]); got != want {
			t.Errorf("crc32cU32(%#x, %#x) = %#x, crc32c over its bytes %#x", tc.crc, tc.v, got, want)
		}
	}
	var sink uint32
	if n := testing.AllocsPerRun(100, func() { sink = crc32cU32(sink, 7) }); n != 0 {
		t.Errorf("%v allocations per crc32cU32", n)
	}
}
