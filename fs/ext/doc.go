// Package ext reads ext2, ext3 and ext4 volumes through the mpage engine.
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
// read first through a throwaway 1 KiB-block mapping. Nothing reads the
// device around the engine. File data goes through one mapping per inode
// with the inode's mapper; opens of an inode share it, and a bounded number
// of closed ones keep their pages for the next open.
//
// Paths are absolute and taken literally: "/a/b" or "/a/b/"; empty, "."
// and ".." components, names over 255 bytes and NUL bytes are refused with
// ErrInvalidPath. Symbolic links inside the volume are followed (absolute
// targets start at the volume's root, ".." in a target stops at it), at
// most 40 per lookup.
//
// Errors wrap the sentinels of errors.go with what and where: the inode,
// the block, the path (as *fs.PathError for path operations). Corrupt
// metadata gives ErrCorrupt, never a panic; the parse functions are fuzzed.
//
// The read side is complete; writing (allocation, create, truncate,
// unlink, mkdir) comes later. Types that a writer will mutate (Superblock
// with its raw bytes, groupTable behind a lock, Inode with its raw bytes)
// already keep what it needs, and every volume is served read-only until
// then (Config.ReadOnly=false is accepted, logged and downgraded, except
// for volumes that must not be written at all: ErrNeedsRecovery,
// ErrReadOnly).
//
// Concurrency: a Volume and its Files are safe for concurrent use. Public
// calls hold the volume's lifetime lock shared, so Close waits for calls in
// progress and later calls fail with ErrClosed. The per-inode cache has its
// own mutex, never held across I/O; mappers hold no locks and read
// metadata only through the metadata mapping, never with a page of it
// locked.
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
package ext
