package jbd2

import (
	"errors"
	"fmt"
)

// Stats says what Recover found and did.
type Stats struct {
	// Start and End are the first transaction ID in the log and the one
	// after the last committed one: End-Start transactions were replayed.
	Start, End uint32
	// Transactions replayed, Blocks written home, Revoked log copies
	// skipped because a revoke record cancelled them, RevokeRecords read.
	Transactions  int
	Blocks        int
	Revoked       int
	RevokeRecords int
	// BadBlocks: committed log copies not replayed because their tag
	// checksum did not match (Recover then returns ErrChecksum).
	BadBlocks int
	// Errno is the journal superblock's s_errno: nonzero when the file
	// system aborted the journal after an error (e2fsck then checks it).
	Errno int32
	// ChecksumEnd: the log ended at a transaction whose checksums failed
	// (a torn or corrupt last transaction), not at a block that simply
	// does not continue it. That transaction and anything after it were
	// not replayed.
	ChecksumEnd bool
	// EndReason says why the scan stopped (a block that does not continue
	// the log, a bad checksum in the last transaction).
	EndReason string
}

// Recover replays the journal on dev whose blocks log maps, as jbd2 does
// at mount and e2fsck at check, in three passes over the log from
// s_start:
//
//  1. scan: follow the log while each block carries the magic and the
//     expected transaction ID, checking descriptor, revoke and commit
//     checksums; the first block that does not continue the log (or a
//     transaction whose checksums fail) ends it, and only transactions
//     with a valid commit block before that end count. Committed tags
//     naming a block outside the volume fail recovery here, before
//     anything is written.
//  2. revoke: collect the revoke records of the committed transactions,
//     each block with the newest transaction that revoked it.
//  3. replay: write every committed log copy home, in log order (later
//     transactions win), unless a revoke record in the same or a later
//     transaction cancels it; escaped copies get their magic back.
//
// Then the device is flushed, and only then is the journal superblock
// rewritten empty (s_start 0, s_sequence past the last transaction) and
// flushed. The caller clears the file system's needs_recovery flag after
// that.
//
// The order is crash-safe because replay is idempotent: until the
// superblock write, the log is untouched, and replaying it again writes
// the same bytes to the same blocks whatever they hold now (a replayed
// block's content is a function of the log alone). The superblock write
// is one block inside one sector-aligned page and is the commit point: a
// crash before it replays again, a crash after it finds an empty log. A
// crash before the needs_recovery flag is cleared finds an empty log and
// just clears it.
//
// A journal with s_start 0 needs nothing: Recover returns zero Stats and
// writes nothing.
func Recover(dev Device, log Log) (Stats, error) {
	w, st, revoked, err := walkCommitted(dev, log)
	if err != nil || w == nil {
		return st, err
	}
	replayErr := w.eachCopy(&st, revoked, func(home uint64, lblk uint32, data []byte) error {
		if err := w.dev.WriteBlock(home, data); err != nil {
			return fmt.Errorf("jbd2: replay journal block %d to block %d: %w", lblk, home, err)
		}
		return nil
	})
	if err := dev.Flush(); err != nil {
		return st, fmt.Errorf("jbd2: recover: flush replayed blocks: %w", err)
	}
	if replayErr != nil {
		// Leave the log as it is: the volume still needs recovery.
		return st, replayErr
	}
	// Restart the log one transaction ID past the end, so a stale commit
	// block of the ID after the last one can never pass for a new one.
	sb := w.sb
	sb.Sequence = st.End + 1
	sb.Start = 0
	if err := writeSuperblock(w.io, sb); err != nil {
		return st, err
	}
	if err := dev.Flush(); err != nil {
		return st, fmt.Errorf("jbd2: recover: flush journal superblock: %w", err)
	}
	return st, nil
}

