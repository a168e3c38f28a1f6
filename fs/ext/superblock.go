package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
)

const (
	// superblockOffset is where the primary superblock starts on the
	// device, whatever the block size.
	superblockOffset = 1024
	// superblockSize is the superblock's length on disk.
	superblockSize = 1024
	superMagic     = 0xEF53

	// Superblock offsets used in more than one place.
	sbChecksumOff = 0x3FC
	sbMtimeOff    = 0x2C
	sbWtimeOff    = 0x30
	sbMntCountOff = 0x34
	sbStateOff    = 0x3A

	// Revision levels: rev 0 has fixed 128-byte inodes and no feature
	// fields; rev 1 (dynamic) has both.
	revGoodOld = 0
	revDynamic = 1

	goodOldInodeSize = 128
	goodOldFirstIno  = 11

	// minBlockLog and maxBlockLog bound s_log_block_size: the engine
	// pages 4 KiB, so 1, 2 and 4 KiB blocks are readable; the format
	// allows up to 64 KiB.
	maxPageableLog = 2
	maxFormatLog   = 6

	// Superblock s_state bits.
	stateValid  = 0x1
	stateErrors = 0x2
)

// Superblock is the decoded primary superblock plus the values derived
// from it that the rest of the package needs. Raw keeps the bytes as read,
// so a writer can change fields and re-checksum without losing the ones
// this type does not decode.
type Superblock struct {
	InodesCount      uint32
	BlocksCount      uint64
	ReservedBlocks   uint64
	FreeBlocks       uint64
	FreeInodes       uint32
	FirstDataBlock   uint32
	LogBlockSize     uint32
	LogClusterSize   uint32
	BlocksPerGroup   uint32
	ClustersPerGroup uint32
	InodesPerGroup   uint32
	Mtime, Wtime     uint32
	Magic            uint16
	State            uint16
	Errors           uint16
	MinorRevLevel    uint16
	RevLevel         uint32
	FirstIno         uint32
	InodeSize        uint16
	Compat           CompatFeatures
	Incompat         IncompatFeatures
	ROCompat         ROCompatFeatures
	UUID             [16]byte
	VolumeName       string
	ReservedGDT      uint16
	JournalInum      uint32
	JournalDev       uint32
	LastOrphan       uint32
	HashSeed         [4]uint32
	DefHashVersion   uint8
	DescSize         uint16 // as stored; see GroupDescSize for the one in use
	FirstMetaBG      uint32
	MinExtraIsize    uint16
	WantExtraIsize   uint16
	LogGroupsPerFlex uint8
	ChecksumType     uint8
	BackupBGs        [2]uint32
	ChecksumSeed     uint32 // s_checksum_seed, meaningful with metadata_csum_seed
	Checksum         uint32

	// Derived.
	BlockSize     int    // bytes
	GroupCount    uint32 // block groups
	GroupDescSize int    // 32, or s_desc_size with 64bit
	DescPerBlock  int
	GDTBlocks     uint32 // blocks of group descriptors (without meta_bg)

	// seed is csumSeed(), computed once.
	seed uint32

	Raw [superblockSize]byte
}

// HasCompat reports whether every bit of f is set in s_feature_compat.
func (s *Superblock) HasCompat(f CompatFeatures) bool { return s.Compat&f == f }

// HasIncompat reports whether every bit of f is set in s_feature_incompat.
func (s *Superblock) HasIncompat(f IncompatFeatures) bool { return s.Incompat&f == f }

// HasROCompat reports whether every bit of f is set in s_feature_ro_compat.
func (s *Superblock) HasROCompat(f ROCompatFeatures) bool { return s.ROCompat&f == f }

// MetadataCsum reports whether metadata is checksummed with crc32c.
func (s *Superblock) MetadataCsum() bool { return s.HasROCompat(ROCompatMetadataCsum) }

// GDTCsum reports whether group descriptors carry the older crc16
// checksum (uninit_bg). metadata_csum supersedes it when both are set.
func (s *Superblock) GDTCsum() bool {
	return s.HasROCompat(ROCompatGDTCsum) && !s.MetadataCsum()
}

// groupCsum reports whether group descriptors carry any checksum, which is
// also when bg_flags and bg_itable_unused may be trusted.
func (s *Superblock) groupCsum() bool { return s.MetadataCsum() || s.HasROCompat(ROCompatGDTCsum) }

