package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/mpage"
)

// The journal (see package jbd2 for its format and recovery).
//
// A read-write Open of a volume whose superblock says needs_recovery
// replays the internal journal first (recoverJournal), then reads the
// superblock again, now as the last committed transaction left it, and
// opens as usual. A read-only Open does not write the device. With
// Config.ShowRecovered it shows the recovered state anyway (showRecovered):
// jbd2.Scan, Recover's walk without the writes, finds each home block's
// last committed copy, read into memory (bounded by MaxRecoveredView), and
// the hook lays them over the device's reads below the page cache (the
// engine's uring/overlayring). The overlay has to sit there, not in this
// package: directory and symbolic-link blocks, journaled as metadata, are
// read through their inode's own mapping, not the metadata mapping, and
// any page may be evicted and read again. The scan runs on a mapping of
// its own that is closed before the hook, so nothing read before the
// overlay stays cached; then the superblock is read again, through it.
// Without the hook (or with an external journal) a read-only Open reads
// the volume as it is on the device, before the unreplayed transactions,
// and says so through Logf. External journals (the journal on another
// device: s_journal_dev, no journal inode) are refused for read-write by
// name, as before.

// JournalLog returns the internal journal's block map: the extents (or
// block pointers) of inode s_journal_inum, collected into runs.
func (v *Volume) JournalLog() (*jbd2.ExtentLog, error) {
	if err := v.enter(); err != nil {
		return nil, err
	}
	defer v.leave()
	return v.journalLog()
}

func (v *Volume) journalLog() (*jbd2.ExtentLog, error) {
	sb := v.sb
	if !sb.HasCompat(CompatHasJournal) {
		return nil, fmt.Errorf("%w: the volume has no journal", ErrNotFound)
	}
	if sb.JournalInum == 0 {
		return nil, fmt.Errorf("%w: external journal (device %#x)", ErrUnsupported, sb.JournalDev)
	}
	in, err := v.readInode(sb.JournalInum)
	if err != nil {
		return nil, fmt.Errorf("ext: journal: %w", err)
	}
	var mapper mpage.BlockMapper
	switch {
	case in.Flags&FlagInlineData != 0:
		return nil, fmt.Errorf("%w: journal inode %d has inline data", ErrCorrupt, in.Ino)
	case in.Flags&FlagExtents != 0:
		em, err := newExtentMapper(v, in)
		if err != nil {
			return nil, fmt.Errorf("ext: journal: %w", err)
		}
		mapper = em
	default:
		mapper = newIndirectMapper(v, in)
	}
	blocks := in.Size >> v.blkbits
	if blocks == 0 || blocks > sb.BlocksCount {
		return nil, fmt.Errorf("%w: journal inode %d: size %d", ErrCorrupt, in.Ino, in.Size)
	}
	var exts []jbd2.Extent
	for lblk := uint64(0); lblk < blocks; {
		bm := mpage.BlockMap{Block: lblk, Len: int(min(blocks-lblk, 1<<20))}
		if err := mapper.MapBlocks(&bm); err != nil {
			return nil, fmt.Errorf("ext: journal block %d: %w", lblk, err)
		}
		if bm.Flags&mpage.Mapped == 0 {
			return nil, fmt.Errorf("%w: journal inode %d: hole at block %d", ErrCorrupt, in.Ino, lblk)
		}
		n := uint64(bm.Len)
		if last := len(exts) - 1; last >= 0 && exts[last].Physical+exts[last].Len == bm.PBlock {
			exts[last].Len += n
		} else {
			exts = append(exts, jbd2.Extent{Logical: lblk, Physical: bm.PBlock, Len: n})
		}
		lblk += n
	}
	return jbd2.NewExtentLog(exts)
}

// MetaDevice is a jbd2.Device over a mapping of the whole volume in its
// block size: journal blocks and replayed home blocks go through the page
// cache like every other metadata I/O, and Flush writes the mapping back
// and flushes the device.
type MetaDevice struct {
	m       *mpage.Mapping
	blkbits uint
	blocks  uint64
}

// NewMetaDevice is a jbd2.Device over m, a linear mapping of a volume of
// blocks blocks.
func NewMetaDevice(m *mpage.Mapping, blocks uint64) *MetaDevice {
	return &MetaDevice{m: m, blkbits: m.BlkBits(), blocks: blocks}
}

// ReadBlock implements jbd2.Device.
func (d *MetaDevice) ReadBlock(blk uint64, b []byte) error {
	if blk >= d.blocks {
		return fmt.Errorf("%w: block %d past the end of the volume (%d blocks)", ErrCorrupt, blk, d.blocks)
	}
	n, err := d.m.ReadAt(b, int64(blk)<<d.blkbits)
	if err == io.EOF && n == len(b) {
		err = nil
	}
	return err
}

