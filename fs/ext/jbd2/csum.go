package jbd2

import (
	"encoding/binary"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c continues jbd2's running CRC32C. jbd2 (like ext4) keeps the raw
// register: no inversion on the way in or out, while Go's crc32.Update
// inverts both ways; inverting around Update cancels that, so seeds chain
// exactly as on disk.
func crc32c(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, p)
}

// crc32cBE32 continues the CRC over v as 4 big-endian bytes (the
// transaction ID a tag checksum starts with is summed in its on-disk order).
func crc32cBE32(crc, v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return crc32c(crc, b[:])
}

// uuidSeed is the seed of every csum v2/v3 checksum but the superblock's:
// the CRC32C of the journal's UUID from an all-ones register.
func uuidSeed(uuid [16]byte) uint32 { return crc32c(^uint32(0), uuid[:]) }

// crcBETable is the CRC-32 of the IEEE polynomial processed most
// significant bit first (not reflected), which COMPAT_CHECKSUM commit
// blocks (checksum v1) use.
var crcBETable = func() (t [256]uint32) {
	const poly = 0x04C11DB7
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ poly
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc32BE continues the big-endian CRC-32 over p, without inversions (v1
// commit checksums start the register at all ones and store it as is).
func crc32BE(crc uint32, p []byte) uint32 {
	for _, b := range p {
		crc = crc<<8 ^ crcBETable[byte(crc>>24)^b]
	}
	return crc
}
