// Package ext reads ext2, ext3 and ext4 volumes through the mpage engine,
// and writes ext2, ext3 and ext4, journaled through jbd2 or not (see below).
//
// It owns the on-disk format: the superblock (features, geometry,
// checksum), the group descriptors (32- and 64-byte, meta_bg and flex_bg
// placement, crc16 and crc32c checksums), inodes (sizes, times, huge_file
// block counts, checksums, in-inode extended attributes), directories
// (linear blocks with or without checksum tails; htree index blocks are
// recognised, verified and skipped, since a linear walk sees every name;
// inline directories) and the block mappers the engine calls as get_block:
//
//   - indirectMapper (ext2/3, and ext4 files without extents) maps runs of
//     blocks whose pointers sit in one pointer array and are contiguous on
//     the device, and sets Boundary on the run that ends an array, so the
//     engine submits data before the next indirect block is read;
//   - extentMapper maps whole extents (multi-block answers), reads
//     unwritten extents and gaps as holes with their length, and walks
//     index nodes of any depth, verifying tree block checksums;
//   - inlineMapper fills the page from the inode (MapUptodate) for
//     inline-data files.
//
// All metadata I/O goes through the volume's own mapping of the whole
// device (an mpage.LinearMapper in the file system's block size), so it
// shares the engine's page cache, readahead and stats; the superblock is
// read first through a throwaway mapping in 1 KiB blocks, or in the
// device's logical blocks when Config.SectorSize says they are larger (a
// 4 KiB-sector disk or zram opened with O_DIRECT), and a file system whose
// blocks are smaller than those is refused (ErrSectorSize). A device too
// small for a superblock, or without the magic, gives ErrNotExt. Nothing
// reads the device around the engine. File data goes through one mapping per inode
// with the inode's mapper; opens of an inode share it, and a bounded number
// of closed ones keep their pages for the next open.
//
// Paths are absolute and taken literally: "/a/b" or "/a/b/"; empty, "."
// and ".." components, names over 255 bytes and NUL bytes are refused with
// ErrInvalidPath. Symbolic links inside the volume are followed (absolute
// targets start at the volume's root, ".." in a target stops at it), at
// most 40 per lookup. No link leads into StagingDir: a lookup that would
// enter it (or name it as an entry of the root reached through a link)
// after following one is ErrHidden, so the directory is reached only by
// a path spelled into it (IsStagingPath), which servers refuse; its own
// users (ReplaceFile, CleanStaging) spell it. IsStagingEntry tells a
// listing of the root, however reached, which entry to leave out.
//
// Errors wrap the sentinels of errors.go with what and where: the inode,
// the block, the path (as *fs.PathError for path operations, *os.LinkError
// for Rename). Sentinels with a POSIX meaning wrap its errno (ErrNotFound
// is ENOENT and so fs.ErrNotExist, ErrNotEmpty ENOTEMPTY, ...). Corrupt
// metadata gives ErrCorrupt, never a panic; the parse functions are fuzzed.
//
// Writing (ext2, ext3 and ext4, with an internal journal or without one:
// the features listed in features.go) is open to volumes opened with
// ReadOnly false whose features the writer handles; others are served
// read-only and ReadOnly says which features stopped it (an external
// journal, fast_commit, inline data, bigalloc, quota, ...). The write
// side has:
//
//   - allocation (balloc.go): block and inode bitmaps, group descriptors
//     (counts, flags, crc16/crc32c checksums, lazily initialised groups)
//     and superblock counts, all changed through the metadata mapping;
//     blocks go right after the goal so sequential writes are contiguous,
//     directories spread over groups, files stay near their directory;
//     blocks and inodes freed since the last sync are not reused until
//     it is durable (quarantine.go), so a power cut never shows an old
//     name over a new file's bytes;
//   - the indirect mapper's Create (indirect_write.go): the missing
//     indirect blocks first, at the goal, then the data after them, New on
//     fresh blocks, Boundary as on read; truncation frees data and
//     indirect blocks;
//   - the extent writer (extent_write.go): new blocks extend the extent
//     before them where they can, unwritten extents are split where
//     written, and the tree is rewritten from the extent list (smallest
//     depth, checksummed blocks); new files on extent volumes use extents;
//   - per-block metadata writes (meta.go), through mpage's metadata
//     block API (ReadBlock, BlockRef.Lock/Data/MarkDirty/Release,
//     ZeroBlock, ForgetBlocks, SyncBlock): only the blocks changed are
//     dirtied in a metadata page, blocks reused for data are forgotten,
//     and the engine, given the metadata mapping as each file mapping's
//     Meta, forgets the data blocks its write path allocates and writes
//     the indirect block after a boundary's data itself. On a journaled
//     volume MarkDirty is where the journal (an mpage.BlockJournal,
//     jtxn.go) takes metadata blocks into its running transaction;
//   - files (write.go): OpenWrite/Create, File.WriteAt (blocks are
//     allocated when data enters the cache, so ENOSPC is WriteAt's),
//     File.Truncate, File.Sync and Volume.Sync (data, then directories,
//     then metadata, then a device flush);
//   - names (dir_write.go): Mkdir, Rmdir, Unlink on linear directories
//     (an htree index is dropped on the first change; with
//     metadata_csum its index blocks get leaf checksum tails);
//   - Rename (rename.go), as rename(2): within and across directories,
//     replacing a file or an empty directory (the replaced inode is freed
//     at once, or at the last close of a File on it, as Unlink does), a
//     moved directory's ".." and both parents' link counts fixed, a
//     rename onto another link of the same inode a no-op; refusals
//     (ENOTEMPTY, EISDIR, ENOTDIR, EINVAL into itself, EBUSY for the root)
//     are checked before anything changes. The new name's entry is
//     pointed at the moved inode in place, so until Rename a replaced
//     name shows its old file and from then on the new one;
//   - ReplaceFile (replace.go, replace_link.go), the atomic, durable
//     replacement (journaled: the staged file renamed over the target in
//     one transaction, see Journaled writing; without a journal): the old file gets a second name in StagingDir (a
//     grave), the content is staged there and made durable with it, the
//     target is pointed at the staged file (a caller's precondition
//     checked in the same name-space change), which keeps its staging
//     name, and made durable; only then do both lose their extra links
//     (the old file onto the orphan list and freed) and the staging names
//     go, so no crash order leaves a name pointing at a freed inode or an
//     inode without a name; CleanStaging removes what a crash left.
//
// On-disk state while writing: the first change of a session marks the
// superblock as a read-write mount does ("not cleanly unmounted", one
// more mount, s_mtime now), and Close, once everything is synced, puts
// back the state Open found: a volume ends clean only if it was clean at
// open (WasClean). A read-write open of an unclean volume (not cleanly
// unmounted, or with recorded errors) fails with ErrUnclean unless
// Config.AllowUnclean; read-only opens read it as it is, saying so
// through Logf. Without a journal every Sync leaves a consistent image
// (e2fsck -fn finds nothing; Sync waits for a name-space change in
// progress), but a crash between syncs needs e2fsck. What the writer keeps
// within reach of e2fsck -p (orphan.go, replace_link.go): an inode that
// lost its last name is on the orphan list (s_last_orphan, chained through
// i_dtime), written before the directory block that drops the name, and a
// writable Open releases the list; ReplaceFile keeps every inode named on
// the device until the write that frees it. Not yet: a new inode may reach
// the device before its entry (unattached, which e2fsck -p refuses). A
// journaled volume is marked as the kernel's ext4 marks it instead:
// s_state stays clean and needs_recovery is set, durably, before the first
// change (see Journaled writing); the orphan list is kept there too, in
// the transactions, and released after the replay.
//
// The journal (journal.go, package jbd2): a read-write Open of a volume
// whose superblock says needs_recovery replays its internal journal before
// anything else (jbd2.Recover through a mapping of its own: scan, revokes,
// replay, flush, empty log, flush), then clears needs_recovery, flushes,
// logs "journal replayed: N transactions ..., M blocks written home, R
// revoked copies skipped", and opens the volume as the journal left it. A
// read-only Open writes nothing. Given Config.ShowRecovered (the engine's
// ShowRecovered: cmd/mpaged's ls, cat and serve --read-only set it) it
// shows the recovered state: jbd2.Scan walks the log exactly as Recover
// does and returns each home block's last committed copy (at most
// MaxRecoveredView bytes, else ErrNeedsRecovery), the hook lays them under
// the ring (uring/overlayring), and Open reads the superblock and
// everything after through them; it logs "journal needs recovery: N
// transactions shown from the journal (read-only, device not written)". A
// journal that cannot be scanned (a bad tag checksum, a corrupt log, an
// unsupported feature) refuses the open, as replay would fail. Without
// the hook, or with an external journal, it reads the volume as it is on
// the device, before the unreplayed transactions (which a kill -9 can
// leave inconsistent), and logs that it does. A read-write Open of an
// external journal needing recovery is refused (ErrNeedsRecovery naming
// it). A read-write Open then releases the orphan list (releaseOrphans:
// left by a crash with unlinked open files, ours or a kernel's), each
// orphan in a handle of its own that also moves s_last_orphan on, and
// commits.
//
// Journaled writing (jtxn.go, jvolume.go): on a volume with an internal
// journal every change goes through the journal in the kernel's
// data=ordered mode, and a crash at any point leaves a volume that replay
// (ours at the next read-write Open, the kernel's, e2fsck's) brings to a
// consistent state without repair: the state after the last commit.
//
//   - The running transaction: every metadata block a change dirties
//     joins it, pinned (writeback leaves it dirty until the transaction
//     has committed): metadata-mapping blocks through the journal hook
//     (MarkDirty calls JoinBlock), directory blocks, which live in their
//     directory's own mapping, explicitly (writeDirBlock changes them in
//     place under the block's lock instead of through WriteAt). Freed
//     blocks with a copy in the log (since the last checkpoint, or in the
//     transaction being committed) get revoke records; so do metadata
//     blocks that become file data (ForgetBlock). Blocks a transaction
//     frees are busy, not handed out by the allocator, until it commits.
//   - Handles: every public change (WriteAt, Truncate, OpenWrite, Mkdir,
//     Rmdir, Unlink, Rename, ReplaceFile's steps, the flusher's
//     WriteInode, the free of an unlinked file at its last close, Close's
//     last changes) runs inside a handle: a shared hold of the journal's
//     handle lock, taken before any other lock of the volume. A commit
//     freezes the running transaction under the exclusive hold (it waits
//     for running handles, new ones wait for it), copies the frozen
//     blocks' bytes and starts a new transaction, then lets handles go
//     before any I/O, so a commit never holds half a change. Handles do
//     not nest; the last release of an unlinked open file, which may
//     happen inside one, frees it on a goroutine with a handle of its own
//     (Close waits for those).
//   - Commit: the data of every cached file is written and waited for
//     (ordered: what the metadata makes reachable is on the device before
//     the commit block; jbd2 flushes before writing it), jbd2 writes the
//     transaction (revokes, descriptors, copies, commit block, flushes),
//     then its blocks are unpinned and writeback may take them home. A
//     commit runs at File.Sync (and ReplaceFile's syncs), at Volume.Sync
//     (which then checkpoints: everything home, the log empty), every 5 s
//     (the kernel's commit interval) from a goroutine of the volume, and
//     at the start of a handle when the running transaction takes more
//     than a quarter of the log. The journal writes its log and its
//     checkpoints straight to the device, never through the metadata
//     mapping (a log block may share a page with a pinned block; a
//     checkpoint writes the committed copy of a block whose cached bytes
//     a newer transaction may already have changed).
//   - Rename over a file and ReplaceFile drop the replaced inode's link
//     in the rename's own transaction (a crash keeps both or neither, so
//     nothing is held until the directory is durable, as without a
//     journal) and commit before they return.
//   - State: the session's first change sets needs_recovery (and the
//     journal's revoke feature) and writes the superblock straight to the
//     device, flushed, before anything can commit. Close runs a last
//     transaction (orphans freed, the superblock's counts and state),
//     checkpoints, closes the journal (an empty log) and only then clears
//     needs_recovery, durably: the kernel and e2fsck see a clean ext4. A
//     commit that fails aborts the journal (ErrJournalAborted from then
//     on) and leaves needs_recovery set for the next open to replay.
//   - Orphans: the transaction that drops an inode's last link chains it
//     on the orphan list (orphan.go) and the one that frees it takes it
//     off, so a crash while a File keeps an unlinked or replaced inode
//     open leaves it on the list, which the next writable Open (or
//     e2fsck -p, or a kernel mount) releases. The journal-less ordering
//     (fresh metadata blocks, the unlinked inode written ahead, the
//     graves of ReplaceFile) is skipped: a transaction is kept whole or
//     not at all.
//   - Allocation happens in the handle of the change that needs it,
//     never in writeback: WriteAt allocates the blocks it writes and the
//     holes inside the file's size in every page it dirties (the engine
//     writes a dirty page whole and would allocate those, outside any
//     handle, the bitmap in one transaction and the inode pointing at
//     the block in a later one), Truncate writes the page of the old
//     end back before a larger size covers its holes (write.go,
//     pageHoles), and a Truncate to a smaller size that ends inside a
//     mapped block, whose page the engine then dirties to zero the
//     block's tail, allocates the holes before the new end in that page
//     (fillEndPage). Only a WriteAt or a Truncate that ran out of space
//     for such a hole leaves one for writeback to ask for again; an
//     allocation outside node.allocate is counted (strayAllocs) and
//     logged.
//   - Out of space while a transaction frees blocks: blocks a delete, a
//     truncate or a replace frees stay busy until their transaction
//     commits, so a volume nearly full would answer ENOSPC to a write
//     right after them. A WriteAt, OpenWrite or name-space change that
//     fails with ErrNoSpace while the running or committing transaction
//     frees blocks stops its handle, commits (commitForSpace; as ext4's
//     retry of an allocation after a forced commit) and tries again, at
//     most 3 times; a volume truly full (nothing freed) answers
//     ErrNoSpace at once. Not retried: Rename (a new directory block)
//     and writeback. Without a journal there is no such gap: the
//     quarantine gives its blocks up when nothing else is free.
//   - Growing a file zeroes the bytes past its old size in its last
//     block (WriteAt past the end, Truncate to a larger size): a replay
//     that took back an extension whose data was already written (as
//     ordered mode writes it, before the commit) leaves that data on the
//     device past the restored size.
//   - Not done: the superblock's
//     free counts are written at Sync and Close only (e2fsck -fy then
//     fixes them silently, as after a kernel crash).
//
// Reading through io/fs: Volume.FS is an fs.FS (with ReadDirFS, StatFS,
// ReadFileFS, ReadLinkFS) over the volume with Go's path rules; its files
// are io.ReaderAt and io.Seeker, its directories fs.ReadDirFile.
// ReadDirInfo lists a directory with every entry described, leaving out
// and reporting (errors.Join of *fs.PathError, ErrCorrupt) the entries
// whose inodes are damaged, so a listing shows what it can.
//
// Background writeback: on a writable volume every file and directory
// mapping has its node as Owner, an mpage.InodeWriter, so an mpage.Flusher
// on the volume's cache writes its pages and then commits the inode if
// writeback allocation changed it (WriteInode: the volume's lifetime lock
// shared, then the node's wmu, as any writer; an allocation also marks the
// mapping with MarkInodeDirty, so it stays listed for the flusher when
// another writeback wrote its pages); the metadata mapping is written like
// any other dirty mapping. Data, directories and inodes thus
// reach the device without a Sync, and a read-only opener of the image
// sees them once the writes complete. It is not Sync: there is no device
// flush (but for new indirect and extent blocks, which go to the device
// and are flushed before the metadata that may point at them: syncFresh,
// through the metadata mapping's mpage.PreWriter; not on a journaled
// volume, whose new blocks go through the log), no order between data
// and the metadata pointing at it, and the superblock's free counts are
// written only by Sync and Close, so without a journal a crash still
// needs e2fsck. With one the flusher skips pinned (uncommitted) metadata,
// and the 5 s commit bounds what a crash loses. Stop the Flusher before
// closing the volume.
//
// Concurrency: a Volume and its Files are safe for concurrent use. Public
// calls hold the volume's lifetime lock shared, so Close waits for calls in
// progress and later calls fail with ErrClosed. Name-space changes
// (Create, Unlink, Mkdir, Rmdir, Rename) hold the volume's ns lock
// exclusively (lookups, listings and Syncs hold it shared); writes to a
// file hold its node's lock; allocation holds allocMu; see node for the
// lock order. The per-inode cache has its own mutex, never held across
// I/O; a mapper's lock guards its block map (shared by lookups), and
// mappers read metadata only through the metadata mapping, never with a
// block of it locked. The whole order: a journal handle (journaled
// volumes; never held while waiting for another handle or a commit),
// Volume.ns, a node's wmu (parent before child), the mapper's lock,
// allocMu, then one metadata block lock at a time (BlockRef.Lock, the
// page's lock; mpage's Mapping and Cache locks come after it), then the
// journal's own mutex (taken by JoinBlock, ForgetBlock and the allocator's
// busy check under a block lock; nothing holding it takes a page lock).
// A commit takes the handle lock exclusively with nothing else held, then
// one block lock at a time to copy the frozen blocks.
//
// Errors of a block mapper reach the caller of the read or write that
// asked, and only that caller: the engine returns them as an
// *mpage.MapError (wrapped with EIO on a read), so errors.Is sees
// ErrCorrupt, ErrNoSpace and the rest through it.
//
// Example:
//
//	vol, err := ext.Open(ext.Config{Device: dev, Cache: cache, DeviceSize: size, ReadOnly: true})
//	if err != nil { ... }
//	defer vol.Close()
//	f, err := vol.OpenFile("/etc/hostname")
//	if err != nil { ... }
//	defer f.Close()
//	_, err = io.Copy(os.Stdout, io.NewSectionReader(f, 0, f.Size()))
//
// Writing:
//
//	vol, err := ext.Open(ext.Config{Device: dev, Cache: cache, DeviceSize: size})
//	if ro, why := vol.ReadOnly(); ro { ... why ... }
//	f, err := vol.Create("/dir/name", 0o644)
//	_, err = f.WriteAt(data, 0)
//	err = f.Sync() // data and the metadata reaching it are on the device
//	f.Close()
//	err = vol.Rename("/dir/name", "/dir/final") // atomic replace of final
//	err = vol.Close() // syncs, marks the volume clean if it was at open
package ext
