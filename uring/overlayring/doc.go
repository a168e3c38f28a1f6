// Package overlayring wraps a uring.Ring so that reads of one file see
// some of its blocks with other contents: an overlay, kept in memory, laid
// over what the device returns. It serves read-only opens of a journaled
// volume whose journal needs recovery: the blocks replay would write
// (jbd2.Scan) are the overlay, and everything above the ring (the page
// cache, every mapping of the file system, pages evicted and read again)
// sees the recovered volume while the device is never written.
//
// A read of the overlaid file goes to the inner ring as it came; when it
// completes without error, the overlay's blocks that intersect the bytes
// it transferred are copied into its buffers (Buf or Vecs, registered
// memory or not) before the caller's handler runs. A read that touches no
// overlaid block costs one binary search of the overlay's sorted block
// numbers at Submit and nothing at completion: its handler is not
// replaced, and nothing is allocated. Reads at OffsetCurrent are passed
// through untouched (the ring cannot know their offset; the engine never
// issues them).
//
// Writes of the overlaid file are refused at Submit with an error
// wrapping syscall.EROFS: the overlay stands for a state the device does
// not hold, and a write through it would mix the two. Other files, and
// every op of a ring with no overlay shown, pass through unchanged, so
// the ring is transparent until Show is called (the engine wraps every
// read-only ring in one; uring/ringtest runs over it).
package overlayring
