// Package crashring wraps a uring.Ring as a crash-clone device: the
// requests go to the real backing file as usual, and the ring remembers
// enough to produce, at any moment, an image a power cut at that moment
// could leave on the device. The drills cut a running daemon's volume many
// times this way and check that e2fsck and fs/ext find every acknowledged
// byte in each image (in the spirit of Pebble's crash-clone tests).
//
// # The model
//
// Every regular file or block device registered with the ring is tracked.
// At RegisterFile the ring reads the file once into a durable shadow: what
// is on the device when tracking starts counts as durable. Each write
// (OpWrite, OpWritev at an explicit offset) is copied at Submit into the
// file's pending list. An OpFsync (fsync or fdatasync: the device flush
// mpage.Device.Flush issues) that completes without error makes durable
// exactly the writes that had completed without error before it was
// submitted: they are applied to the shadow in the order they completed
// and leave the pending list. Writes still in flight when the flush was
// submitted, and writes that completed after, stay pending; writes that
// failed are dropped at the next successful flush (the model takes a
// failed write as not having reached the medium once the device says it is
// flushed).
//
// Cut builds the image a power cut could leave: the shadow, plus each
// pending write (completed, in flight or failed) independently absent,
// whole, or torn, applied in a random order. A torn write has a random
// subset of its sectors (Config.SectorSize, the device's logical block
// size: the unit a device writes atomically) and not the others. The
// choice comes from the caller's *rand.Rand, so a seed replays a cut.
//
// What a real device may do that this model does not:
//   - lose or corrupt data it had acknowledged as flushed (a lying cache,
//     media errors after the fact): here a successful flush is final;
//   - tear a write inside a sector (a device without power-loss atomic
//     sector writes) or write garbage to a sector being written;
//   - make a write durable before its completion in a way that changes a
//     later flush's outcome: the model's orders are any order of the
//     pending writes, which covers it, but overlapping pending writes are
//     resolved whole-write by whole-write (or sector by sector when torn),
//     never by a byte-level mix;
//   - drop a flush's effect on writes that completed while the flush was
//     in flight but before the device ran it (such writes stay pending
//     here, which only makes the model less generous than a device);
//   - reorder the ring's own file-position writes (OffsetCurrent): those
//     are not tracked, and no block device user issues them.
//
// The shadow costs one copy of the file in memory, and each pending write
// one copy of its bytes until the next flush; a cut costs one more copy of
// the file. That is cheap for the 32–256 MiB images the drills use; the
// ring is a test device, and Submit may allocate.
package crashring
