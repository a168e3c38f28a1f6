package jbd2

import (
	"encoding/binary"
	"fmt"
)

// TagFlags are a block tag's flags.
type TagFlags uint32

const (
	// TagEscape: the block's first four bytes were the journal magic and
	// are zero in the log copy; replay puts the magic back.
	TagEscape TagFlags = 0x1
	// TagSameUUID: no 16-byte UUID follows this tag (it is the previous
	// tag's); only the first tag of a descriptor carries one.
	TagSameUUID TagFlags = 0x2
	// TagDeleted: set by old writers on blocks deleted in the transaction;
	// the log copy is still replayed (revoke records do the cancelling).
	TagDeleted TagFlags = 0x4
	// TagLastTag: the last tag of the descriptor block.
	TagLastTag TagFlags = 0x8
)

// tailLen is the checksum tail of descriptor and revoke blocks (v2/v3).
const tailLen = 4

// Tag is one block tag: the home block of the log block at the same
// position after the descriptor, its flags and (v2/v3) checksum.
type Tag struct {
	Block    uint64
	Flags    TagFlags
	Checksum uint32 // v3: 32 bits; v2: the low 16 bits
}

// Layout is what the journal's features decide about block formats; every
// parser and writer takes one.
type Layout struct {
	BlockSize int
	// TagBytes is the length of one tag without its UUID: 16 with csum v3;
	// else 8, plus 4 with 64bit, plus 2 with csum v2.
	TagBytes    int
	Is64Bit     bool
	CsumV3      bool
	CsumV2or3   bool
	CsumV1      bool
	AsyncCommit bool
	Seed        uint32
}

// LayoutOf returns the block layout a superblock's features call for.
func LayoutOf(s *Superblock) Layout {
	l := Layout{
		BlockSize: int(s.BlockSize), Is64Bit: s.HasIncompat(Incompat64Bit),
		CsumV3: s.HasIncompat(IncompatCsumV3), CsumV2or3: s.CsumV2or3(), CsumV1: s.CsumV1(),
		AsyncCommit: s.HasIncompat(IncompatAsyncCommit), Seed: s.Seed(),
	}
	switch {
	case l.CsumV3:
		l.TagBytes = 16
	default:
		l.TagBytes = 8
		if l.Is64Bit {
			l.TagBytes += 4
		}
		if s.HasIncompat(IncompatCsumV2) {
			l.TagBytes += 2
		}
	}
	return l
}

// tailSize is the bytes at the end of descriptor and revoke blocks that
// hold their checksum.
func (l Layout) tailSize() int {
	if l.CsumV2or3 {
		return tailLen
	}
	return 0
}

// ParseTags decodes the tags of descriptor block b (header included),
// stopping at the tag flagged last or where the block (less its checksum
// tail) has no room for another. A descriptor without tags is valid.
func (l Layout) ParseTags(b []byte) []Tag {
	var tags []Tag
	limit := len(b) - l.tailSize()
	for off := headerLen; off+l.TagBytes <= limit; {
		t := l.parseTag(b[off:])
		tags = append(tags, t)
		off += l.TagBytes
		if t.Flags&TagSameUUID == 0 {
			off += 16
		}
		if t.Flags&TagLastTag != 0 {
			break
		}
	}
	return tags
}

func (l Layout) parseTag(b []byte) Tag {
	be := binary.BigEndian
	var t Tag
	t.Block = uint64(be.Uint32(b))
	if l.CsumV3 {
		t.Flags = TagFlags(be.Uint32(b[4:]))
		t.Checksum = be.Uint32(b[12:])
	} else {
		t.Checksum = uint32(be.Uint16(b[4:]))
		t.Flags = TagFlags(be.Uint16(b[6:]))
	}
	if l.Is64Bit {
		t.Block |= uint64(be.Uint32(b[8:])) << 32
	}
	return t
}

// putTag writes t at b.
func (l Layout) putTag(b []byte, t Tag) {
	be := binary.BigEndian
	be.PutUint32(b, uint32(t.Block))
	if l.CsumV3 {
		be.PutUint32(b[4:], uint32(t.Flags))
		be.PutUint32(b[12:], t.Checksum)
	} else {
		be.PutUint16(b[4:], uint16(t.Checksum))
		be.PutUint16(b[6:], uint16(t.Flags))
	}
	if l.Is64Bit {
		be.PutUint32(b[8:], uint32(t.Block>>32))
	}
}

// tagsPerDescriptor is how many tags one descriptor block holds: the
// first carries the UUID.
func (l Layout) tagsPerDescriptor() int {
	room := l.BlockSize - headerLen - l.tailSize() - 16
	return room / l.TagBytes
}

// TagChecksum is the checksum of log copy data of a block tagged in
// transaction seq: CRC32C from the UUID seed over the big-endian sequence
// and the data. A v2 tag keeps its low 16 bits.
func (l Layout) TagChecksum(seq uint32, data []byte) uint32 {
	c := crc32c(crc32cBE32(l.Seed, seq), data)
	if !l.CsumV3 {
		c &= 0xFFFF
	}
	return c
}

// blockTailCsum is the checksum of a descriptor or revoke block: CRC32C
// from the UUID seed over the block with its tail zeroed.
func (l Layout) blockTailCsum(b []byte) uint32 {
	var zero [tailLen]byte
	return crc32c(crc32c(l.Seed, b[:len(b)-tailLen]), zero[:])
}

// VerifyTail reports whether a descriptor or revoke block's checksum tail
// matches (always true without csum v2/v3).
func (l Layout) VerifyTail(b []byte) bool {
	if !l.CsumV2or3 {
		return true
	}
	return binary.BigEndian.Uint32(b[len(b)-tailLen:]) == l.blockTailCsum(b)
}