// walkCommitted runs the passes Recover and Scan share before anything is
// written: the superblock, the scan for the log's end and the revoke
// records. A nil walker with a nil error is an empty log (nothing to
// replay; the Stats say so).
func walkCommitted(dev Device, log Log) (*walker, Stats, map[uint64]uint32, error) {
	io := newLogIO(dev, log)
	sb, err := loadSuperblock(io)
	if err != nil {
		return nil, Stats{}, nil, err
	}
	if sb.Start == 0 {
		return nil, Stats{Start: sb.Sequence, End: sb.Sequence, Errno: sb.Errno}, nil, nil
	}
	w := &walker{io: io, sb: sb, l: LayoutOf(sb), dev: dev}
	st, err := w.scan()
	if err != nil {
		return nil, st, nil, err
	}
	revoked, err := w.collectRevokes(&st)
	if err != nil {
		return nil, st, nil, err
	}
	return w, st, revoked, nil
}

// walker follows the log.
type walker struct {
	io  *logIO
	sb  *Superblock
	l   Layout
	dev Device
}

// wrap folds a log position past the journal's end back to its first log
// block.
func (w *walker) wrap(pos uint64) uint32 {
	first, last := uint64(w.sb.First), uint64(w.sb.MaxLen)
	if pos >= last {
		pos = first + (pos-first)%(last-first)
	}
	return uint32(pos)
}

// logBlocks is the number of blocks in the circular log.
func (w *walker) logBlocks() uint64 { return uint64(w.sb.MaxLen - w.sb.First) }

// errEnd ends the scan: the block read does not continue the log.
var errEnd = errors.New("end of log")

// scan is pass 1: it finds End, the first transaction ID without a valid
// commit block.
func (w *walker) scan() (Stats, error) {
	st := Stats{Start: w.sb.Sequence, Errno: w.sb.Errno}
	buf := make([]byte, w.io.bs)
	data := make([]byte, w.io.bs)
	pos, tid := w.sb.Start, w.sb.Sequence
	sumV1 := ^uint32(0)
	outside := false // a tag of this transaction names a block outside the volume
	var walked uint64
	for {
		if walked > w.logBlocks() {
			return st, fmt.Errorf("%w: the log runs past the journal's %d blocks without ending", ErrCorrupt, w.logBlocks())
		}
		if err := w.io.read(pos, buf); err != nil {
			return st, err
		}
		h := ParseHeader(buf)
		if h.Magic != Magic || h.Sequence != tid {
			st.EndReason = fmt.Sprintf("journal block %d does not continue transaction %d", pos, tid)
			break
		}
		var n uint64
		var err error
		switch h.Type {
		case BlockDescriptor:
			n, err = w.scanDescriptor(buf, data, pos, &sumV1, &outside)
		case BlockRevoke:
			n, err = w.scanRevoke(buf, pos)
		case BlockCommit:
			if err = w.l.VerifyCommit(buf, sumV1); err != nil {
				break
			}
			if outside {
				return st, fmt.Errorf("%w: transaction %d writes a block outside the volume's %d blocks", ErrCorrupt, tid, w.dev.Blocks())
			}
			n, tid, sumV1, outside = 1, tid+1, ^uint32(0), false
		default:
			err = fmt.Errorf("%w: journal block %d: unknown block type %d", errEnd, pos, h.Type)
		}
		if err != nil {
			if errors.Is(err, errEnd) || errors.Is(err, ErrChecksum) {
				st.EndReason = err.Error()
				st.ChecksumEnd = errors.Is(err, ErrChecksum)
				break
			}
			return st, err
		}
		walked += n
		pos = w.wrap(uint64(pos) + n)
	}
	st.End = tid
	st.Transactions = int(st.End - st.Start)
	return st, nil
}

// scanDescriptor checks a descriptor block at pos and returns how many log
// blocks it and its copies take; with checksum v1 it sums them into sumV1.
func (w *walker) scanDescriptor(buf, data []byte, pos uint32, sumV1 *uint32, outside *bool) (uint64, error) {
	if !w.l.VerifyTail(buf) {
		return 0, fmt.Errorf("%w: descriptor block at journal block %d", ErrChecksum, pos)
	}
	tags := w.l.ParseTags(buf)
	for _, t := range tags {
		if t.Block >= w.dev.Blocks() {
			*outside = true
		}
	}
	if w.l.CsumV1 {
		*sumV1 = crc32BE(*sumV1, buf)
		for i := range tags {
			if err := w.io.read(w.wrap(uint64(pos)+1+uint64(i)), data); err != nil {
				return 0, err
			}
			*sumV1 = crc32BE(*sumV1, data)
		}
	}
	return 1 + uint64(len(tags)), nil
}

