package mpage_test

import (
	"bytes"
	"errors"
	"slices"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// metaEnv is an Env whose file is the whole disk in 1 KiB blocks, as a
// volume's metadata mapping: four device blocks per page.
func metaEnv(t *testing.T) *mpagetest.Env {
	return mpagetest.NewEnvWith(t, mpagetest.EnvConfig{
		BlockSize: 1024, DiskBytes: 1 << 20, Size: 1 << 20,
		Mapper: mpage.LinearMapper{Blocks: 1024},
	})
}

// grabUptodate returns page idx locked and uptodate (read from the disk).
func grabUptodate(t *testing.T, m *mpage.Mapping, idx uint64) *mpage.Page {
	t.Helper()
	mustRead(t, m, 1, int64(idx)*mpage.PageSize)
	p, _, err := mpage.GrabPage(m, idx)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Has(mpage.Uptodate) {
		t.Fatalf("page %d not uptodate", idx)
	}
	return p
}

// setBlocksDirty fills each listed block i of page idx with fill+i and
// marks it dirty on its own (SetBlocksDirty), so the page has per-block
// state and only those blocks are dirty.
func setBlocksDirty(t *testing.T, m *mpage.Mapping, idx uint64, fill byte, blocks ...int) {
	t.Helper()
	p := grabUptodate(t, m, idx)
	bs := m.BlockSize()
	for _, i := range blocks {
		for j := i * bs; j < (i+1)*bs; j++ {
			p.Data[j] = fill + byte(i)
		}
		m.SetBlocksDirty(p, i*bs, (i+1)*bs)
	}
	p.Unlock()
	p.Release()
}

// writes lists the write requests the Recorder saw, as "off+len".
func writes(e *mpagetest.Env) []mpagetest.Record {
	var out []mpagetest.Record
	for _, r := range e.Ring.Records() {
		if r.Op == uring.OpWritev || r.Op == uring.OpWrite {
			out = append(out, r)
		}
	}
	return out
}

// TestSetBlocksDirty: a page whose blocks have different owners writes
// only the blocks marked dirty; the others keep what their owner wrote to
// the device meanwhile.
func TestSetBlocksDirty(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to int   // bytes of page 1 changed and marked dirty
		want     []int // device blocks written
	}{
		{"one block", 1024, 2048, []int{5}},
		{"part of a block", 3000, 3001, []int{6}},
		{"two blocks", 1000, 3000, []int{4, 5, 6}},
		{"whole page", 0, 4096, []int{4, 5, 6, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := metaEnv(t)
			m := e.Meta
			p := grabUptodate(t, m, 1)
			for i := tc.from; i < tc.to; i++ {
				p.Data[i] = 0xEE
			}
			m.SetBlocksDirty(p, tc.from, tc.to)
			p.Unlock()
			p.Release()
			// Another owner writes device block 7 behind the page's back.
			e.Drain()
			copy(e.Disk()[7*1024:8*1024], bytes.Repeat([]byte{0x77}, 1024))
			e.Ring.Reset()
			if err := m.WriteAndWait(0, -1); err != nil {
				t.Fatal(err)
			}
			e.Drain()
			var got []int
			for _, r := range writes(e) {
				for b := r.Offset / 1024; b < (r.Offset+int64(r.Len))/1024; b++ {
					got = append(got, int(b))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("wrote blocks %v, want %v", got, tc.want)
			}
			disk := e.Disk()
			if tc.to <= 3072 && disk[7*1024] != 0x77 {
				t.Fatalf("block 7 overwritten with %#x", disk[7*1024])
			}
			if disk[4096+tc.from] != 0xEE {
				t.Fatal("the change did not reach the device")
			}
			if n := m.DirtyPages(); n != 0 {
				t.Fatalf("%d dirty pages after writeback", n)
			}
		})
	}
}

// TestDiscardBlocks: a discarded block is never written, its bytes read as
// zero in the cache, and a page left without dirty blocks is clean.
func TestDiscardBlocks(t *testing.T) {
	e := metaEnv(t)
	m := e.Meta
	p := grabUptodate(t, m, 1)
	p.Data[0], p.Data[1024] = 0xAA, 0xBB
	m.SetBlocksDirty(p, 0, 1)
	m.SetBlocksDirty(p, 1024, 1025)
	m.DiscardBlocks(p, 1024, 2048)
	if p.Data[1024] != 0 {
		t.Fatal("discarded block not zeroed")
	}
	p.Unlock()
	p.Release()
	e.Ring.Reset()
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	w := writes(e)
	if len(w) != 1 || w[0].Offset != 4*1024 || w[0].Len != 1024 {
		t.Fatalf("writes %v, want block 4 only", w)
	}

	// Discarding the last dirty block cleans the page.
	p = grabUptodate(t, m, 2)
	p.Data[0] = 1
	m.SetBlocksDirty(p, 0, 1)
	m.DiscardBlocks(p, 0, 1024)
	p.Unlock()
	p.Release()
	if n := m.DirtyPages(); n != 0 {
		t.Fatalf("%d dirty pages after discarding the only dirty block", n)
	}

	// A page dirty as a whole keeps its other blocks dirty.
	p = grabUptodate(t, m, 3)
	m.SetPageDirty(p)
	m.DiscardBlocks(p, 2048, 3072)
	p.Unlock()
	p.Release()
	e.Ring.Reset()
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	var got []int
	for _, r := range writes(e) {
		for b := r.Offset / 1024; b < (r.Offset+int64(r.Len))/1024; b++ {
			got = append(got, int(b))
		}
	}
	if !slices.Equal(got, []int{12, 13, 15}) {
		t.Fatalf("wrote blocks %v, want 12, 13, 15", got)
	}
}

// TestDiscardAfterFailedWrite: a metadata page whose write failed and
// whose dirty blocks are then discarded (the blocks were freed and reused
// for file data) has nothing left to retry: the mapping's write error
// goes with it. Were it kept, every later sync would fail forever, as the
// short-transfer drill found. A page that keeps another dirty block keeps
// the error until that block is written.
func TestDiscardAfterFailedWrite(t *testing.T) {
	e := metaEnv(t)
	m := e.Meta
	failWrite := func(index uint64, blocks ...int) {
		t.Helper()
		setBlocksDirty(t, m, index, 0xE0, blocks...)
		e.Ring.Fail(mpagetest.Rule{AnyOp: true, Off: int64(index) * 4096, Size: 4096, Errno: syscall.EIO})
		e.Ring.Reset()
		if err := m.WriteAndWait(0, -1); !errors.Is(err, syscall.EIO) {
			t.Fatalf("writeback of page %d: %v, want EIO", index, err)
		}
		e.Drain()
		e.Ring.ClearFaults()
	}
	discard := func(index uint64, from, to int) {
		t.Helper()
		p := mpage.FindPage(m, index)
		if p == nil {
			t.Fatalf("page %d not cached", index)
		}
		mpage.LockPage(p)
		m.DiscardBlocks(p, from, to)
		p.Unlock()
		p.Release()
	}

	failWrite(1, 0)
	discard(1, 0, 1024)
	if err := m.Err(); err != nil {
		t.Fatalf("after discarding the only failed block: Err() = %v", err)
	}
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatalf("sync after the discard: %v", err)
	}

	failWrite(2, 0, 1)
	discard(2, 0, 1024)
	if err := m.Err(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("block 1 of page 2 is still unwritten, but Err() = %v", err)
	}
	if err := m.WriteAndWait(0, -1); err != nil || m.Err() != nil {
		t.Fatalf("retry of page 2: %v, Err() = %v", err, m.Err())
	}
}

