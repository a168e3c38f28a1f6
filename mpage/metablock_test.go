package mpage_test

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// metaBlockEnv is an Env whose metadata mapping the tests drive, on a 1 MiB
// disk of Pattern bytes.
func metaBlockEnv(t *testing.T, bs int) *mpagetest.Env {
	t.Helper()
	return mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: bs, DiskBytes: 1 << 20})
}

// editBlock reads block, fills its bytes with c and marks it dirty.
func editBlock(t *testing.T, m *mpage.Mapping, block uint64, c byte) {
	t.Helper()
	r, err := m.ReadBlock(block)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if err := r.Lock(); err != nil {
		t.Fatal(err)
	}
	for i := range r.Data() {
		r.Data()[i] = c
	}
	r.MarkDirty()
	r.Unlock()
}

// writtenBlocks lists the device blocks of the write requests the ring saw.
func writtenBlocks(e *mpagetest.Env) []uint64 {
	e.Drain()
	var out []uint64
	for _, rec := range e.Ring.Records() {
		if rec.Op == uring.OpWritev || rec.Op == uring.OpWrite {
			for b := rec.Offset / int64(e.BlockSize); b < (rec.Offset+int64(rec.Len))/int64(e.BlockSize); b++ {
				out = append(out, uint64(b))
			}
		}
	}
	return out
}

func diskBlock(e *mpagetest.Env, block uint64) []byte {
	e.Drain()
	bs := uint64(e.BlockSize)
	return e.Disk()[block*bs : (block+1)*bs]
}

func allBytes(b []byte, c byte) bool { return bytes.Count(b, []byte{c}) == len(b) }

func TestMetaBlockReadMarkDirtyWrite(t *testing.T) {
	for _, bs := range []int{1024, 4096} {
		t.Run(map[int]string{1024: "1k", 4096: "4k"}[bs], func(t *testing.T) {
			e := metaBlockEnv(t, bs)
			const blk = 9 // shares its page with blocks 8, 10, 11 at 1 KiB
			r, err := e.Meta.ReadBlock(blk)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Uptodate() || r.Block() != blk || len(r.Data()) != bs {
				t.Fatalf("ReadBlock: uptodate=%v block=%d len=%d", r.Uptodate(), r.Block(), len(r.Data()))
			}
			if want := mpagetest.Pattern(blk*int64(bs), bs); !allBytes(r.Data(), want) {
				t.Fatalf("block %d reads %v..., want %d", blk, r.Data()[:4], want)
			}
			r.Release()
			e.Ring.Reset()
			editBlock(t, e.Meta, blk, 0xee)
			if e.Meta.DirtyPages() != 1 {
				t.Fatalf("%d dirty pages, want 1", e.Meta.DirtyPages())
			}
			if err := e.Meta.WriteAndWait(0, -1); err != nil {
				t.Fatal(err)
			}
			if got := writtenBlocks(e); !slices.Equal(got, []uint64{blk}) {
				t.Fatalf("wrote blocks %v, want only %d", got, blk)
			}
			if !allBytes(diskBlock(e, blk), 0xee) {
				t.Fatal("the edit did not reach the device")
			}
		})
	}
}

func TestMetaBlockRange(t *testing.T) {
	e := metaBlockEnv(t, 4096)
	if _, err := e.Meta.ReadBlock(256); !errors.Is(err, mpage.ErrRange) {
		t.Fatalf("ReadBlock past the device: %v, want ErrRange", err)
	}
	if _, err := e.Meta.GetBlock(1 << 40); !errors.Is(err, mpage.ErrRange) {
		t.Fatalf("GetBlock past the device: %v, want ErrRange", err)
	}
}

func TestMetaBlockReadError(t *testing.T) {
	e := metaBlockEnv(t, 4096)
	e.Ring.FailAt(uring.OpReadv, 7*4096, syscall.EIO)
	if _, err := e.Meta.ReadBlock(7); !errors.Is(err, syscall.EIO) {
		t.Fatalf("ReadBlock of a failing block: %v, want EIO", err)
	}
}

