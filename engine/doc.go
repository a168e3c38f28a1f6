// Package engine assembles the I/O stack under a file system and owns its
// lifetime: the device file (opened with O_DIRECT, held exclusively when
// written), a ring with the file registered, a frame pool whose arenas are
// registered with the ring as fixed buffers, the page cache and the
// mpage.Device. It is the one place that sizes these parts against each
// other and the one place that takes them down, in the reverse order.
//
// It is also the single source of the engine's counters: Snapshot gathers
// the mpage, BioSet, ring, frame pool and cache statistics that the CLI's
// --stats, the daemon's /metrics and tests read.
//
// A file system (fs/ext, fs/raw) is opened by the caller on the Engine's
// Device and Cache, and closed before the Engine:
//
//	e, err := engine.Open(engine.Config{Path: "vol.img", CacheBytes: 64 << 20})
//	if err != nil { ... }
//	defer e.Close()
//	vol, err := ext.Open(ext.Config{Device: e.Device, Cache: e.Cache,
//		DeviceSize: e.Info.Size, SectorSize: e.Info.SectorSize, ReadOnly: true})
//	if err != nil { ... }
//	defer vol.Close()
//
// # Volumes held exclusively
//
// OpenDevice opens a volume for writing only when nobody else writes it: a
// block device with O_EXCL (the kernel refuses it while mounted or claimed),
// an image file under an exclusive flock, refused as well while a loop
// device backed by the image is mounted. Read-only opens take no hold; they
// warn (through Logf) when another process writes the volume or the kernel
// has it mounted read-write, since what they read may change under them.
//
// # Read-only opens of a volume that needs recovery
//
// A read-only Engine's ring is wrapped in a uring/overlayring, transparent
// (a range check per request) until ShowRecovered lays a journal's replay
// (jbd2.Scan, handed over by ext.Open through ext.Config.ShowRecovered)
// over the volume's reads. Everything above the ring (the cache, every
// mapping, pages evicted and read again) then sees the recovered volume;
// the device is never written, and writes through the ring fail EROFS.
//
//	cfg := ext.Config{Device: e.Device, Cache: e.Cache, ReadOnly: true,
//		ShowRecovered: e.ShowRecovered, ...}
//
// # Concurrency
//
// An Engine's parts are safe for concurrent use as their packages say.
// Close must be called once, after everything using the Device and Cache
// has been closed.
package engine