// TestFailedMultipageWriteOfBlocks: a page with per-block state whose
// blocks are all mapped and dirty goes out in one multipage Bio; when that
// fails, every block is dirty again (redirtyBlocks, from the Bio's
// completion), and the retry writes them all. Were they left clean, the
// retry would write nothing and clear the error: acknowledged data lost.
func TestFailedMultipageWriteOfBlocks(t *testing.T) {
	e := metaEnv(t)
	m := e.Meta
	dirtyBlocks := func(fill byte) { setBlocksDirty(t, m, 1, fill, 0, 1, 2, 3) }
	// writeback runs WriteAndWait and returns the writes the device saw
	// and its error.
	writeback := func() ([]mpagetest.Record, error) {
		t.Helper()
		e.Ring.Reset()
		err := m.WriteAndWait(0, -1)
		e.Drain()
		return writes(e), err
	}

	// The first writeback maps the buffers: unmapped dirty blocks confuse
	// the page, and the per-block path maps and writes them one by one.
	dirtyBlocks(0xA0)
	if w, err := writeback(); err != nil || len(w) != 4 {
		t.Fatalf("mapping writeback: %v, %d writes, want 4 per-block writes", err, len(w))
	}

	dirtyBlocks(0xC0)
	e.Ring.Fail(mpagetest.Rule{AnyOp: true, Off: 4096, Size: 4096, Errno: syscall.EIO, Count: 1})
	w, err := writeback()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("failed writeback: %v, want EIO", err)
	}
	if len(w) != 1 || w[0].Offset != 4096 || w[0].Len != 4096 || w[0].Err == nil {
		t.Fatalf("failed writeback: writes %v, want one failed multipage write of page 1", w)
	}
	if n := m.DirtyPages(); n != 1 {
		t.Fatalf("%d dirty pages after the failed write, want 1", n)
	}
	e.Ring.ClearFaults()

	w, err = writeback()
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(w) != 1 || w[0].Offset != 4096 || w[0].Len != 4096 {
		t.Fatalf("retry: writes %v, want page 1 again in one multipage write", w)
	}
	for i := range 4 {
		blk := e.Disk()[4096+i*1024 : 4096+(i+1)*1024]
		if want := bytes.Repeat([]byte{0xC0 + byte(i)}, 1024); !bytes.Equal(blk, want) {
			t.Fatalf("block %d after the retry: %x..., want %#x", 4+i, blk[:8], want[0])
		}
	}
	if err := m.Err(); err != nil {
		t.Fatalf("error after the retry: %v", err)
	}
}