// WriteBlock implements jbd2.Device.
func (d *MetaDevice) WriteBlock(blk uint64, b []byte) error {
	if blk >= d.blocks {
		return fmt.Errorf("%w: write of block %d past the end of the volume (%d blocks)", ErrCorrupt, blk, d.blocks)
	}
	_, err := d.m.WriteAt(b, int64(blk)<<d.blkbits)
	return err
}

// Flush implements jbd2.Device.
func (d *MetaDevice) Flush() error {
	if err := d.m.WriteAndWait(0, -1); err != nil {
		return err
	}
	return d.m.Device().Flush()
}

// Blocks implements jbd2.Device.
func (d *MetaDevice) Blocks() uint64 { return d.blocks }

// BlockSize implements jbd2.Device.
func (d *MetaDevice) BlockSize() int { return 1 << d.blkbits }

// recoveredSuperblock deals with a superblock that says needs_recovery
// before Open goes on: a read-write open replays the journal, a read-only
// one with Config.ShowRecovered shows what replay would write; either way
// the superblock is read again, now as the journal leaves it. Otherwise sb
// is returned as it is.
func (v *Volume) recoveredSuperblock(sb *Superblock) (*Superblock, error) {
	cfg := v.cfg
	switch {
	case !sb.HasIncompat(IncompatRecover):
		return sb, nil
	case !cfg.ReadOnly:
		if err := recoverJournal(cfg, sb, v.logf); err != nil {
			return nil, err
		}
	case whyNotShown(sb, cfg) != "":
		return sb, nil // decideAccess says so
	default:
		if err := showRecovered(cfg, sb, v.logf); err != nil {
			return nil, err
		}
		v.recoveredView = true
	}
	return loadSuperblock(cfg)
}

// whyNotShown says why a read-only open of a volume that needs recovery
// cannot show the recovered state, or "" when it can.
func whyNotShown(sb *Superblock, cfg Config) string {
	switch {
	case cfg.ShowRecovered == nil:
		return "no recovered view was asked for"
	case sb.JournalInum == 0 || sb.JournalDev != 0:
		return fmt.Sprintf("the journal is on an external device (%#x), which this package does not read", sb.JournalDev)
	case !sb.HasCompat(CompatHasJournal):
		return "needs_recovery is set but the volume has no journal"
	}
	return ""
}

// MaxRecoveredView bounds the memory a read-only open of a volume that
// needs recovery spends on the journal's unreplayed blocks (the overlay
// holds each distinct home block once). A journal holding more is refused
// with ErrNeedsRecovery: e2fsck or a read-write open replays it.
const MaxRecoveredView = 256 << 20

// recoveredViewLimit is MaxRecoveredView; tests lower it.
var recoveredViewLimit int64 = MaxRecoveredView

// showRecovered scans the journal of the volume whose superblock is sb,
// on a mapping of its own that is closed again (nothing it read stays
// cached), and hands what replay would write to cfg.ShowRecovered. The
// device is not written.
func showRecovered(cfg Config, sb *Superblock, logf func(string, ...any)) error {
	var r *jbd2.Replay
	err := onJournalMapping(cfg, sb, logf, "ext journal scan", func(v *Volume) (err error) {
		r, err = v.scanJournal()
		return err
	})
	if err != nil {
		return err
	}
	if len(r.Homes) > 0 {
		if err := cfg.ShowRecovered(r); err != nil {
			return fmt.Errorf("%w: show the journal's blocks: %w", ErrNeedsRecovery, err)
		}
	}
	logf("ext: journal needs recovery: %d transactions shown from the journal (read-only, device not written): %d blocks of %d KiB",
		r.Stats.Transactions, len(r.Homes), r.Bytes()>>10)
	logJournalNotes(logf, r.Stats)
	return nil
}

// scanJournal is showRecovered on its mapping.
func (v *Volume) scanJournal() (*jbd2.Replay, error) {
	if err := v.loadGroups(); err != nil {
		return nil, fmt.Errorf("ext: journal scan: %w", err)
	}
	log, err := v.journalLog()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNeedsRecovery, err)
	}
	r, err := jbd2.Scan(NewMetaDevice(v.meta, v.sb.BlocksCount), log, recoveredViewLimit)
	switch {
	case errors.Is(err, jbd2.ErrScanLimit):
		return nil, fmt.Errorf("%w: %w: too much to show read-only; run e2fsck or open read-write", ErrNeedsRecovery, err)
	case err != nil:
		return nil, fmt.Errorf("%w: the journal cannot be shown read-only (replay would fail too): %w; run e2fsck", ErrNeedsRecovery, err)
	}
	return r, nil
}

