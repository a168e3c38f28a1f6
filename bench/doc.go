// Package bench is the harness behind `mpaged bench`: it holds the engine
// against what a user would run instead (fio for block I/O, nginx for the
// daemon), on the same target, in the same run, and reports by how much it
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
//     (4 KiB) and mix (70% reads, random 4 KiB); and the HTTP workloads
//     (Workload.HTTP): http-get-cold and http-get-warm (one GET of a whole
//     file, as large as the region), http-range (4 KiB ranged GETs at
//     random offsets at concurrency 64, keep-alive);
//   - Runners (Name, Applies, Setup, Run, Teardown): the engine on a raw
//     volume (fs/raw) per ring backend, the engine with multipage Bios off,
//     fio with io_uring and libaio; for the HTTP workloads http-mpaged (the
//     mpaged binary, `mpaged serve --read-only`, a fresh process per run),
//     http-nginx (Debian's nginx with the bench's own config, serving the
//     same file from a read-only kernel mount of the target) and cli-cat
//     (`mpaged cat` of the file, cold GET only: issue 7's daemon against
//     the CLI). A run of a workload by a runner gives a Result;
//   - the schedule: for each workload and repetition every runner that
//     applies runs once, and the order alternates (A B C, C B A, B C A, ...)
//     so machine drift and warm caches favour none;
//   - the Report: a table, JSON, Go benchmark lines for benchstat, and an
//     SVG chart of throughput per runner with the spread over repetitions.
//     Every ratio is to fio with io_uring in the same repetition, the HTTP
//     rows' to nginx.
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
// # HTTP rows
//
// The first HTTP run puts an ext4 file system without a journal on the
// target (mke2fs; the target is made larger than the region by room for
// it) and writes the bench file through the engine and fs/ext; e2fsck -fn
// must find it clean. The file's content is ChaCha8 output keyed by block
// number: incompressible for zram, and any range can be checked without a
// copy of the file. Block workloads run first, as they write the raw
// device.
//
// Cold and warm: a cold daemon is a fresh process with --cache smaller
// than the file (the bench's --cache), so every byte comes from the
// device; nginx's file is dropped from the kernel's page cache with
// posix_fadvise(DONTNEED) on the file in the mount (not drop_caches). A
// warm run GETs the whole file first, untimed; the daemon then has a cache
// larger than the file. The device's own read counter (sysfs) over the
// timed part is in every HTTP result, so a cold run that was not cold, or
// a warm one that read, shows. Ranged runs start cold and use the same
// cache rule: the daemon's cache is the bench's --cache, nginx's the
// kernel's page cache, which has no size to match; with a 1 GiB file most
// ranges miss in both.
//
// The load generator is in Go, not wrk: the same HDR histogram, Result
// and report as every other row; keep-alive under control (each worker
// owns an http.Transport and its one connection, opened before the clock
// starts; the connections are counted); no compression; and exact checks
// of every answer — a whole GET's length and CRC-32C against the file's,
// each range's status, Content-Range and bytes against the file's bytes
// at its offset — which wrk's Lua would do slowly or not at all. Both
// servers get the same client, on the same CPUs.
//
// Server CPU is the server's processes only, from /proc/PID/stat (user
// and system time of every thread, exited ones and io_uring's io-wq
// workers included, in 10 ms ticks) before and after the timed part: the
// daemon's process, or nginx's master and its workers (its children; a
// changed set fails the run). The load generator's CPU is not counted, nor
// is softirq work the kernel charges to whichever task it interrupted.
// cli-cat's is the process's rusage (wait4) over its whole life.
//
// Depth: a random workload with reads at depth D runs one goroutine that
// keeps D page reads in flight through an mpage.Reader (the engine's
// asynchronous reads), copying each page out as ReadAt would; the writes of
// a mix go through WriteAt in between. engine-native-readat runs the same
// with D goroutines each calling ReadAt, the way phase 1 did. randwrite
// runs D goroutines calling WriteAt. Sequential workloads run one reader
// or writer and leave the depth to readahead and writeback.
package bench