// csumSeed is the seed every metadata checksum but the superblock's starts
// from: s_checksum_seed when the volume stores it, else the CRC of the
// UUID (which tune2fs may since have changed, hence the stored seed).
func (s *Superblock) csumSeed() uint32 {
	if s.HasIncompat(IncompatCsumSeed) {
		return s.ChecksumSeed
	}
	return crc32c(^uint32(0), s.UUID[:])
}

// superblockCsum is the checksum of the superblock bytes before the field.
func superblockCsum(raw []byte) uint32 { return crc32c(^uint32(0), raw[:sbChecksumOff]) }

// ParseSuperblock decodes and checks a superblock (the 1024 bytes at device
// offset 1024). It checks everything that can be checked without the
// device: magic, checksum, features, geometry. A wrong magic gives
// ErrNotExt, unknown INCOMPAT features and block sizes above 4 KiB give
// ErrUnsupported; anything inconsistent gives ErrCorrupt.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < superblockSize {
		return nil, fmt.Errorf("%w: superblock: %d bytes, want %d", ErrCorrupt, len(b), superblockSize)
	}
	le := binary.LittleEndian
	s := &Superblock{}
	copy(s.Raw[:], b)
	r := s.Raw[:]
	s.Magic = le.Uint16(r[0x38:])
	if s.Magic != superMagic {
		return nil, &detailed{fmt.Sprintf("ext: not an ext2/3/4 volume (bad magic %#04x at byte %d, want %#04x)",
			s.Magic, superblockOffset+0x38, superMagic), ErrNotExt}
	}
	s.InodesCount = le.Uint32(r[0x0:])
	s.BlocksCount = uint64(le.Uint32(r[0x4:]))
	s.ReservedBlocks = uint64(le.Uint32(r[0x8:]))
	s.FreeBlocks = uint64(le.Uint32(r[0xC:]))
	s.FreeInodes = le.Uint32(r[0x10:])
	s.FirstDataBlock = le.Uint32(r[0x14:])
	s.LogBlockSize = le.Uint32(r[0x18:])
	s.LogClusterSize = le.Uint32(r[0x1C:])
	s.BlocksPerGroup = le.Uint32(r[0x20:])
	s.ClustersPerGroup = le.Uint32(r[0x24:])
	s.InodesPerGroup = le.Uint32(r[0x28:])
	s.Mtime = le.Uint32(r[0x2C:])
	s.Wtime = le.Uint32(r[0x30:])
	s.State = le.Uint16(r[0x3A:])
	s.Errors = le.Uint16(r[0x3C:])
	s.MinorRevLevel = le.Uint16(r[0x3E:])
	s.RevLevel = le.Uint32(r[0x4C:])
	if s.RevLevel > revDynamic {
		return nil, fmt.Errorf("%w: superblock: revision %d (know 0 and 1)", ErrUnsupported, s.RevLevel)
	}
	if s.RevLevel == revGoodOld {
		// Rev 0 predates the feature words and variable inode size:
		// whatever those bytes hold means nothing.
		s.FirstIno = goodOldFirstIno
		s.InodeSize = goodOldInodeSize
	} else {
		s.FirstIno = le.Uint32(r[0x54:])
		s.InodeSize = le.Uint16(r[0x58:])
		s.Compat = CompatFeatures(le.Uint32(r[0x5C:]))
		s.Incompat = IncompatFeatures(le.Uint32(r[0x60:]))
		s.ROCompat = ROCompatFeatures(le.Uint32(r[0x64:]))
	}
	copy(s.UUID[:], r[0x68:0x78])
	s.VolumeName = string(bytes.TrimRight(r[0x78:0x88], "\x00"))
	s.ReservedGDT = le.Uint16(r[0xCE:])
	s.JournalInum = le.Uint32(r[0xE0:])
	s.JournalDev = le.Uint32(r[0xE4:])
	s.LastOrphan = le.Uint32(r[0xE8:])
	for i := range s.HashSeed {
		s.HashSeed[i] = le.Uint32(r[0xEC+4*i:])
	}
	s.DefHashVersion = r[0xFC]
	s.DescSize = le.Uint16(r[0xFE:])
	s.FirstMetaBG = le.Uint32(r[0x104:])
	s.MinExtraIsize = le.Uint16(r[0x15C:])
	s.WantExtraIsize = le.Uint16(r[0x15E:])
	s.LogGroupsPerFlex = r[0x174]
	s.ChecksumType = r[0x175]
	s.BackupBGs[0] = le.Uint32(r[0x24C:])
	s.BackupBGs[1] = le.Uint32(r[0x250:])
	s.ChecksumSeed = le.Uint32(r[0x270:])
	s.Checksum = le.Uint32(r[sbChecksumOff:])

	// The checksum comes first: if it holds, the fields below are what
	// the file system wrote, and a complaint about them is about the file
	// system, not about a torn or overwritten superblock.
	if s.MetadataCsum() {
		if s.ChecksumType != 1 {
			return nil, fmt.Errorf("%w: superblock: metadata checksum type %d (know 1, crc32c)", ErrUnsupported, s.ChecksumType)
		}
		if got := superblockCsum(r); got != s.Checksum {
			return nil, fmt.Errorf("%w: superblock: checksum %#08x, computed %#08x", ErrCorrupt, s.Checksum, got)
		}
	}
	if s.HasIncompat(IncompatJournalDev) {
		return nil, fmt.Errorf("%w: this is an external journal device, not a file system", ErrUnsupported)
	}
	if unknown := s.Incompat &^ readIncompat; unknown != 0 {
		return nil, fmt.Errorf("%w: INCOMPAT features %s", ErrUnsupported, unknown)
	}
	if s.HasIncompat(Incompat64Bit) {
		s.BlocksCount |= uint64(le.Uint32(r[0x150:])) << 32
		s.ReservedBlocks |= uint64(le.Uint32(r[0x154:])) << 32
		s.FreeBlocks |= uint64(le.Uint32(r[0x158:])) << 32
	}

	// Block and cluster size.
	if s.LogBlockSize > maxFormatLog {
		return nil, fmt.Errorf("%w: superblock: block size 2^(10+%d)", ErrCorrupt, s.LogBlockSize)
	}
	if s.LogBlockSize > maxPageableLog {
		return nil, fmt.Errorf("%w: block size %d (the engine pages 4 KiB: 1, 2 and 4 KiB blocks)", ErrUnsupported, 1024<<s.LogBlockSize)
	}
	s.BlockSize = 1024 << s.LogBlockSize
	bitsPerBlock := uint32(s.BlockSize) * 8
	if s.HasROCompat(ROCompatBigalloc) {
		if s.LogClusterSize < s.LogBlockSize || s.LogClusterSize-s.LogBlockSize > 16 {
			return nil, fmt.Errorf("%w: superblock: cluster size 2^(10+%d) with block size %d", ErrCorrupt, s.LogClusterSize, s.BlockSize)
		}
		ratio := s.LogClusterSize - s.LogBlockSize
		if s.ClustersPerGroup == 0 || s.ClustersPerGroup > bitsPerBlock ||
			uint64(s.BlocksPerGroup) != uint64(s.ClustersPerGroup)<<ratio {
			return nil, fmt.Errorf("%w: superblock: %d clusters and %d blocks per group", ErrCorrupt, s.ClustersPerGroup, s.BlocksPerGroup)
		}
	} else {
		if s.LogClusterSize != s.LogBlockSize {
			return nil, fmt.Errorf("%w: superblock: fragment size 2^(10+%d) differs from block size %d", ErrCorrupt, s.LogClusterSize, s.BlockSize)
		}
		if s.BlocksPerGroup == 0 || s.BlocksPerGroup > bitsPerBlock {
			return nil, fmt.Errorf("%w: superblock: %d blocks per group (1..%d)", ErrCorrupt, s.BlocksPerGroup, bitsPerBlock)
		}
	}

	// Inodes.
	if s.RevLevel == revDynamic {
		if s.InodeSize < goodOldInodeSize || int(s.InodeSize) > s.BlockSize || bits.OnesCount16(s.InodeSize) != 1 {
			return nil, fmt.Errorf("%w: superblock: inode size %d", ErrCorrupt, s.InodeSize)
		}
		if s.FirstIno < goodOldFirstIno {
			return nil, fmt.Errorf("%w: superblock: first inode %d (< %d)", ErrCorrupt, s.FirstIno, goodOldFirstIno)
		}
	}
	inodesPerBlock := uint32(s.BlockSize / int(s.InodeSize))
	if s.InodesPerGroup < inodesPerBlock || s.InodesPerGroup > bitsPerBlock {
		return nil, fmt.Errorf("%w: superblock: %d inodes per group (%d..%d)", ErrCorrupt, s.InodesPerGroup, inodesPerBlock, bitsPerBlock)
	}
	if s.FirstIno > s.InodesCount {
		return nil, fmt.Errorf("%w: superblock: first inode %d past inode count %d", ErrCorrupt, s.FirstIno, s.InodesCount)
	}

	// Groups. The first data block is 1 with 1 KiB blocks (block 0 holds
	// the boot sector, the superblock is block 1), else 0.
	if s.FirstDataBlock > 1 || uint64(s.FirstDataBlock) >= s.BlocksCount {
		return nil, fmt.Errorf("%w: superblock: first data block %d of %d", ErrCorrupt, s.FirstDataBlock, s.BlocksCount)
	}
	groups := (s.BlocksCount - uint64(s.FirstDataBlock) + uint64(s.BlocksPerGroup) - 1) / uint64(s.BlocksPerGroup)
	if groups == 0 || groups*uint64(s.InodesPerGroup) != uint64(s.InodesCount) {
		return nil, fmt.Errorf("%w: superblock: %d inodes, but %d groups of %d", ErrCorrupt, s.InodesCount, groups, s.InodesPerGroup)
	}
	s.GroupCount = uint32(groups) // fits: groups*ipg == a uint32 and ipg >= 1

	// Group descriptors.
	s.GroupDescSize = 32
	if s.HasIncompat(Incompat64Bit) {
		d := int(s.DescSize)
		if d < 64 || d > 1024 || bits.OnesCount(uint(d)) != 1 || d > s.BlockSize {
			return nil, fmt.Errorf("%w: superblock: group descriptor size %d with 64bit", ErrCorrupt, d)
		}
		s.GroupDescSize = d
	}
	s.DescPerBlock = s.BlockSize / s.GroupDescSize
	s.GDTBlocks = uint32((uint64(s.GroupCount) + uint64(s.DescPerBlock) - 1) / uint64(s.DescPerBlock))
	if s.HasIncompat(IncompatMetaBG) && s.FirstMetaBG > s.GDTBlocks {
		return nil, fmt.Errorf("%w: superblock: first meta block group %d past %d descriptor blocks", ErrCorrupt, s.FirstMetaBG, s.GDTBlocks)
	}
	if s.HasIncompat(IncompatFlexBG) && s.LogGroupsPerFlex > 31 {
		return nil, fmt.Errorf("%w: superblock: 2^%d groups per flex group", ErrCorrupt, s.LogGroupsPerFlex)
	}
	s.seed = s.csumSeed()
	return s, nil
}

