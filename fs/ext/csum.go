package ext

import (
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c continues ext4's running CRC32C: the kernel's crc32c(crc, p) is
// the raw register, with no inversion on the way in or out, while Go's
// crc32.Update inverts both ways. Inverting around Update cancels that,
// so crc32c(^0, p) is ^crc32.Checksum(p) and every seed chains as on disk.
func crc32c(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, p)
}

// crc32cU32 continues the CRC over v as 4 little-endian bytes (inode and
// group numbers are summed in their on-disk byte order).
//
// It runs the table by hand: handing crc32.Update a 4-byte array moves the
// array to the heap (the update is called through a function value), an
// allocation on every inode and group checksum, and so on every path
// lookup.
func crc32cU32(crc, v uint32) uint32 {
	for range 4 {
		crc = castagnoli[byte(crc)^byte(v)] ^ crc>>8
		v >>= 8
	}
	return crc
}

// zero4 stands in for a checksum field while summing the structure that
// holds it.
var zero4 [4]byte

// crc16Table is the CRC-16 (polynomial 0x8005, bit-reflected 0xA001) that
// uninit_bg (GDT_CSUM) group descriptor checksums use.
var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 continues the CRC-16 over p (no inversion, as the kernel's crc16).
func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc = crc>>8 ^ crc16Table[byte(crc)^b]
	}
	return crc
}
