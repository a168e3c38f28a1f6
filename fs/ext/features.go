package ext

import (
	"math/bits"
	"strconv"
	"strings"
)

// CompatFeatures may be ignored by a reader or writer that does not know
// them.
type CompatFeatures uint32

// IncompatFeatures change the on-disk format: a reader that does not know
// one must refuse the volume.
type IncompatFeatures uint32

// ROCompatFeatures may be ignored when reading, but a writer that does not
// know one must not write.
type ROCompatFeatures uint32

// Compat feature bits (s_feature_compat).
const (
	CompatDirPrealloc  CompatFeatures = 0x1
	CompatImagicInodes CompatFeatures = 0x2
	CompatHasJournal   CompatFeatures = 0x4
	CompatExtAttr      CompatFeatures = 0x8
	CompatResizeInode  CompatFeatures = 0x10
	CompatDirIndex     CompatFeatures = 0x20
	CompatLazyBG       CompatFeatures = 0x40
	CompatExcludeInode CompatFeatures = 0x80
	CompatExcludeBmap  CompatFeatures = 0x100
	CompatSparseSuper2 CompatFeatures = 0x200
	CompatFastCommit   CompatFeatures = 0x400
	CompatStableInodes CompatFeatures = 0x800
	CompatOrphanFile   CompatFeatures = 0x1000
)

// Incompat feature bits (s_feature_incompat).
const (
	IncompatCompression IncompatFeatures = 0x1
	IncompatFiletype    IncompatFeatures = 0x2
	IncompatRecover     IncompatFeatures = 0x4
	IncompatJournalDev  IncompatFeatures = 0x8
	IncompatMetaBG      IncompatFeatures = 0x10
	IncompatExtents     IncompatFeatures = 0x40
	Incompat64Bit       IncompatFeatures = 0x80
	IncompatMMP         IncompatFeatures = 0x100
	IncompatFlexBG      IncompatFeatures = 0x200
	IncompatEAInode     IncompatFeatures = 0x400
	IncompatDirData     IncompatFeatures = 0x1000
	IncompatCsumSeed    IncompatFeatures = 0x2000
	IncompatLargeDir    IncompatFeatures = 0x4000
	IncompatInlineData  IncompatFeatures = 0x8000
	IncompatEncrypt     IncompatFeatures = 0x10000
	IncompatCasefold    IncompatFeatures = 0x20000
)

// RO-compat feature bits (s_feature_ro_compat).
const (
	ROCompatSparseSuper   ROCompatFeatures = 0x1
	ROCompatLargeFile     ROCompatFeatures = 0x2
	ROCompatBtreeDir      ROCompatFeatures = 0x4
	ROCompatHugeFile      ROCompatFeatures = 0x8
	ROCompatGDTCsum       ROCompatFeatures = 0x10
	ROCompatDirNlink      ROCompatFeatures = 0x20
	ROCompatExtraIsize    ROCompatFeatures = 0x40
	ROCompatHasSnapshot   ROCompatFeatures = 0x80
	ROCompatQuota         ROCompatFeatures = 0x100
	ROCompatBigalloc      ROCompatFeatures = 0x200
	ROCompatMetadataCsum  ROCompatFeatures = 0x400
	ROCompatReplica       ROCompatFeatures = 0x800
	ROCompatReadonly      ROCompatFeatures = 0x1000
	ROCompatProject       ROCompatFeatures = 0x2000
	ROCompatSharedBlocks  ROCompatFeatures = 0x4000
	ROCompatVerity        ROCompatFeatures = 0x8000
	ROCompatOrphanPresent ROCompatFeatures = 0x10000
)

// The names mke2fs -O and dumpe2fs use.
var (
	compatNames = map[uint32]string{
		0x1: "dir_prealloc", 0x2: "imagic_inodes", 0x4: "has_journal", 0x8: "ext_attr",
		0x10: "resize_inode", 0x20: "dir_index", 0x40: "lazy_bg", 0x80: "snapshot_exclude_inode",
		0x100: "snapshot_exclude_bitmap", 0x200: "sparse_super2", 0x400: "fast_commit",
		0x800: "stable_inodes", 0x1000: "orphan_file",
	}
	incompatNames = map[uint32]string{
		0x1: "compression", 0x2: "filetype", 0x4: "needs_recovery", 0x8: "journal_dev",
		0x10: "meta_bg", 0x40: "extent", 0x80: "64bit", 0x100: "mmp", 0x200: "flex_bg",
		0x400: "ea_inode", 0x1000: "dirdata", 0x2000: "metadata_csum_seed", 0x4000: "large_dir",
		0x8000: "inline_data", 0x10000: "encrypt", 0x20000: "casefold",
	}
	roCompatNames = map[uint32]string{
		0x1: "sparse_super", 0x2: "large_file", 0x4: "btree_dir", 0x8: "huge_file",
		0x10: "uninit_bg", 0x20: "dir_nlink", 0x40: "extra_isize", 0x80: "snapshot",
		0x100: "quota", 0x200: "bigalloc", 0x400: "metadata_csum", 0x800: "replica",
		0x1000: "read-only", 0x2000: "project", 0x4000: "shared_blocks", 0x8000: "verity",
		0x10000: "orphan_present",
	}
)