// recoverJournal replays the journal of the volume whose superblock is sb
// and clears needs_recovery, through a mapping of its own that is closed
// (clean) when it returns, so Open then reads everything afresh. The
// order is jbd2.Recover's (replay, flush, empty the log, flush), then the
// flag cleared and flushed: a crash anywhere replays again or finds an
// empty log, and either way ends here.
func recoverJournal(cfg Config, sb *Superblock, logf func(string, ...any)) error {
	if sb.JournalInum == 0 || sb.JournalDev != 0 {
		return fmt.Errorf("%w: %w: the journal is on an external device (%#x), which this package does not replay; run e2fsck with it",
			ErrNeedsRecovery, ErrUnsupported, sb.JournalDev)
	}
	if !sb.HasCompat(CompatHasJournal) {
		return fmt.Errorf("%w: needs_recovery is set but the volume has no journal; run e2fsck", ErrNeedsRecovery)
	}
	return onJournalMapping(cfg, sb, logf, "ext journal recovery", (*Volume).replayJournal)
}

// onJournalMapping runs fn on a bare read-only Volume of sb over a linear
// mapping of the whole device, and closes the mapping after: it must be
// clean then (fn flushed what it wrote), and its pages leave the cache.
func onJournalMapping(cfg Config, sb *Superblock, logf func(string, ...any), name string, fn func(*Volume) error) error {
	v := &Volume{cfg: cfg, logf: logf, sb: sb, blkbits: uint(10 + sb.LogBlockSize), readOnly: true, nodes: map[uint32]*node{}}
	v.blockBufs.New = func() any { b := make([]byte, sb.BlockSize); return &b }
	var err error
	v.meta, err = mpage.NewMapping(mpage.MappingConfig{
		Device: cfg.Device, Cache: cfg.Cache, Mapper: mpage.LinearMapper{Blocks: sb.BlocksCount},
		BlockSize: sb.BlockSize, Size: int64(sb.BlocksCount) << v.blkbits, Name: name,
	})
	if err != nil {
		return fmt.Errorf("ext: %s: %w", name, err)
	}
	err = fn(v)
	if cerr := v.meta.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("ext: %s: %w", name, cerr)
	}
	return err
}

// replayJournal is recoverJournal on its mapping.
func (v *Volume) replayJournal() error {
	if err := v.loadGroups(); err != nil {
		return fmt.Errorf("ext: recovery: %w", err)
	}
	log, err := v.journalLog()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNeedsRecovery, err)
	}
	dev := NewMetaDevice(v.meta, v.sb.BlocksCount)
	st, err := jbd2.Recover(dev, log)
	if err != nil {
		// Whatever was replayed is on the device (and would be again):
		// write it back so the mapping closes clean.
		return errors.Join(fmt.Errorf("%w: %w", ErrNeedsRecovery, err), dev.Flush())
	}
	if st.Transactions == 0 {
		v.logf("ext: journal replayed: 0 transactions (the log was empty); needs_recovery cleared")
	} else {
		v.logf("ext: journal replayed: %d transactions (IDs %d..%d), %d blocks written home, %d revoked copies skipped (%d revoke records)",
			st.Transactions, st.Start, st.End-1, st.Blocks, st.Revoked, st.RevokeRecords)
	}
	logJournalNotes(v.logf, st)
	return v.clearNeedsRecovery(dev)
}

// logJournalNotes logs what a replay or scan found beyond its counts: a
// log that ended at a failed checksum, an error the journal recorded.
func logJournalNotes(logf func(string, ...any), st jbd2.Stats) {
	if st.ChecksumEnd {
		logf("ext: journal: the log ended at a transaction that failed its checksums (%s); it was not replayed", st.EndReason)
	}
	if st.Errno != 0 {
		logf("ext: the journal recorded error %d (the file system aborted it): run e2fsck -f", st.Errno)
	}
}

// clearNeedsRecovery clears needs_recovery in the superblock as replay
// left it (the journal may have held a newer copy) and makes it durable.
func (v *Volume) clearNeedsRecovery(dev *MetaDevice) error {
	blk, off := v.superPos()
	buf := make([]byte, v.sb.BlockSize)
	if err := dev.ReadBlock(blk, buf); err != nil {
		return fmt.Errorf("ext: recovery: read superblock: %w", err)
	}
	r := buf[off : off+superblockSize]
	le := binary.LittleEndian
	if le.Uint16(r[0x38:]) != superMagic {
		return fmt.Errorf("%w: the replayed superblock has no ext magic", ErrCorrupt)
	}
	le.PutUint32(r[0x60:], le.Uint32(r[0x60:])&^uint32(IncompatRecover))
	if ROCompatFeatures(le.Uint32(r[0x64:]))&ROCompatMetadataCsum != 0 {
		le.PutUint32(r[sbChecksumOff:], superblockCsum(r))
	}
	if err := dev.WriteBlock(blk, buf); err != nil {
		return fmt.Errorf("ext: recovery: write superblock: %w", err)
	}
	if err := dev.Flush(); err != nil {
		return fmt.Errorf("ext: recovery: flush superblock: %w", err)
	}
	return nil
}
