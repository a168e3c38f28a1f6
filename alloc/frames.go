package alloc

import (
	"fmt"
	"log"
	"math/bits"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// PageSize is the size of one page frame, and the alignment of every frame.
const PageSize = 4096

const (
	defaultArenaBytes = 64 << 20
	defaultMaxBytes   = 1 << 30
)

// PoolConfig configures a FramePool. The zero value is usable.
type PoolConfig struct {
	// ArenaBytes is the size of one mmap'd arena, a positive multiple of
	// PageSize. Zero means 64 MiB, or MaxBytes rounded down to a page if
	// that is smaller.
	ArenaBytes int
	// MaxBytes caps the bytes mapped over all arenas. Zero means 1 GiB. An
	// arena is mapped only if it fits entirely under the cap.
	MaxBytes int64
	// OnArena, if set, is called once per arena right after it is mapped and
	// before any of its frames is handed out, with the arena's index (0, 1,
	// ... in mapping order; the index BufIndex reports) and its whole memory.
	// The intended use is registering the arena with the ring as fixed
	// buffer #index. It runs without the pool's lock held but serialised
	// with other growth, so it may call Stats, BufIndex and Contains; it
	// must not call Get or Close, which would wait on that growth. An error is logged through Logf and otherwise
	// ignored: frames from an unregistered arena still work for plain I/O.
	OnArena func(index int, mem []byte) error
	// Logf receives the pool's log lines. Nil means log.Printf.
	Logf func(format string, args ...any)
}

// PoolStats is a snapshot of a FramePool.
type PoolStats struct {
	Arenas int64 // arenas mapped
	Frames int64 // frames in all arenas
	InUse  int64 // frames handed out by Get and not yet Put
}

// arena is one mmap'd region. Its fields are fixed once it is published,
// except inUse, which is guarded by FramePool.mu.
type arena struct {
	mem   []byte   // the whole mapping; what Munmap needs back
	base  uintptr  // address of mem[0], page-aligned (mmap guarantees it)
	end   uintptr  // base + len(mem)
	index int      // mapping order; the fixed-buffer index
	inUse []uint64 // bit f set <=> frame f is handed out
}

// FramePool hands out page frames from anonymous mmap'd arenas. The memory
// lives outside the Go heap, so it is never moved or freed by the collector,
// is page-aligned (valid for O_DIRECT), and can be registered with io_uring.
//
// Frames are recycled, so their content is whatever the last user left:
// callers must not assume a frame is zeroed. (Frames from a freshly mapped
// arena happen to be zero, but nothing says which frame Get returns.)
//
// All methods are safe for concurrent use. Get and Put are O(1) and do not
// allocate once the pool has grown to its working size.
type FramePool struct {
	arenaBytes     int
	framesPerArena int
	maxBytes       int64
	onArena        func(int, []byte) error
	logf           func(string, ...any)

	// growMu serialises mapping arenas (and Close against it), so OnArena
	// runs outside mu and two Gets that find the pool empty map one arena,
	// not two. Lock order: growMu, then mu.
	growMu sync.Mutex

	mu     sync.Mutex
	arenas []*arena // by index
	// free is a stack of free frame ids (arena index*framesPerArena +
	// frame). Invariant: an id is on the stack <=> its inUse bit is clear.
	free   []uint32
	mapped int64 // bytes mapped, = len(arenas)*arenaBytes
	inUse  int64
	closed bool

	// byAddr is an immutable snapshot of the arenas sorted by address,
	// replaced (never modified) under mu when an arena is added, so lookups
	// by address (Put, BufIndex, Contains) need no lock to find the arena.
	byAddr atomic.Pointer[[]*arena]
}

// NewFramePool checks cfg and returns an empty pool; the first arena is
// mapped by the first Get.
func NewFramePool(cfg PoolConfig) (*FramePool, error) {
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = defaultMaxBytes
	}
	if maxBytes < 0 {
		return nil, fmt.Errorf("%w: MaxBytes %d is negative", ErrInvalidConfig, maxBytes)
	}
	arenaBytes := cfg.ArenaBytes
	if arenaBytes == 0 {
		arenaBytes = defaultArenaBytes
		if maxBytes < int64(arenaBytes) {
			arenaBytes = int(maxBytes &^ (PageSize - 1))
		}
	}
	if arenaBytes <= 0 || arenaBytes%PageSize != 0 {
		return nil, fmt.Errorf("%w: ArenaBytes %d is not a positive multiple of PageSize (%d)",
			ErrInvalidConfig, arenaBytes, PageSize)
	}
	if int64(arenaBytes) > maxBytes {
		return nil, fmt.Errorf("%w: ArenaBytes %d exceeds MaxBytes %d, no arena could be mapped",
			ErrInvalidConfig, arenaBytes, maxBytes)
	}
	// Frame ids are uint32: cap the pool at 2^32 frames (16 TiB).
	if maxBytes/PageSize > 1<<32 {
		return nil, fmt.Errorf("%w: MaxBytes %d exceeds %d frames", ErrInvalidConfig, maxBytes, uint64(1)<<32)
	}
	logf := cfg.Logf
	if logf == nil {
		logf = log.Printf
	}
	p := &FramePool{
		arenaBytes:     arenaBytes,
		framesPerArena: arenaBytes / PageSize,
		maxBytes:       maxBytes,
		onArena:        cfg.OnArena,
		logf:           logf,
	}
	empty := []*arena{}
	p.byAddr.Store(&empty)
	return p, nil
}

