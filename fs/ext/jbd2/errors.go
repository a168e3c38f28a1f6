package jbd2

import "errors"

// Sentinel errors. Every error the package returns wraps one of these (or
// an I/O error from the Device) with what and where: the log block, the
// transaction, the home block.
var (
	// ErrNotJournal: journal block 0 is not a jbd2 superblock (bad magic
	// or block type).
	ErrNotJournal = errors.New("jbd2: not a jbd2 journal")
	// ErrCorrupt: a structure the log relies on is inconsistent: a
	// superblock field out of range, a revoke block whose count overruns
	// it, a committed transaction naming a block outside the volume, a
	// log longer than the journal.
	ErrCorrupt = errors.New("jbd2: corrupt journal")
	// ErrChecksum: a checksum does not match. In the superblock it stops
	// everything; a committed data block with a bad tag checksum is not
	// replayed, and recovery then reports this error (as jbd2 does) after
	// replaying the rest.
	ErrChecksum = errors.New("jbd2: journal checksum mismatch")
	// ErrUnsupported: the journal uses a feature this package does not
	// implement (fast commits, unknown INCOMPAT bits, a checksum type
	// other than crc32c with csum v2/v3) or a block size that does not
	// match the volume's.
	ErrUnsupported = errors.New("jbd2: unsupported journal feature")
	// ErrNeedsRecovery: a writer was opened on a journal that still holds
	// transactions (s_start != 0): Recover first.
	ErrNeedsRecovery = errors.New("jbd2: journal needs recovery")
	// ErrTransaction: a transaction handed to Commit is malformed: a
	// block of the wrong size, a home block outside the volume, the same
	// block twice, or both written and revoked.
	ErrTransaction = errors.New("jbd2: invalid transaction")
	// ErrTooBig: a transaction needs more log blocks than the journal has.
	ErrTooBig = errors.New("jbd2: transaction larger than the journal")
	// ErrAborted: an earlier Commit or Checkpoint failed part-way, so the
	// log's state on the device is no longer known; the Journal refuses
	// further work (as jbd2 aborts its journal) and leaves the log to
	// recovery.
	ErrAborted = errors.New("jbd2: journal aborted after a failed write")
	// ErrScanLimit: Scan found more distinct committed blocks than the
	// memory it was allowed for their copies.
	ErrScanLimit = errors.New("jbd2: replay larger than the scan's limit")
	// ErrClosed: the Journal was closed.
	ErrClosed = errors.New("jbd2: journal closed")
)
