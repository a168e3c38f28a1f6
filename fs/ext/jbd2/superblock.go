package jbd2

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
)

// Magic starts every journal metadata block (superblock, descriptor,
// commit, revoke), big-endian.
const Magic = 0xC03B3998

// Block types (h_blocktype).
const (
	BlockDescriptor = 1
	BlockCommit     = 2
	BlockSuperV1    = 3
	BlockSuperV2    = 4
	BlockRevoke     = 5
)

// headerLen is the common header: magic, block type, sequence.
const headerLen = 12

// SuperblockSize is the journal superblock's length at the start of
// journal block 0 (the rest of the block is unused).
const SuperblockSize = 1024

// Feature bits of a v2 journal superblock.
const (
	// CompatChecksum: commit blocks carry a CRC32 (big-endian) of the
	// transaction's descriptor and data blocks (checksum v1).
	CompatChecksum uint32 = 0x1

	// IncompatRevoke: the log may hold revoke blocks.
	IncompatRevoke uint32 = 0x1
	// Incompat64Bit: block tags and revoke records carry 64-bit block
	// numbers.
	Incompat64Bit uint32 = 0x2
	// IncompatAsyncCommit: the commit block is written without a barrier
	// after the transaction's other blocks; only its checksum says they
	// all arrived.
	IncompatAsyncCommit uint32 = 0x4
	// IncompatCsumV2: per-block CRC32C checksums, 16 bits in tags.
	IncompatCsumV2 uint32 = 0x8
	// IncompatCsumV3: per-block CRC32C checksums, 32 bits in 16-byte tags.
	IncompatCsumV3 uint32 = 0x10
	// IncompatFastCommit: the end of the journal is a fast-commit area
	// (not supported here).
	IncompatFastCommit uint32 = 0x20
)

// knownIncompat is every INCOMPAT bit this package reads and writes.
const knownIncompat = IncompatRevoke | Incompat64Bit | IncompatAsyncCommit | IncompatCsumV2 | IncompatCsumV3

// Checksum types (s_checksum_type, h_chksum_type).
const (
	ChecksumCRC32  = 1
	ChecksumMD5    = 2
	ChecksumSHA1   = 3
	ChecksumCRC32C = 4
)

// Superblock field offsets (big-endian).
const (
	sbBlockSizeOff = 0x0C
	sbMaxLenOff    = 0x10
	sbFirstOff     = 0x14
	sbSequenceOff  = 0x18
	sbStartOff     = 0x1C
	sbErrnoOff     = 0x20
	sbCompatOff    = 0x24
	sbIncompatOff  = 0x28
	sbROCompatOff  = 0x2C
	sbUUIDOff      = 0x30
	sbNrUsersOff   = 0x40
	sbCsumTypeOff  = 0x50
	sbNumFCOff     = 0x54
	sbChecksumOff  = 0xFC
)

// Superblock is a decoded journal superblock. Raw keeps the bytes as
// read, so Encode changes only the fields a writer or recovery moves.
type Superblock struct {
	// Version is 1 or 2 (block type 3 or 4); v1 has no feature words.
	Version   int
	BlockSize uint32
	// MaxLen is the journal's length in blocks, First the first block of
	// the log (block 0 is this superblock).
	MaxLen, First uint32
	// Sequence is the first transaction ID expected in the log, Start the
	// log block where it begins; Start 0 means the log is empty.
	Sequence, Start uint32
	Errno           int32
	// Features (zero on v1).
	Compat, Incompat, ROCompat uint32
	UUID                       [16]byte
	NrUsers                    uint32
	ChecksumType               uint8
	NumFCBlocks                uint32
	Checksum                   uint32

	Raw [SuperblockSize]byte
}

// HasIncompat reports whether every bit of f is set in the INCOMPAT word.
func (s *Superblock) HasIncompat(f uint32) bool { return s.Incompat&f == f }

// CsumV2or3 reports whether metadata blocks carry CRC32C tails and tags
// carry checksums (v2 or v3).
func (s *Superblock) CsumV2or3() bool { return s.Incompat&(IncompatCsumV2|IncompatCsumV3) != 0 }

// CsumV1 reports whether commit blocks carry checksum v1 (a CRC32 of the
// transaction). v2/v3 supersede it.
func (s *Superblock) CsumV1() bool { return s.Compat&CompatChecksum != 0 && !s.CsumV2or3() }

// Seed is the CRC32C seed of block checksums (v2/v3).
func (s *Superblock) Seed() uint32 { return uuidSeed(s.UUID) }

// superblockCsum is the CRC32C of the 1024 superblock bytes with the
// checksum field zeroed, from an all-ones register.
func superblockCsum(raw []byte) uint32 {
	var zero [4]byte
	c := crc32c(^uint32(0), raw[:sbChecksumOff])
	c = crc32c(c, zero[:])
	return crc32c(c, raw[sbChecksumOff+4:SuperblockSize])
}