// Get returns a free frame: PageSize bytes (capacity PageSize too, so an
// append cannot spill into the next frame), page-aligned, content
// unspecified. When every mapped frame is out it maps a new arena; past
// MaxBytes it returns an error wrapping ErrNoFrames.
func (p *FramePool) Get() ([]byte, error) {
	p.mu.Lock()
	for len(p.free) == 0 {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		p.mu.Unlock()
		if err := p.grow(); err != nil {
			return nil, err
		}
		p.mu.Lock()
	}
	n := len(p.free) - 1
	id := p.free[n]
	p.free = p.free[:n]
	a := p.arenas[int(id)/p.framesPerArena]
	f := int(id) % p.framesPerArena
	a.inUse[f/64] |= 1 << (f % 64)
	p.inUse++
	p.mu.Unlock()
	off := f * PageSize
	return a.mem[off : off+PageSize : off+PageSize], nil
}

// grow maps one arena unless another goroutine already made frames free.
func (p *FramePool) grow() error {
	p.growMu.Lock()
	defer p.growMu.Unlock()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if len(p.free) > 0 { // someone grew (or Put) while we waited
		p.mu.Unlock()
		return nil
	}
	// Only grow changes arenas and mapped, and growMu is held: these stay
	// valid after mu is released.
	index, mapped, inUse := len(p.arenas), p.mapped, p.inUse
	p.mu.Unlock()

	if mapped+int64(p.arenaBytes) > p.maxBytes {
		return fmt.Errorf("%w: all %d frames in use and another %d-byte arena would pass MaxBytes (%d mapped of %d)",
			ErrNoFrames, inUse, p.arenaBytes, mapped, p.maxBytes)
	}
	mem, err := syscall.Mmap(-1, 0, p.arenaBytes,
		syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("%w: mmap arena %d (%d bytes): %w", ErrNoFrames, index, p.arenaBytes, err)
	}
	a := &arena{
		mem:   mem,
		base:  uintptr(unsafe.Pointer(unsafe.SliceData(mem))),
		index: index,
		inUse: make([]uint64, (p.framesPerArena+63)/64),
	}
	a.end = a.base + uintptr(len(mem))
	if p.onArena != nil {
		if err := p.onArena(index, mem); err != nil {
			p.logf("alloc: arena %d (%d bytes): OnArena failed, frames stay usable but unregistered: %v",
				index, len(mem), err)
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.arenas = append(p.arenas, a)
	p.mapped += int64(p.arenaBytes)
	// Push in reverse so Get hands the arena out from its start.
	first := uint32(index * p.framesPerArena)
	for f := p.framesPerArena - 1; f >= 0; f-- {
		p.free = append(p.free, first+uint32(f))
	}
	old := *p.byAddr.Load()
	sorted := make([]*arena, 0, len(old)+1)
	i := 0
	for ; i < len(old) && old[i].base < a.base; i++ {
	}
	sorted = append(append(append(sorted, old[:i]...), a), old[i:]...)
	p.byAddr.Store(&sorted)
	return nil
}

// find returns the arena containing address addr, or nil. Lock-free.
func (p *FramePool) find(addr uintptr) *arena {
	as := *p.byAddr.Load()
	lo, hi := 0, len(as)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if as[m].end <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(as) && as[lo].base <= addr {
		return as[lo]
	}
	return nil
}

// Put returns a frame obtained from Get. b may be resliced (b[:n]) but must
// start at the frame's first byte. Put panics if b is not a frame of this
// pool or the frame is not out (a double free): both are memory-safety bugs
// in the caller, which must not go on writing into a frame someone else may
// now own.
func (p *FramePool) Put(b []byte) {
	if cap(b) == 0 {
		panic("alloc: Put of an empty slice, not a frame")
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	a := p.find(addr)
	if a == nil {
		panic(fmt.Sprintf("alloc: Put of foreign memory %#x, not a frame of this pool", addr))
	}
	off := addr - a.base
	if off%PageSize != 0 {
		panic(fmt.Sprintf("alloc: Put of %#x, inside arena %d but not at a frame start", addr, a.index))
	}
	f := int(off / PageSize)
	word, bit := f/64, uint64(1)<<(f%64)
	p.mu.Lock()
	if a.inUse[word]&bit == 0 {
		p.mu.Unlock()
		panic(fmt.Sprintf("alloc: double free of frame %d of arena %d (%#x)", f, a.index, addr))
	}
	a.inUse[word] &^= bit
	p.free = append(p.free, uint32(a.index*p.framesPerArena+f))
	p.inUse--
	p.mu.Unlock()
}

// BufIndex returns the index of the arena holding all of b, or -1 if b is
// not (entirely) inside one arena. With arenas registered as fixed buffers
// in OnArena, this is the buffer index for a *_FIXED op on b. Lock-free.
func (p *FramePool) BufIndex(b []byte) int {
	if cap(b) == 0 {
		return -1
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	a := p.find(addr)
	if a == nil || uintptr(len(b)) > a.end-addr {
		return -1
	}
	return a.index
}

// Contains reports whether b lies entirely inside one of the pool's arenas.
func (p *FramePool) Contains(b []byte) bool { return p.BufIndex(b) >= 0 }

// Stats returns a snapshot of the pool's counters.
func (p *FramePool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{
		Arenas: int64(len(p.arenas)),
		Frames: int64(len(p.arenas) * p.framesPerArena),
		InUse:  p.inUse,
	}
}

// ArenaBytes returns the size of each arena.
func (p *FramePool) ArenaBytes() int { return p.arenaBytes }

// Close unmaps every arena. While frames are out it returns an error
// wrapping ErrFramesInUse and changes nothing, so those frames stay valid
// (unmapping memory the kernel may still DMA into would be far worse than a
// leak). After a successful Close, Get returns ErrClosed; Close again is a
// no-op. A ring that registered the arenas must unregister them first.
func (p *FramePool) Close() error {
	p.growMu.Lock()
	defer p.growMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if p.inUse > 0 {
		return fmt.Errorf("%w: %d frames out of %d", ErrFramesInUse, p.inUse, len(p.arenas)*p.framesPerArena)
	}
	p.closed = true
	empty := []*arena{}
	p.byAddr.Store(&empty)
	var first error
	for _, a := range p.arenas {
		if err := syscall.Munmap(a.mem); err != nil && first == nil {
			first = fmt.Errorf("alloc: munmap arena %d: %w", a.index, err)
		}
	}
	p.arenas, p.free = nil, nil
	return first
}

// popcount of the in-use bitmap; used by tests to check the invariant
// between the bitmap, the free stack and the inUse counter.
func (a *arena) countInUse() int {
	n := 0
	for _, w := range a.inUse {
		n += bits.OnesCount64(w)
	}
	return n
}
