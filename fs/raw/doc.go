// Package raw is the simplest volume the engine serves: the whole device (or
// image file) as one file, block n of the file at device block n. The
// benchmark harness reads and writes block devices through it, so what it
// measures is the engine and nothing of a file system's layout; anything else
// that wants a device as a byte range (a zram scratch disk, a partition with
// no file system) can use it too.
//
// A Volume takes a Device and a Cache that its caller assembled (ring, frame
// pool, cache sizing and teardown order belong to that caller) and adds one
// mpage.Mapping over them whose BlockMapper is an mpage.LinearMapper spanning
// Config.Size. File.ReadAt and File.WriteAt go through the page cache
// (readahead on the read side, WritePages on writeback); File.Mapping exposes
// the mapping for ReadPages and WritePages directly.
//
// The file never grows: its size is the device's, and a write reaching past
// it is refused before any byte is copied.
package raw
