// Package jbd2 owns the on-disk format of the ext3/ext4 journal (jbd2),
// its recovery, and the writer that commits transactions into it.
//
// Format (everything big-endian). The journal is a file (the inode
// s_journal_inum of the file system; Log maps its blocks to the device)
// whose block 0 holds the superblock and whose blocks First..MaxLen-1 are
// a circular log. The superblock (v1: geometry and the log's start; v2
// adds feature words, the UUID, the checksum type and a CRC32C of itself)
// says where the oldest live transaction starts (s_start; 0 when the log
// is empty) and its ID (s_sequence). Every log metadata block starts with
// the magic 0xC03B3998, a block type and the ID of its transaction:
//
//   - descriptor blocks: block tags, each naming the home block of the log
//     block at the same position after the descriptor. A tag is 8 bytes
//     (block number low, 16-bit checksum, 16-bit flags), plus 4 with the
//     64bit feature (block number high), plus 2 with csum_v2; with csum_v3
//     it is 16 bytes (block low, 32-bit flags, block high, 32-bit
//     checksum). Flags: ESCAPE (the copy's first 4 bytes were the magic
//     and are stored as zero), SAME_UUID (otherwise 16 bytes of UUID follow
//     the tag: only the first one has them), DELETED (old writers; ignored),
//     LAST_TAG. With csum v2/v3 the block's last 4 bytes are a CRC32C of
//     the block, and each tag carries the CRC32C of the transaction ID and
//     the log copy (16 bits of it with v2).
//   - revoke blocks: a byte count and 4- or 8-byte (64bit) block numbers
//     whose earlier journaled copies must not be replayed; a tail checksum
//     like descriptors.
//   - commit blocks: the transaction is complete once its commit block is
//     on disk. With csum v2/v3 h_chksum[0] is a CRC32C of the block; with
//     checksum v1 (COMPAT_CHECKSUM) it is a big-endian CRC32 of the
//     transaction's descriptors and copies (type 1, size 4).
//
// Every csum v2/v3 checksum starts from the CRC32C of the journal UUID
// (the superblock's own from all ones), and like ext4's it is the raw
// register, without final inversion.
//
// Recovery (Recover): scan the log from s_start for the last committed
// transaction (a block that does not carry the magic and the expected ID,
// or a transaction whose checksums fail, ends it: the failed transaction
// and anything after it are not replayed); collect the revoke records of
// committed transactions; write every committed copy home in log order,
// skipping revoked ones and restoring escaped magic; flush; mark the log
// empty (s_start 0, s_sequence one past the last transaction) and flush.
// The caller (fs/ext) then clears the file system's needs_recovery flag.
// Replay is idempotent, so a crash at any point of this order recovers
// again to the same state (see Recover). A committed transaction that
// names a block outside the volume fails recovery before anything is
// written; a committed copy whose tag checksum fails is skipped and
// reported (ErrChecksum) after the rest is replayed, and the log is then
// left as it was.
//
// Scan is the same walk (the same passes and checks, one implementation)
// without the writes: it returns each home block's last committed copy,
// as replay would leave it, for a read-only open to show (fs/ext, with
// uring/overlayring under the engine), and the same Stats and errors as
// Recover. Its copies are held in memory, up to a limit (ErrScanLimit).
//
// Writing (Journal): Commit writes one transaction (revoke blocks, then
// descriptors each followed by the copies they tag, escaped where needed,
// then the commit block, with the checksums the journal's features call
// for) at the log's head, wrapping at its end; a flush separates the body
// from the commit block unless the journal has async_commit, and another
// makes the commit durable. The caller flushes the data its metadata
// points at before calling Commit (ordered mode). The first transaction
// into an empty log first records its start in the superblock. When the
// log has no room, Commit checkpoints: every block committed since the
// last checkpoint is written home (newest copy; revoked ones are dropped),
// flushed, and the log marked empty. Journal keeps those copies in memory
// until then. A write or flush that fails part-way aborts the Journal
// (ErrAborted from then on, as jbd2 aborts its journal): whether the
// transaction's commit block arrived is unknown, and only recovery may
// decide what the log holds.
//
// Not supported: fast commits (INCOMPAT fast_commit: refused), external
// journal devices (fs/ext refuses them by name), checksum types other than
// CRC32C for v2/v3, journals whose block size differs from the volume's,
// several file systems sharing one journal (s_nr_users > 1 is not
// checked), s_errno (kept as it is; fs/ext logs it). The scan is the
// simple one: a bad descriptor or revoke checksum ends the log there, as
// a bad commit checksum does (jbd2 can, in newer kernels, look further
// ahead using commit times; a volume that needs that is replayed by
// e2fsck).
package jbd2
