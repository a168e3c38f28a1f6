package mpage

import (
	"fmt"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/uring"
)

// DeviceConfig describes the block device (or image file) under a volume.
type DeviceConfig struct {
	Ring uring.Ring
	// File is the device, registered with Ring.
	File uring.File
	// Bios configures the device's BioSet (budget, reserve, pressure).
	Bios alloc.BioSetConfig
	// MaxBioVecs caps pages per Bio (the seeds' bio_get_nr_vecs); default
	// and maximum 256.
	MaxBioVecs int
	// CongestionDepth is the ring depth at which nonblocking writeback
	// counts the device as congested; default 3/4 of the ring's entries.
	CongestionDepth int
	// Stats receives the counters; nil makes a new one.
	Stats *Stats
	// Frames, if set, is where page frames come from; Bios whose frames
	// all sit in one registered arena use fixed-buffer I/O.
	Frames *alloc.FramePool
}

// Device is where Bios go: a ring, the device file on it, and the BioSet
// that bounds memory for Bios in flight. Every Mapping of a volume shares
// its Device. Safe for concurrent use.
type Device struct {
	ring       uring.Ring
	file       uring.File
	bios       *alloc.BioSet[Bio]
	maxVecs    int
	congestion int
	// ringEntries is the ring's submission queue size.
	ringEntries int
	stats       *Stats
	frames      *alloc.FramePool
	// pageEnded, tests only, sees each page a multipage Bio's completion
	// ends, in order (export_test.go).
	pageEnded func(p *Page, dir Dir)
}

// NewDevice builds a Device.
func NewDevice(cfg DeviceConfig) (*Device, error) {
	if cfg.Ring == nil || !cfg.File.Valid() {
		return nil, fmt.Errorf("mpage: device needs a ring and a registered file")
	}
	d := &Device{ring: cfg.Ring, file: cfg.File, maxVecs: cfg.MaxBioVecs, congestion: cfg.CongestionDepth, stats: cfg.Stats, frames: cfg.Frames}
	if d.maxVecs <= 0 || d.maxVecs > alloc.MaxVecs {
		d.maxVecs = alloc.MaxVecs
	}
	d.ringEntries = cfg.Ring.Features().Entries
	if d.congestion <= 0 {
		d.congestion = max(d.ringEntries*3/4, 1)
	}
	if d.stats == nil {
		d.stats = new(Stats)
	}
	d.bios = alloc.NewBioSet(cfg.Bios, func(class int) *Bio {
		b := &Bio{dev: d, pages: make([]*Page, 0, class), vecs: make([][]byte, 0, class)}
		b.req.Handler = b
		return b
	})
	return d, nil
}

// Stats are the counters of everything on the device.
func (d *Device) Stats() *Stats { return d.stats }

// BioStats are the device's BioSet counters.
func (d *Device) BioStats() alloc.BioStats { return d.bios.Stats() }

// BioSet is the device's Bio allocator (tests tighten its budget).
func (d *Device) BioSet() *alloc.BioSet[Bio] { return d.bios }

// Ring is the device's ring.
func (d *Device) Ring() uring.Ring { return d.ring }

// Congested reports whether the ring has at least CongestionDepth requests
// in flight: nonblocking writeback stops there.
func (d *Device) Congested() bool { return d.ring.InFlight() >= d.congestion }

// MaxBioVecs is the most pages one Bio carries.
func (d *Device) MaxBioVecs() int { return d.maxVecs }

// Flush makes everything the device has acknowledged durable (fsync on the
// device file, a cache flush on a block device).
func (d *Device) Flush() error {
	done := make(chan error, 1)
	q := &uring.Request{Op: uring.OpFsync, File: d.file, BufIndex: uring.NoBuffer,
		Handler: uring.HandlerFunc(func(r *uring.Request) { done <- r.Err })}
	if err := d.ring.Submit(q); err != nil {
		return fmt.Errorf("mpage: flush: %w", err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("mpage: flush: %w", err)
	}
	return nil
}