func TestMetaBlockForget(t *testing.T) {
	for _, bs := range []int{1024, 4096} {
		e := metaBlockEnv(t, bs)
		editBlock(t, e.Meta, 5, 0xaa)
		editBlock(t, e.Meta, 6, 0xbb)
		e.Ring.Reset()
		e.Meta.ForgetBlocks(5, 1)
		e.Meta.ForgetBlocks(100, 3) // not cached: nothing to do
		if err := e.Meta.WriteAndWait(0, -1); err != nil {
			t.Fatal(err)
		}
		if got := writtenBlocks(e); !slices.Equal(got, []uint64{6}) {
			t.Fatalf("bs %d: wrote blocks %v after forgetting 5, want [6]", bs, got)
		}
		if want := mpagetest.Pattern(5*int64(bs), bs); !allBytes(diskBlock(e, 5), want) {
			t.Fatalf("bs %d: the forgotten block's write reached the device", bs)
		}
	}
}

func TestMetaBlockZero(t *testing.T) {
	for _, tc := range []struct {
		bs    int
		reads bool // a block smaller than a page needs its page read
	}{{4096, false}, {1024, true}} {
		e := metaBlockEnv(t, tc.bs)
		e.Ring.Reset()
		if err := e.Meta.ZeroBlock(3); err != nil {
			t.Fatal(err)
		}
		e.Drain()
		read := false
		for _, rec := range e.Ring.Records() {
			read = read || rec.Op == uring.OpReadv
		}
		if read != tc.reads {
			t.Fatalf("bs %d: ZeroBlock read the device: %v, want %v", tc.bs, read, tc.reads)
		}
		if err := e.Meta.SyncBlock(3); err != nil {
			t.Fatal(err)
		}
		if !allBytes(diskBlock(e, 3), 0) {
			t.Fatalf("bs %d: block 3 not zero on the device", tc.bs)
		}
		if e.Meta.DirtyPages() != 0 {
			t.Fatalf("bs %d: SyncBlock left %d dirty pages", tc.bs, e.Meta.DirtyPages())
		}
	}
}

func TestMetaBlockWriteIfDirty(t *testing.T) {
	e := metaBlockEnv(t, 4096)
	r, err := e.Meta.ReadBlock(4) // cached, clean
	if err != nil {
		t.Fatal(err)
	}
	r.Release()
	editBlock(t, e.Meta, 5, 0x55)
	e.Ring.Reset()
	e.Meta.WriteBlockIfDirty(4)  // clean: nothing
	e.Meta.WriteBlockIfDirty(99) // not cached: nothing
	e.Meta.WriteBlockIfDirty(5)
	if got := writtenBlocks(e); !slices.Equal(got, []uint64{5}) {
		t.Fatalf("WriteBlockIfDirty wrote %v, want [5]", got)
	}
}

func TestMetaBlockSyncError(t *testing.T) {
	e := metaBlockEnv(t, 4096)
	editBlock(t, e.Meta, 8, 0x88)
	e.Ring.Fail(mpagetest.Rule{Op: uring.OpWritev, Off: 8 * 4096, Errno: syscall.EIO, Count: 1})
	if err := e.Meta.SyncBlock(8); !errors.Is(err, syscall.EIO) {
		t.Fatalf("SyncBlock of a failing write: %v, want EIO", err)
	}
	if e.Meta.DirtyPages() != 1 {
		t.Fatal("the failed block is not dirty again")
	}
	if err := e.Meta.SyncBlock(8); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !allBytes(diskBlock(e, 8), 0x88) {
		t.Fatal("the retried write did not reach the device")
	}
}

// fakeJournal records the blocks that join it and pins each once, as a
// running transaction would; commit writes them to the log and unpins.
type fakeJournal struct {
	mu      sync.Mutex
	joins   []uint64
	forgets []uint64
	pinned  map[uint64]mpage.BlockRef
}

func (j *fakeJournal) JoinBlock(r mpage.BlockRef) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.joins = append(j.joins, r.Block())
	if _, ok := j.pinned[r.Block()]; !ok {
		r.Pin()
		j.pinned[r.Block()] = r
	}
}

func (j *fakeJournal) ForgetBlock(block uint64) {
	j.mu.Lock()
	j.forgets = append(j.forgets, block)
	j.mu.Unlock()
}