// featureString lists the names of the bits set in f, lowest first; bits
// without a name print as FEATURE_<kind><bit number>, as e2fsprogs does.
func featureString(f uint32, names map[uint32]string, prefix string) string {
	var parts []string
	for f != 0 {
		bit := uint32(1) << bits.TrailingZeros32(f)
		f &^= bit
		if n, ok := names[bit]; ok {
			parts = append(parts, n)
		} else {
			parts = append(parts, prefix+strconv.Itoa(bits.TrailingZeros32(bit)))
		}
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

func (f CompatFeatures) String() string { return featureString(uint32(f), compatNames, "FEATURE_C") }
func (f IncompatFeatures) String() string {
	return featureString(uint32(f), incompatNames, "FEATURE_I")
}
func (f ROCompatFeatures) String() string {
	return featureString(uint32(f), roCompatNames, "FEATURE_R")
}

// readIncompat is every INCOMPAT feature this package can read. The ones
// left out change what bytes mean in ways it does not implement:
// compression (never merged), journal_dev (an external journal, not a file
// system), dirdata (extra data in directory entries), encrypt (file names
// and contents are ciphertext) and casefold (name lookups fold case).
const readIncompat = IncompatFiletype | IncompatRecover | IncompatMetaBG | IncompatExtents |
	Incompat64Bit | IncompatMMP | IncompatFlexBG | IncompatEAInode | IncompatCsumSeed |
	IncompatLargeDir | IncompatInlineData

// knownROCompat is every RO_COMPAT feature this package knows the meaning
// of. A volume with others can be read but must not be opened read-write.
const knownROCompat = ROCompatSparseSuper | ROCompatLargeFile | ROCompatBtreeDir | ROCompatHugeFile |
	ROCompatGDTCsum | ROCompatDirNlink | ROCompatExtraIsize | ROCompatQuota | ROCompatBigalloc |
	ROCompatMetadataCsum | ROCompatReadonly | ROCompatProject | ROCompatVerity | ROCompatOrphanPresent

// The features this package can write. A volume with any other feature
// set is served read-only, and ReadOnly says which features stopped it:
//
//   - has_journal with the journal on another device (s_journal_inum 0:
//     an external journal), fast_commit: the writer journals into an
//     internal jbd2 journal only (jtxn.go); writing around a journal
//     leaves one whose replay undoes ours. An internal journal is
//     written (has_journal is writable then).
//   - orphan_file, snapshot bits, quota, project: structures that must
//     change with every allocation or deletion and are not maintained.
//   - inline_data, bigalloc, ea_inode, mmp, encrypt, casefold, dirdata,
//     compression, journal_dev, verity, shared_blocks, replica,
//     read-only, btree_dir: formats the writer does not produce or
//     must not touch.
//
// needs_recovery: a read-write Open replays the journal first (see
// journal.go), which clears it; a read-only one with Config.ShowRecovered
// shows what replay would write without writing; an external journal
// still needing recovery is refused read-write (ErrNeedsRecovery).
const (
	writeCompat = CompatDirPrealloc | CompatImagicInodes | CompatExtAttr | CompatResizeInode |
		CompatDirIndex | CompatLazyBG | CompatSparseSuper2 | CompatStableInodes
	writeIncompat = IncompatFiletype | IncompatMetaBG | Incompat64Bit | IncompatFlexBG |
		IncompatCsumSeed | IncompatLargeDir | IncompatExtents
	writeROCompat = ROCompatSparseSuper | ROCompatLargeFile | ROCompatHugeFile | ROCompatGDTCsum |
		ROCompatDirNlink | ROCompatExtraIsize | ROCompatMetadataCsum
)

// unwritableFeatures names the features of s that keep it from being
// written, "" if there are none.
func unwritableFeatures(s *Superblock) string {
	var parts []string
	compat := s.Compat &^ writeCompat
	if internalJournal(s) && journalWritable {
		compat &^= CompatHasJournal
	}
	if c := compat; c != 0 {
		if c&CompatHasJournal != 0 && s.JournalInum == 0 {
			parts = append(parts, "external journal (device "+strconv.FormatUint(uint64(s.JournalDev), 16)+")")
			c &^= CompatHasJournal
		}
		if c != 0 {
			parts = append(parts, c.String())
		}
	}
	if i := s.Incompat &^ writeIncompat; i != 0 {
		parts = append(parts, i.String())
	}
	if r := s.ROCompat &^ writeROCompat; r != 0 {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, " ")
}

// internalJournal reports whether s has a journal in an inode of its own
// (the journal the writer can write).
func internalJournal(s *Superblock) bool {
	return s.HasCompat(CompatHasJournal) && s.JournalInum != 0 && !s.HasIncompat(IncompatJournalDev)
}

// journaled reports whether the volume has the journal its writes go
// through.
func (v *Volume) journaled() bool { return internalJournal(v.sb) && journalWritable }