// ParseSuperblock decodes and checks a journal superblock (the first 1024
// bytes of journal block 0). A wrong magic or block type gives
// ErrNotJournal, unknown INCOMPAT features or fast commits
// ErrUnsupported, a bad checksum ErrChecksum, inconsistent geometry
// ErrCorrupt.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < SuperblockSize {
		return nil, fmt.Errorf("%w: superblock: %d bytes, want %d", ErrCorrupt, len(b), SuperblockSize)
	}
	be := binary.BigEndian
	s := &Superblock{}
	copy(s.Raw[:], b)
	r := s.Raw[:]
	if m := be.Uint32(r); m != Magic {
		return nil, fmt.Errorf("%w: superblock magic %#08x", ErrNotJournal, m)
	}
	switch t := be.Uint32(r[4:]); t {
	case BlockSuperV1:
		s.Version = 1
	case BlockSuperV2:
		s.Version = 2
	default:
		return nil, fmt.Errorf("%w: block 0 has type %d, not a superblock", ErrNotJournal, t)
	}
	s.BlockSize = be.Uint32(r[sbBlockSizeOff:])
	s.MaxLen = be.Uint32(r[sbMaxLenOff:])
	s.First = be.Uint32(r[sbFirstOff:])
	s.Sequence = be.Uint32(r[sbSequenceOff:])
	s.Start = be.Uint32(r[sbStartOff:])
	s.Errno = int32(be.Uint32(r[sbErrnoOff:]))
	if s.Version == 2 {
		s.Compat = be.Uint32(r[sbCompatOff:])
		s.Incompat = be.Uint32(r[sbIncompatOff:])
		s.ROCompat = be.Uint32(r[sbROCompatOff:])
		copy(s.UUID[:], r[sbUUIDOff:sbUUIDOff+16])
		s.NrUsers = be.Uint32(r[sbNrUsersOff:])
		s.ChecksumType = r[sbCsumTypeOff]
		s.NumFCBlocks = be.Uint32(r[sbNumFCOff:])
		s.Checksum = be.Uint32(r[sbChecksumOff:])
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}

// check validates what ParseSuperblock decoded.
func (s *Superblock) check() error {
	if s.BlockSize < 1024 || s.BlockSize > 65536 || bits.OnesCount32(s.BlockSize) != 1 {
		return fmt.Errorf("%w: superblock: block size %d", ErrCorrupt, s.BlockSize)
	}
	if s.First == 0 || s.First >= s.MaxLen {
		return fmt.Errorf("%w: superblock: log blocks %d..%d", ErrCorrupt, s.First, s.MaxLen)
	}
	if s.Start != 0 && (s.Start < s.First || s.Start >= s.MaxLen) {
		return fmt.Errorf("%w: superblock: log start %d outside %d..%d", ErrCorrupt, s.Start, s.First, s.MaxLen-1)
	}
	if s.Incompat&IncompatFastCommit != 0 {
		return fmt.Errorf("%w: fast commits", ErrUnsupported)
	}
	if unknown := s.Incompat &^ knownIncompat; unknown != 0 {
		return fmt.Errorf("%w: INCOMPAT features %#x", ErrUnsupported, unknown)
	}
	if s.CsumV2or3() {
		if s.ChecksumType != ChecksumCRC32C {
			return fmt.Errorf("%w: checksum type %d with csum v2/v3 (know crc32c)", ErrUnsupported, s.ChecksumType)
		}
		if got := superblockCsum(s.Raw[:]); got != s.Checksum {
			return fmt.Errorf("%w: superblock: stored %#08x, computed %#08x", ErrChecksum, s.Checksum, got)
		}
	}
	return nil
}

// Encode writes the decoded fields a writer may change (Start, Sequence,
// Errno; on v2 also the feature words and ChecksumType) back into Raw,
// recomputes the checksum (v2/v3) and returns the 1024 bytes. Geometry and
// UUID are kept as read.
func (s *Superblock) Encode() []byte {
	be := binary.BigEndian
	r := s.Raw[:]
	be.PutUint32(r[sbSequenceOff:], s.Sequence)
	be.PutUint32(r[sbStartOff:], s.Start)
	be.PutUint32(r[sbErrnoOff:], uint32(s.Errno))
	if s.Version == 2 {
		be.PutUint32(r[sbCompatOff:], s.Compat)
		be.PutUint32(r[sbIncompatOff:], s.Incompat)
		be.PutUint32(r[sbROCompatOff:], s.ROCompat)
		r[sbCsumTypeOff] = s.ChecksumType
	}
	if s.CsumV2or3() {
		s.Checksum = superblockCsum(r)
		be.PutUint32(r[sbChecksumOff:], s.Checksum)
	}
	out := make([]byte, SuperblockSize)
	copy(out, r)
	return out
}

// FeatureString names the journal's features as dumpe2fs does.
func (s *Superblock) FeatureString() string {
	var parts []string
	if s.Compat&CompatChecksum != 0 {
		parts = append(parts, "journal_checksum")
	}
	for _, f := range []struct {
		bit  uint32
		name string
	}{
		{IncompatRevoke, "journal_incompat_revoke"}, {Incompat64Bit, "journal_64bit"},
		{IncompatAsyncCommit, "journal_async_commit"}, {IncompatCsumV2, "journal_checksum_v2"},
		{IncompatCsumV3, "journal_checksum_v3"},
	} {
		if s.Incompat&f.bit != 0 {
			parts = append(parts, f.name)
		}
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

// Header is the 12 bytes every journal metadata block starts with.
type Header struct {
	Magic, Type, Sequence uint32
}

// ParseHeader decodes the header of b (at least 12 bytes).
func ParseHeader(b []byte) Header {
	be := binary.BigEndian
	return Header{Magic: be.Uint32(b), Type: be.Uint32(b[4:]), Sequence: be.Uint32(b[8:])}
}

// putHeader writes a metadata block's header.
func putHeader(b []byte, typ, seq uint32) {
	be := binary.BigEndian
	be.PutUint32(b, Magic)
	be.PutUint32(b[4:], typ)
	be.PutUint32(b[8:], seq)
}