// commit writes each pinned block to the log from logStart on, then
// unpins them (checkpoint).
func (j *fakeJournal) commit(t *testing.T, logStart uint64) {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	blocks := make([]uint64, 0, len(j.pinned))
	for b := range j.pinned {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	for i, b := range blocks {
		r := j.pinned[b]
		if err := r.Lock(); err != nil {
			t.Fatal(err)
		}
		err := r.WriteTo(logStart + uint64(i))
		r.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		r.Unpin()
		delete(j.pinned, b)
	}
}

func TestMetaBlockJournal(t *testing.T) {
	e := metaBlockEnv(t, 1024)
	j := &fakeJournal{pinned: map[uint64]mpage.BlockRef{}}
	e.Meta.SetJournal(j)
	editBlock(t, e.Meta, 20, 0x20)
	editBlock(t, e.Meta, 20, 0x21) // joins again, pinned once
	editBlock(t, e.Meta, 40, 0x40)
	if !slices.Equal(j.joins, []uint64{20, 20, 40}) {
		t.Fatalf("joins %v, want [20 20 40]", j.joins)
	}
	e.Ring.Reset()
	// Writeback of every kind leaves pinned blocks alone, dirty.
	e.Meta.WriteBlockIfDirty(20)
	if err := e.Meta.SyncBlock(40); err != nil {
		t.Fatal(err)
	}
	if err := e.Meta.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if got := writtenBlocks(e); len(got) != 0 {
		t.Fatalf("pinned blocks written home before commit: %v", got)
	}
	if e.Meta.DirtyPages() != 2 {
		t.Fatalf("%d dirty pages while pinned, want 2", e.Meta.DirtyPages())
	}
	ref, err := e.Meta.ReadBlock(20)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Release()
	if !ref.Pinned() {
		t.Fatal("a block in the transaction is not pinned")
	}
	// Commit: the blocks' bytes go to the log (blocks 900, 901), not home.
	j.commit(t, 900)
	if ref.Pinned() {
		t.Fatal("a committed block is still pinned")
	}
	if got := writtenBlocks(e); !slices.Equal(got, []uint64{900, 901}) {
		t.Fatalf("commit wrote %v, want [900 901]", got)
	}
	if !allBytes(diskBlock(e, 900), 0x21) || !allBytes(diskBlock(e, 901), 0x40) {
		t.Fatal("the log blocks do not hold the blocks' bytes")
	}
	if want := mpagetest.Pattern(20*1024, 1024); !allBytes(diskBlock(e, 20), want) {
		t.Fatal("block 20 reached its home before the checkpoint")
	}
	// Checkpoint: unpinned, writeback writes them home.
	e.Ring.Reset()
	if err := e.Meta.WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if got := writtenBlocks(e); !slices.Equal(got, []uint64{20, 40}) {
		t.Fatalf("checkpoint wrote %v, want [20 40]", got)
	}
	if !allBytes(diskBlock(e, 20), 0x21) {
		t.Fatal("block 20 not home after the checkpoint")
	}
	// Forgetting tells the journal, block by block.
	e.Meta.ForgetBlocks(30, 3)
	if !slices.Equal(j.forgets, []uint64{30, 31, 32}) {
		t.Fatalf("forgets %v, want [30 31 32]", j.forgets)
	}
	e.Meta.SetJournal(nil)
	editBlock(t, e.Meta, 50, 0x50)
	if len(j.joins) != 3 {
		t.Fatal("a removed journal was still told")
	}
}

// TestMetaBlockNoAllocs: without a journal, changing a cached metadata
// block allocates nothing (the file systems' hottest metadata path:
// bitmaps, inode tables).
func TestMetaBlockNoAllocs(t *testing.T) {
	e := metaBlockEnv(t, 1024)
	edit := func() {
		r, err := e.Meta.ReadBlock(12)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Lock(); err != nil {
			t.Fatal(err)
		}
		r.Data()[0]++
		r.MarkDirty()
		r.Unlock()
		r.Release()
	}
	edit()
	if n := testing.AllocsPerRun(100, edit); n != 0 {
		t.Fatalf("%v allocations per metadata block change", n)
	}
}