// TestWriteConfusedWithBuffers: each rule of the multipage write path that
// sends a page with per-block state block by block, reached through the
// API, and what the per-block path then writes: the dirty blocks, no
// others, and no block mapped (allocated) that has nothing to write.
// 1 KiB blocks; page 0 is file blocks 0..3.
func TestWriteConfusedWithBuffers(t *testing.T) {
	const fill = 0xE0
	for _, tc := range []struct {
		name   string
		script string
		size   int64
		// prepare leaves page 0 with per-block state; write writes it.
		prepare func(t *testing.T, e *mpagetest.Env)
		write   func(t *testing.T, e *mpagetest.Env) error
		why     mpage.Reason
		want    []written // in order
	}{
		{
			// Its blocks mapped by a first per-block writeback, only one
			// of them dirtied again: not every mapped block is dirty.
			name: "mapped blocks not all dirty", script: "map 0-3 at 100", size: 4096,
			prepare: func(t *testing.T, e *mpagetest.Env) {
				setBlocksDirty(t, e.Mapping, 0, 0x10, 0, 1, 2, 3)
				if err := e.Mapping.WriteAndWait(0, -1); err != nil {
					t.Fatal(err)
				}
				setBlocksDirty(t, e.Mapping, 0, fill, 2)
			},
			write: writeAndWait, why: mpage.ReasonNotDirty, want: []written{{102, 2}},
		},
		{
			// Per-block state, none of it mapped, nothing dirty: the file
			// system writes the clean page (WritePage writes a page
			// whether or not it is dirty). Nothing to write, nothing to
			// map.
			name: "all blocks unmapped", script: "map 0-3 at 100", size: 4096,
			prepare: func(t *testing.T, e *mpagetest.Env) {
				setBlocksDirty(t, e.Mapping, 0, fill, 1)
				p := grabUptodate(t, e.Mapping, 0)
				e.Mapping.DiscardBlocks(p, 1024, 2048)
				p.Unlock()
				p.Release()
			},
			write: func(t *testing.T, e *mpagetest.Env) error {
				p := grabUptodate(t, e.Mapping, 0)
				defer p.Release()
				return e.Mapping.WritePage(p)
			},
			why: mpage.ReasonBuffers,
		},
		{
			// Read block by block around the hole at block 1, then blocks
			// 0, 2 and 3 dirtied: data after an unmapped block. The hole
			// is clean and stays a hole.
			name: "data after an unmapped block", script: "map 0 at 100\nmap 2-3 at 102\nalloc at 500", size: 4096,
			prepare: func(t *testing.T, e *mpagetest.Env) {
				setBlocksDirty(t, e.Mapping, 0, fill, 0, 2, 3)
			},
			write: writeAndWait, why: mpage.ReasonHole, want: []written{{100, 0}, {102, 2}, {103, 3}},
		},
		{
			// Read block by block because the page's blocks are not
			// contiguous, then rewritten whole.
			name: "blocks not contiguous", script: "map 0-1 at 100\nmap 2-3 at 200", size: 4096,
			prepare: func(t *testing.T, e *mpagetest.Env) {
				setBlocksDirty(t, e.Mapping, 0, fill, 0, 1, 2, 3)
			},
			write: writeAndWait, why: mpage.ReasonDiscontiguous, want: []written{{100, 0}, {101, 1}, {200, 2}, {201, 3}},
		},
		{
			// Mapped and dirty, but i_size has dropped below the page, as
			// between Truncate setting it and dropping the page: nothing
			// is written and the page is clean.
			name: "page wholly past EOF", script: "map 0-3 at 100", size: 4096,
			prepare: func(t *testing.T, e *mpagetest.Env) {
				setBlocksDirty(t, e.Mapping, 0, 0x10, 0, 1, 2, 3)
				if err := e.Mapping.WriteAndWait(0, -1); err != nil {
					t.Fatal(err)
				}
				setBlocksDirty(t, e.Mapping, 0, fill, 0, 1, 2, 3)
				e.Mapping.SetSize(0)
			},
			write: writeAndWait, why: mpage.ReasonEOF,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 1024, Script: tc.script, Size: tc.size})
			tc.prepare(t, e)
			e.Drain()
			e.Ring.Reset()
			e.Mapper.ResetLog()
			before := e.Stats.Snapshot()
			if err := tc.write(t, e); err != nil {
				t.Fatal(err)
			}
			e.Drain()
			after := e.Stats.Snapshot()
			if got := after.ConfusedTotal(mpage.Write) - before.ConfusedTotal(mpage.Write); got != 1 {
				t.Fatalf("%d pages confused, want 1", got)
			}
			if after.Confused[mpage.Write][tc.why] == before.Confused[mpage.Write][tc.why] {
				t.Fatalf("not confused for %s: %v", tc.why, after.Confused[mpage.Write])
			}
			var got, want []int
			for _, r := range writes(e) {
				got = append(got, int(r.Offset/1024))
				if r.Len != 1024 {
					t.Fatalf("write %v is not one block", r)
				}
			}
			for _, w := range tc.want {
				want = append(want, w.dev)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("wrote blocks %v, want %v", got, want)
			}
			for _, w := range tc.want {
				blk := e.Disk()[w.dev*1024 : (w.dev+1)*1024]
				if !bytes.Equal(blk, bytes.Repeat([]byte{fill + byte(w.page)}, 1024)) {
					t.Fatalf("device block %d holds %x..., want block %d of the page", w.dev, blk[:8], w.page)
				}
			}
			if calls := e.Mapper.Calls(); len(calls) != 0 {
				t.Fatalf("mapper called for a page whose dirty blocks are mapped: %v", calls)
			}
			if n := e.Mapping.DirtyPages(); n != 0 {
				t.Fatalf("%d dirty pages after the write", n)
			}
		})
	}
}

