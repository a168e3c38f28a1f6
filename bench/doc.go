// Package bench is the harness behind `mpaged bench`: it holds the engine
// against what a user would run instead (fio today; nginx once the daemon
// exists), on the same target, in the same run, and reports by how much it
// wins or loses.
//
// The pieces:
//
//   - a Target: a zram device made for the run through
//     /sys/class/zram-control (removed afterwards; existing zram devices are
//     never touched), a loop device with direct I/O over an image file in a
//     temporary directory (detached and deleted afterwards), or a path the
//     user names (writes to it need Config.DestroyData). Targets the harness
//     made are filled with incompressible data first, so zram stores and
//     returns real pages instead of its same-filled shortcut;
//   - Workloads, each a Workload (its config) and Workload.Run (its run
//     function over a File): seqread, randread (4 KiB), seqwrite, randwrite
//     (4 KiB) and mix (70% reads, random 4 KiB);
//   - Runners (Name, Applies, Setup, Run, Teardown): the engine on a raw
//     volume (fs/raw) per ring backend, the engine with multipage Bios off,
//     fio with io_uring and libaio. A run of a workload by a runner gives a
//     Result;
//   - the schedule: for each workload and repetition every runner that
//     applies runs once, and the order alternates (A B C, C B A, B C A, ...)
//     so machine drift and warm caches favour none;
//   - the Report: a table, JSON, Go benchmark lines for benchstat, and an
//     SVG chart of throughput per runner with the spread over repetitions.
//     Every ratio is to fio with io_uring in the same repetition.
//
// Like for like: both sides use O_DIRECT on the same device, over the same
// region, with the same block size and depth, and every engine run opens
// its own engine (package engine) and so starts with an empty page cache.
// Random workloads visit a permutation of the region's blocks, each once
// per pass, as fio's random map does, so no engine read is a cache hit.
// Writes end with a sync on both sides (fio's end_fsync) inside the timed
// interval. TestLikeForLike checks that fio and the engine read the same
// bytes from the target.
//
// Depth: a random workload with reads at depth D runs one goroutine that
// keeps D page reads in flight through an mpage.Reader (the engine's
// asynchronous reads), copying each page out as ReadAt would; the writes of
// a mix go through WriteAt in between. engine-native-readat runs the same
// with D goroutines each calling ReadAt, the way phase 1 did. randwrite
// runs D goroutines calling WriteAt. Sequential workloads run one reader
// or writer and leave the depth to readahead and writeback.
package bench
