package mpage

import (
	"fmt"
	"io"
	"syscall"
)

// ReadAt copies file bytes at off into b through the page cache, starting
// readahead on misses. It returns io.EOF when b reaches past i_size, and an
// error wrapping syscall.EIO when a page cannot be read.
func (m *Mapping) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("mpage: %s: %w: read at %d", m.name, ErrRange, off)
	}
	size := m.Size()
	if off >= size {
		return 0, io.EOF
	}
	end := off + int64(len(b))
	short := end > size
	if short {
		end = size
	}
	done := 0
	for pos := off; pos < end; {
		idx := uint64(pos >> PageShift)
		p, err := m.readPage(idx, int((end-pos+PageSize-1)>>PageShift))
		if err != nil {
			return done, err
		}
		po := int(pos & (PageSize - 1))
		n := copy(b[done:int(end-off)], p.Data[po:])
		p.Release()
		done += n
		pos += int64(n)
	}
	if short {
		return done, io.EOF
	}
	return done, nil
}

// readPage returns page idx uptodate and referenced, reading it (and what
// readahead adds) if needed. want is how many pages the reader still needs.
func (m *Mapping) readPage(idx uint64, want int) (*Page, error) {
	var op pageRead
	op.start(m, idx, want)
	for {
		switch op.step(true) {
		case stepDone:
			return op.p, op.err
		case stepWait:
			op.p.WaitUnlocked()
		}
	}
}

// WriteAt copies b into the file at off through the page cache, extending
// i_size, and throttles the writer while the cache is over its dirty limit.
// The data is durable only after WriteAndWait (and a device flush).
func (m *Mapping) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) < off {
		return 0, fmt.Errorf("mpage: %s: %w: write at %d+%d", m.name, ErrRange, off, len(b))
	}
	done := 0
	for done < len(b) {
		pos := off + int64(done)
		idx := uint64(pos >> PageShift)
		po := int(pos & (PageSize - 1))
		n := min(PageSize-po, len(b)-done)
		p, err := m.prepareWrite(idx, po, n)
		if err != nil {
			return done, err
		}
		copy(p.Data[po:po+n], b[done:done+n])
		p.set(Uptodate)
		m.setDirty(p)
		m.extendSize(pos + int64(n))
		p.Unlock()
		p.Release()
		done += n
		if idx%16 == 15 || done == len(b) {
			m.cache.balanceDirty(m)
		}
	}
	return done, nil
}

// prepareWrite returns page idx locked and ready for bytes [po, po+n): an
// existing page is read first unless the write covers it or it lies past
// EOF (then it is zeroed).
func (m *Mapping) prepareWrite(idx uint64, po, n int) (*Page, error) {
	for {
		p, _, err := m.grabPage(idx)
		if err != nil {
			return nil, err
		}
		if p.Has(Uptodate) || (po == 0 && n == PageSize) {
			return p, nil
		}
		if int64(idx)<<PageShift >= m.Size() {
			p.zero(0, PageSize)
			return p, nil
		}
		p.clear(Error)
		m.ReadPage(p) // unlocks when the read completes
		p.lock()
		if p.mapping != m {
			p.Unlock()
			p.Release()
			continue
		}
		if !p.Has(Uptodate) {
			p.Unlock()
			p.Release()
			return nil, fmt.Errorf("mpage: %s: read before write of page %d: %w", m.name, idx, syscall.EIO)
		}
		return p, nil
	}
}

// extendSize raises i_size to at least n.
func (m *Mapping) extendSize(n int64) {
	for {
		cur := m.size.Load()
		if n <= cur || m.size.CompareAndSwap(cur, n) {
			return
		}
	}
}

// WriteAndWait writes every dirty page in [start, end] (bytes, inclusive;
// end < 0 means to the end of the file) with SyncAll, waits until none is
// under writeback, and reports the mapping's write error. Data is then on
// the device but may sit in its volatile cache: Device.Flush makes it
// durable.
func (m *Mapping) WriteAndWait(start, end int64) error {
	if end < 0 {
		end = 1<<62 - 1
	}
	if start < 0 || end < start {
		return fmt.Errorf("mpage: %s: %w: range %d..%d", m.name, ErrRange, start, end)
	}
	wbc := WritebackControl{SyncMode: SyncAll, RangeStart: start, RangeEnd: end}
	werr := m.WritePages(&wbc)
	m.WaitWriteback(start, end)
	if err := m.Err(); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("mpage: %s: writeback: %w", m.name, werr)
	}
	return nil
}

// WaitWriteback waits for every page in [start, end] (bytes, inclusive)
// that is under writeback.
func (m *Mapping) WaitWriteback(start, end int64) {
	index, last := uint64(start>>PageShift), uint64(end>>PageShift)
	var batch [pagevecSize]*Page
	for index <= last {
		n := m.lookupTag(markWriteback, index, last, batch[:])
		if n == 0 {
			return
		}
		for _, p := range batch[:n] {
			p.WaitWriteback()
			index = p.Index + 1
			p.Release()
		}
		if index == 0 {
			return
		}
	}
}