// scanRevoke checks a revoke block at pos.
func (w *walker) scanRevoke(buf []byte, pos uint32) (uint64, error) {
	if !w.l.VerifyTail(buf) {
		return 0, fmt.Errorf("%w: revoke block at journal block %d", ErrChecksum, pos)
	}
	if _, err := w.l.ParseRevoke(buf); err != nil {
		return 0, fmt.Errorf("journal block %d: %w", pos, err)
	}
	return 1, nil
}

// visit walks the committed part of the log (transactions Start..End-1)
// again, handing each descriptor and revoke block to fn with its position
// and transaction ID.
func (w *walker) visit(st *Stats, fn func(h Header, buf []byte, pos uint32) error) error {
	buf := make([]byte, w.io.bs)
	pos, tid := w.sb.Start, st.Start
	for tid != st.End {
		if err := w.io.read(pos, buf); err != nil {
			return err
		}
		h := ParseHeader(buf)
		if h.Magic != Magic || h.Sequence != tid {
			// The scan saw this block continue the log: it changed under us.
			return fmt.Errorf("%w: journal block %d changed during recovery", ErrCorrupt, pos)
		}
		n := uint64(1)
		switch h.Type {
		case BlockDescriptor:
			n += uint64(len(w.l.ParseTags(buf)))
		case BlockCommit:
			tid++
		}
		if err := fn(h, buf, pos); err != nil {
			return err
		}
		pos = w.wrap(uint64(pos) + n)
	}
	return nil
}

// collectRevokes is pass 2: every revoked block with the newest
// transaction that revoked it.
func (w *walker) collectRevokes(st *Stats) (map[uint64]uint32, error) {
	revoked := make(map[uint64]uint32)
	err := w.visit(st, func(h Header, buf []byte, pos uint32) error {
		if h.Type != BlockRevoke {
			return nil
		}
		recs, err := w.l.ParseRevoke(buf)
		if err != nil {
			return fmt.Errorf("journal block %d: %w", pos, err)
		}
		for _, blk := range recs {
			st.RevokeRecords++
			if old, ok := revoked[blk]; !ok || tidAfter(h.Sequence, old) {
				revoked[blk] = h.Sequence
			}
		}
		return nil
	})
	return revoked, err
}

// tidAfter reports whether transaction a comes after b, in the circular
// 32-bit ID space.
func tidAfter(a, b uint32) bool { return int32(a-b) > 0 }

// eachCopy is pass 3's walk: fn gets every committed copy that replay
// writes home, in log order (a later copy of the same home block wins),
// with its journal block and its bytes as they go home (checksum
// verified, escape undone). data is reused after fn returns. A copy whose
// tag checksum fails is skipped and counted; the error says so at the
// end, after the rest were handed to fn.
func (w *walker) eachCopy(st *Stats, revoked map[uint64]uint32, fn func(home uint64, lblk uint32, data []byte) error) error {
	data := make([]byte, w.io.bs)
	err := w.visit(st, func(h Header, buf []byte, pos uint32) error {
		if h.Type != BlockDescriptor {
			return nil
		}
		for i, t := range w.l.ParseTags(buf) {
			if rt, ok := revoked[t.Block]; ok && !tidAfter(h.Sequence, rt) {
				st.Revoked++
				continue
			}
			lblk := w.wrap(uint64(pos) + 1 + uint64(i))
			if err := w.io.read(lblk, data); err != nil {
				return err
			}
			if w.l.CsumV2or3 && w.l.TagChecksum(h.Sequence, data) != t.Checksum {
				st.BadBlocks++
				continue
			}
			if t.Flags&TagEscape != 0 {
				putMagic(data)
			}
			if err := fn(t.Block, lblk, data); err != nil {
				return err
			}
			st.Blocks++
		}
		return nil
	})
	if err == nil && st.BadBlocks > 0 {
		err = fmt.Errorf("%w: %d committed blocks with bad tag checksums were not replayed", ErrChecksum, st.BadBlocks)
	}
	return err
}

// putMagic puts the journal magic back at the start of an escaped block.
func putMagic(b []byte) { b[0], b[1], b[2], b[3] = 0xC0, 0x3B, 0x39, 0x98 }