// inodeTableBlocks is how many blocks one group's inode table takes.
func (s *Superblock) inodeTableBlocks() uint64 {
	return (uint64(s.InodesPerGroup)*uint64(s.InodeSize) + uint64(s.BlockSize) - 1) / uint64(s.BlockSize)
}

// groupFirstBlock is the first block of group g.
func (s *Superblock) groupFirstBlock(g uint32) uint64 {
	return uint64(g)*uint64(s.BlocksPerGroup) + uint64(s.FirstDataBlock)
}

// groupBlocks is the number of blocks in group g (the last may be short).
func (s *Superblock) groupBlocks(g uint32) uint64 {
	first := s.groupFirstBlock(g)
	return min(uint64(s.BlocksPerGroup), s.BlocksCount-first)
}

// groupHasSuper reports whether group g holds a superblock backup (and,
// without meta_bg, a copy of the group descriptors).
func (s *Superblock) groupHasSuper(g uint32) bool {
	if g == 0 {
		return true
	}
	if s.HasCompat(CompatSparseSuper2) {
		return g == s.BackupBGs[0] || g == s.BackupBGs[1]
	}
	if g <= 1 || !s.HasROCompat(ROCompatSparseSuper) {
		return true
	}
	if g&1 == 0 {
		return false
	}
	return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7)
}

func isPowerOf(g, base uint32) bool {
	n := uint64(base)
	for n < uint64(g) {
		n *= uint64(base)
	}
	return n == uint64(g)
}

// descBlock is the device block holding group descriptor block nr
// (descriptors nr*DescPerBlock ...). Without meta_bg they follow the
// superblock; with it, each meta group (the groups one descriptor block
// describes) keeps its block at the start of its first group, after that
// group's superblock backup if it has one.
func (s *Superblock) descBlock(nr uint32) uint64 {
	// The block holding the superblock: 1 with 1 KiB blocks, else 0.
	sbBlock := uint64(superblockOffset / s.BlockSize)
	if !s.HasIncompat(IncompatMetaBG) || nr < s.FirstMetaBG {
		return sbBlock + 1 + uint64(nr)
	}
	g := nr * uint32(s.DescPerBlock)
	blk := s.groupFirstBlock(g)
	if s.groupHasSuper(g) {
		blk++
	}
	// Group 0 of a 1 KiB-block volume whose first data block is 0
	// (bigalloc) starts with the boot block, not the superblock.
	if g == 0 && s.FirstDataBlock == 0 && s.BlockSize == 1024 {
		blk++
	}
	return blk
}
