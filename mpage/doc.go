// Package mpage is the multipage I/O engine: Linux's fs/mpage.c (both seed
// versions) in Go, over a uring.Ring and an alloc.BioSet.
//
// It owns pages (Page: a frame plus Locked, Uptodate, Error, Dirty,
// Writeback, MappedToDisk and Readahead flags, and per-block state once a
// page takes the per-block path), address spaces (Mapping: one file's pages
// in a radix tree by index, whose dirty and writeback tags are marks in the
// tree, as the kernel's page cache tree keeps them; i_size, block size,
// write error state, writeback index, readahead state), the page cache that
// bounds them (Cache: a byte limit, CLOCK eviction of clean unlocked pages
// in batches whose victims are reused in place for the pages being added,
// dirty throttling), and Bios (runs of pages whose blocks are contiguous on
// the device, one vectored ring request each). ReadPages creates a window's
// pages in batches: each lock is taken once per batch, not per page, and
// the read and write paths allocate nothing per page in steady state.
//
// The read path (ReadPages, ReadPage; ReadAt on top) asks the file system's
// BlockMapper for device blocks, reusing a multi-block answer across pages,
// and builds Bios: a page joins the current Bio only when all its blocks are
// mapped and contiguous with the Bio's last block, or its only holes trail
// it at EOF. Fully-hole pages are zeroed without I/O. Anything else
// ("confused": per-block state, data after a hole, discontiguous blocks, a
// mapper that filled the block itself, no Bio to be had) submits what is
// pending and reads the page block by block. Boundary from the mapper
// pushes the Bio before the mapper's next call needs metadata I/O, so data
// blocks 0..11 of an ext2 file reach the device before the indirect block.
//
// Readahead (one stream per mapping) starts with a small window on a
// sequential miss and doubles it at each marker page up to one full Bio
// (MaxReadahead pages); then each marker keeps up to four full windows in
// flight past the reader, fewer when the ring or the cache is small, so
// the device always has the next Bio queued. Full windows line up with
// where the file's layout cuts Bios (indirect blocks), one SQE per MiB.
//
// Asynchronous reads (ReadPageAsync, and Reader, a completion queue on
// top) let one goroutine keep many page reads in flight: a read takes
// ReadAt's path through the cache and readahead (one state machine,
// pageRead, serves both), but where ReadAt sleeps on a locked page it
// queues a waiter in the page wait table, whose wake runs on the unlocker's
// side (the ring's completion, usually) and must not block, like the
// kernel's wait queue entries with a wake function that async buffered
// reads use. A read that needs to sleep again (the retry of a failed read)
// is handed back to its submitter.
//
// The write path (WritePages with a WritebackControl, WritePage; WriteAt and
// WriteAndWait on top) maps with allocation, honours New (stale metadata
// for the block is forgotten) and Boundary (the metadata block after it is
// written next), zeroes what lies past EOF in the page straddling it, adds
// a page to its Bio before its buffers are cleaned, and falls back to
// per-block writes for confused pages. Both paths allocate Bios in MemAlloc
// context: the BioSet halves the vec count until it fits. When nothing fits,
// writeback takes the per-block path (whose 1-vec Bios may come from the
// reserve); a read takes a 1-vec Bio from the reserve, or waits for a Bio in
// flight to be freed, and keeps its pages whole.
//
// Background writeback (Flusher, flusher.go) is the kernel's flusher: the
// Cache keeps the mappings that have dirty pages in the order they became
// dirty, stamped with that time, and a Flusher's passes write those dirty
// for ExpireAge, then, while the cache is past its background threshold
// (below the dirty limit where writers throttle), the rest round robin,
// each mapping at most PagesPerPass pages a pass, nonblocking, preceded
// by its owner's PreWriter (a file system ordering blocks that must land
// first) and followed by its owner's InodeWriter. It is not fsync: it
// neither waits nor flushes the device, and keeps no order of its own.
//
// Completions run on the ring's completion side and never block beyond a
// short lock: reads set Uptodate or Error and unlock each page, writes end
// writeback, the last page of a Bio first (a forward reader or fsync woken
// on a page finds the rest of its Bio done). Unlike Linux, a page whose
// write failed stays dirty and is retried by the next writeback, and the
// mapping's error is reported by every WriteAndWait until the data has
// reached the device.
// Sleepers on a page (lock, writeback) wait on a hashed table of condition
// variables, not a goroutine or channel per page; asynchronous waiters on
// a list in the same table's bucket.
//
// Metadata blocks (metablock.go) are the engine's buffer helpers for a file
// system's metadata mapping (the whole device, block n at device block n):
// ReadBlock (bread), GetBlock (getblk), a BlockRef's Lock, Data,
// MarkDirty (only that block of its page becomes dirty) and Release,
// ZeroBlock, ForgetBlocks (a block leaving metadata for file data:
// pending writes dropped, bytes zeroed), WriteBlockIfDirty
// (write_boundary_block) and SyncBlock (write now and wait). File systems
// use these, never the page protocol: page lookup, the page lock and the
// uptodate checks are internal. A file mapping whose MappingConfig.Meta is
// the metadata mapping has the engine forget the blocks its write path
// allocates there and write the block after a boundary from it.
//
// The journal hook: a BlockJournal installed on the metadata mapping
// (SetJournal) is handed every block MarkDirty marks (JoinBlock, under the
// block's lock) and every block ForgetBlocks forgets. It pins the blocks
// of its transaction (BlockRef.Pin: writeback of any kind leaves a pinned
// page dirty and unwritten), writes their bytes to its log
// (BlockRef.WriteTo, under the block's lock) and unpins them once the
// transaction has committed, when writeback writes them home. Without a
// journal the hook costs one nil load per MarkDirty and one counter load
// per page written back.
//
// Mapper errors travel with the page that asked: a read failed by its
// mapper keeps the *MapError on the page and that page's readers report
// it wrapped with EIO; a write's is returned by WritePages and kept in
// Err. No error of one page is reported for another.
//
// Concurrency: Mapping and Cache methods are safe for concurrent use. Page
// Data belongs to the holder of the page lock. Lock order: the file
// system's own locks, then a file page's lock (held while the engine calls
// the mapper and the metadata mapping's ForgetBlocks), then one metadata
// block (page) lock at a time, then a Mapping's mu, then the Cache's locks
// (mu, dmu); a BlockJournal's JoinBlock runs under a block lock and must
// not take another; mu is never held while sleeping on a page. See
// Mapping.
package mpage