// written is a block the per-block path wrote: device block dev, from
// block page of the page.
type written struct{ dev, page int }

func writeAndWait(_ *testing.T, e *mpagetest.Env) error { return e.Mapping.WriteAndWait(0, -1) }

// TestTruncateInvalidatesBlocks: after a truncate inside a page with
// per-block state, the blocks past EOF are unmapped, so growing the file
// again maps them afresh instead of writing to their old addresses.
func TestTruncateInvalidatesBlocks(t *testing.T) {
	// Discontiguous on purpose: the per-block path gives the page buffers.
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 1024, Script: "map 0-1 at 100\nmap 2-3 at 300\nalloc at 200", Size: 4096})
	m := e.Mapping
	mustWrite(t, m, bytes.Repeat([]byte{1}, 4096), 0)
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if err := m.Truncate(1500); err != nil {
		t.Fatal(err)
	}
	e.Mapper.Punch(2) // the file system frees blocks 2 and 3
	e.Ring.Reset()
	mustWrite(t, m, bytes.Repeat([]byte{2}, 1024), 3072)
	if err := m.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	e.Drain()
	for _, r := range writes(e) {
		if r.Offset >= 300*1024 && r.Offset < 304*1024 {
			t.Fatalf("wrote to freed block %d: %v", r.Offset/1024, r)
		}
	}
	if got := mustRead(t, m, 4096, 0); got[2000] != 0 || got[3072] != 2 || got[0] != 1 {
		t.Fatalf("read back %d %d %d", got[0], got[2000], got[3072])
	}
}
