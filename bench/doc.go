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
// Depth, phase 1: the engine has no call that keeps many page reads in
// flight from one goroutine, so a random workload at depth D runs D
// goroutines each calling ReadAt (or WriteAt). Sequential workloads run one
// reader and leave the depth to readahead. An asynchronous read API replaces
// the goroutines in phase 2.
package bench
