package mpage

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/uring"
)

type bioKind uint8

const (
	// bioPages carries whole (or EOF-trimmed) pages whose blocks are
	// contiguous: the multipage path.
	bioPages bioKind = iota
	// bioBlock carries one block of one page: the per-block path.
	bioBlock
)

// Bio is one device I/O: a run of page frames read from or written to
// consecutive device blocks, carried by one vectored ring request. Bios come
// from the Device's BioSet and go back to it on completion.
type Bio struct {
	req uring.Request
	// one holds &req for Submit: a variadic argument built on the stack
	// escapes through the interface call, one allocation per Bio.
	one     [1]*uring.Request
	dev     *Device
	mapping *Mapping
	pages   []*Page
	vecs    [][]byte
	got     int // vec count the BioSet granted, handed back to Free
	// slots is how many vecs the Bio may carry: every slot of got's class
	// (Linux's bi_max_vecs), up to the device's MaxBioVecs. A try the
	// halving left at 3 vecs is charged as a 4-vec Bio, so it holds 4.
	slots   int
	dir     Dir
	kind    bioKind
	block   uint8 // bioBlock: which block of pages[0]
	pblock  uint64
	blkbits uint8
}

// allocBio gets a Bio for up to nr pages starting at device block pblock,
// or nil when the BioSet says no.
func (d *Device) allocBio(m *Mapping, dir Dir, kind bioKind, pblock uint64, nr int, flags alloc.Flags) *Bio {
	b, got := d.bios.Alloc(min(nr, d.maxVecs), flags)
	if b == nil {
		return nil
	}
	b.got, b.slots = got, min(cap(b.vecs), d.maxVecs)
	b.mapping, b.dir, b.kind, b.pblock, b.blkbits = m, dir, kind, pblock, m.blkbits
	b.pages, b.vecs = b.pages[:0], b.vecs[:0]
	return b
}

// add appends n bytes of p's frame; false when the Bio is full. The Bio
// holds a reference on p until its completion is done with it: the
// completion touches the page (its wait bucket, its flags) after the unlock
// or end of writeback that lets Close or Truncate free it, so without the
// reference a freed (or reused) page could be written to.
func (b *Bio) add(p *Page, n int) bool {
	if b.full() {
		return false
	}
	p.refs.Add(1)
	b.pages = append(b.pages, p)
	b.vecs = append(b.vecs, p.Data[:n])
	return true
}

// full reports whether the Bio has no vec slot left.
func (b *Bio) full() bool { return len(b.vecs) >= b.slots }

// bytes is the number of bytes the Bio moves.
func (b *Bio) bytes() int {
	n := 0
	for _, v := range b.vecs {
		n += len(v)
	}
	return n
}

// submit hands the Bio to the ring. It returns nil so callers can write
// bio = bio.submit(), as the seeds do.
func (b *Bio) submit() *Bio {
	q := &b.req
	handler := q.Handler
	*q = uring.Request{Handler: handler, File: b.dev.file, Offset: int64(b.pblock) << b.blkbits, Vecs: b.vecs, BufIndex: uring.NoBuffer}
	if b.dir == Write {
		q.Op = uring.OpWritev
	} else {
		q.Op = uring.OpReadv
	}
	if f := b.dev.frames; f != nil {
		q.BufIndex = sameArena(f, b.vecs)
	}
	if st := b.dev.stats; b.kind == bioBlock {
		st.BlockIOs[b.dir].Add(1)
	} else {
		st.bioSubmitted(b.dir, len(b.pages))
	}
	b.one[0] = q
	if err := b.dev.ring.Submit(b.one[:]...); err != nil {
		// The ring refused (closed): the Bio completes here, failed, so
		// its pages are unlocked and their writeback ended all the same.
		q.Res, q.Err = 0, err
		b.Complete(q)
	}
	return nil
}

// A Bio the device did not move whole is an I/O error: callers that map
// errors to statuses by errno (EIO) see it as one.
var (
	errShortReadIO  = fmt.Errorf("%w: %w", ErrShortRead, syscall.EIO)
	errShortWriteIO = fmt.Errorf("%w: %w", uring.ErrShortWrite, syscall.EIO)
)

// sameArena returns the registered-buffer index holding every vec, or
// NoBuffer.
func sameArena(f *alloc.FramePool, vecs [][]byte) int16 {
	idx := -1
	for _, v := range vecs {
		i := f.BufIndex(v)
		if i < 0 || (idx >= 0 && i != idx) {
			return uring.NoBuffer
		}
		idx = i
	}
	return int16(idx)
}

// Complete runs on the ring's completion side when the Bio's I/O ends.
//
// A multipage Bio ends its pages last to first, as the seeds do: when the
// lock (read) or writeback (write) of a page of the Bio is released, every
// later page of the Bio is already done. Readers and waiters walk forward
// (ReadAt page by page, readahead's consumer, WaitWriteback for fsync), so
// one woken on the first page finds the rest of the Bio ready and sleeps
// at most once per Bio; in page order it would race the completion loop
// for each next page and, whenever the completion side is preempted, sleep
// and be woken again, once per page. The cost is that the first page is
// released after the whole loop, a few nanoseconds per page. The
// readahead marker does not care: a reader triggers the next window when
// it finds the marked page, locked or not.
func (b *Bio) Complete(q *uring.Request) {
	err := q.Err
	if err == nil && q.Res < b.bytes() {
		err = errShortReadIO
		if b.dir == Write {
			err = errShortWriteIO
		}
	}
	st := b.dev.stats
	if err != nil {
		st.Errors[b.dir].Add(1)
	}
	switch {
	case b.kind == bioBlock:
		b.pages[0].blockDone(b.dir, int(b.block), err)
		b.pages[0].Release()
	case b.dir == Read:
		st.BioBytes[Read].Add(uint64(q.Res))
		for _, p := range slices.Backward(b.pages) {
			if err == nil {
				p.set(Uptodate)
				p.clear(Error)
			} else {
				p.clear(Uptodate)
				p.set(Error)
			}
			p.Unlock()
			if h := b.dev.pageEnded; h != nil {
				h(p, Read)
			}
			p.Release()
		}
	default:
		st.BioBytes[Write].Add(uint64(q.Res))
		for _, p := range slices.Backward(b.pages) {
			if err != nil {
				p.redirtyBlocks()
			}
			p.writeDone(err)
			if h := b.dev.pageEnded; h != nil {
				h(p, Write)
			}
			p.Release()
		}
	}
	b.free()
}

func (b *Bio) free() {
	for i := range b.pages {
		b.pages[i] = nil
	}
	clear(b.vecs)
	b.pages, b.vecs, b.mapping = b.pages[:0], b.vecs[:0], nil
	b.dev.bios.Free(b, b.got)
}

// writeDone finishes a page's write: on failure the page keeps its data
// dirty, records the error on the mapping and is retried by the next
// writeback (Linux drops it; we do not lose acknowledged data). Writeback
// ends either way, waking fsync.
func (p *Page) writeDone(err error) {
	m := p.mapping
	if err != nil {
		if m != nil {
			m.writeFailed(p, err)
		}
	} else {
		p.clear(Error)
		if p.testAndClear(writeErr) && m != nil {
			m.writeRecovered()
		}
	}
	p.endWriteback()
}

// errnoIndex classifies a write error for stats: ENOSPC and quota errors
// count as ENOSPC, everything else as EIO.
func errnoIndex(err error) int {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return ErrnoENOSPC
	}
	return ErrnoEIO
}