// setTail stores a descriptor or revoke block's checksum tail (v2/v3).
func (l Layout) setTail(b []byte) {
	if l.CsumV2or3 {
		binary.BigEndian.PutUint32(b[len(b)-tailLen:], l.blockTailCsum(b))
	}
}

// Commit block fields.
const (
	commitCsumTypeOff = 0x0C
	commitCsumSizeOff = 0x0D
	commitCsumOff     = 0x10
	commitSecOff      = 0x30
	commitNsecOff     = 0x38
)

// Commit is a decoded commit block.
type Commit struct {
	Sequence     uint32
	ChecksumType uint8
	ChecksumSize uint8
	Checksum     uint32 // h_chksum[0]
	Sec          uint64
	Nsec         uint32
}

// ParseCommit decodes commit block b (header included).
func ParseCommit(b []byte) Commit {
	be := binary.BigEndian
	return Commit{
		Sequence: be.Uint32(b[8:]), ChecksumType: b[commitCsumTypeOff], ChecksumSize: b[commitCsumSizeOff],
		Checksum: be.Uint32(b[commitCsumOff:]), Sec: be.Uint64(b[commitSecOff:]), Nsec: be.Uint32(b[commitNsecOff:]),
	}
}

// commitCsum is a v2/v3 commit block's checksum: CRC32C from the UUID seed
// over the whole block with the checksum word zeroed.
func (l Layout) commitCsum(b []byte) uint32 {
	var zero [4]byte
	c := crc32c(l.Seed, b[:commitCsumOff])
	c = crc32c(c, zero[:])
	return crc32c(c, b[commitCsumOff+4:])
}

// VerifyCommit checks commit block b: with csum v2/v3 its own checksum;
// with checksum v1 the CRC32 of the transaction's descriptor and data
// blocks, sumV1 (a commit without a v1 checksum, type and size zero, is
// accepted as jbd2 does). Without checksums every commit is good.
func (l Layout) VerifyCommit(b []byte, sumV1 uint32) error {
	c := ParseCommit(b)
	switch {
	case l.CsumV2or3:
		if got := l.commitCsum(b); got != c.Checksum {
			return fmt.Errorf("%w: commit block of transaction %d: stored %#08x, computed %#08x", ErrChecksum, c.Sequence, c.Checksum, got)
		}
	case l.CsumV1:
		unused := c.ChecksumType == 0 && c.ChecksumSize == 0 && c.Checksum == 0
		good := c.ChecksumType == ChecksumCRC32 && c.ChecksumSize == 4 && c.Checksum == sumV1
		if !unused && !good {
			return fmt.Errorf("%w: commit block of transaction %d: v1 checksum type %d size %d stored %#08x, computed %#08x",
				ErrChecksum, c.Sequence, c.ChecksumType, c.ChecksumSize, c.Checksum, sumV1)
		}
	}
	return nil
}

// fillCommit makes b (zeroed, block-sized) the commit block of transaction
// seq, committed at sec.nsec, with the checksum the features call for
// (sumV1: the v1 CRC32 of the transaction's descriptor and data blocks).
func (l Layout) fillCommit(b []byte, seq uint32, sec uint64, nsec uint32, sumV1 uint32) {
	be := binary.BigEndian
	putHeader(b, BlockCommit, seq)
	be.PutUint64(b[commitSecOff:], sec)
	be.PutUint32(b[commitNsecOff:], nsec)
	switch {
	case l.CsumV2or3:
		be.PutUint32(b[commitCsumOff:], l.commitCsum(b))
	case l.CsumV1:
		b[commitCsumTypeOff] = ChecksumCRC32
		b[commitCsumSizeOff] = 4
		be.PutUint32(b[commitCsumOff:], sumV1)
	}
}

// revokeHeaderLen is a revoke block's header: the common one and r_count,
// the bytes used in the block (header included).
const revokeHeaderLen = 16

// recordBytes is the size of one revoke record.
func (l Layout) recordBytes() int {
	if l.Is64Bit {
		return 8
	}
	return 4
}

// ParseRevoke decodes the revoked block numbers of revoke block b.
func (l Layout) ParseRevoke(b []byte) ([]uint64, error) {
	be := binary.BigEndian
	count := int64(be.Uint32(b[12:]))
	if count < revokeHeaderLen || count > int64(len(b)-l.tailSize()) {
		return nil, fmt.Errorf("%w: revoke block: r_count %d in a %d-byte block", ErrCorrupt, count, len(b))
	}
	rec := l.recordBytes()
	var out []uint64
	for off := revokeHeaderLen; off+rec <= int(count); off += rec {
		if rec == 8 {
			out = append(out, be.Uint64(b[off:]))
		} else {
			out = append(out, uint64(be.Uint32(b[off:])))
		}
	}
	return out, nil
}

// recordsPerRevoke is how many records one revoke block holds.
func (l Layout) recordsPerRevoke() int {
	return (l.BlockSize - revokeHeaderLen - l.tailSize()) / l.recordBytes()
}

// fillRevoke makes b (zeroed, block-sized) a revoke block of transaction
// seq listing blocks.
func (l Layout) fillRevoke(b []byte, seq uint32, blocks []uint64) {
	be := binary.BigEndian
	putHeader(b, BlockRevoke, seq)
	off := revokeHeaderLen
	for _, blk := range blocks {
		if l.Is64Bit {
			be.PutUint64(b[off:], blk)
		} else {
			be.PutUint32(b[off:], uint32(blk))
		}
		off += l.recordBytes()
	}
	be.PutUint32(b[12:], uint32(off))
	l.setTail(b)
}
