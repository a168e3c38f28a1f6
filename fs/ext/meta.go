package ext

import (
	"fmt"

	"github.com/mpaged/mpaged/mpage"
)

// Writing metadata.
//
// Every metadata change goes through the volume's metadata mapping, with
// the engine's metadata block API (mpage's buffer helpers): the block is
// read (ReadBlock) and locked (which waits for a write of it in flight),
// its bytes are changed in place, and only that block is marked dirty
// (MarkDirty; with a journal installed on the mapping, that is where the
// block joins the running transaction). The rule that makes this safe
// with blocks smaller than a page: a metadata page may also hold blocks of
// file data, written through the files' own mappings; the metadata
// mapping's copy of those is stale and is never written, because only
// blocks changed through it are dirty.
//
// The converse rule, for blocks that change owner: a block leaving the
// free pool for file data is forgotten by the metadata mapping first
// (ForgetBlocks: any pending write of it is dropped and its cached bytes
// zeroed), so an old metadata write (a freed indirect block) never lands
// over the new data. The engine does this itself for blocks its write
// path allocates (each file mapping's Meta is the metadata mapping), and
// the file system for blocks it allocates directly. A block leaving the
// free pool for metadata is zeroed in the metadata mapping (ZeroBlock)
// before anything points at it. Freed file data has no cached pages left
// (the file's mapping was truncated before its blocks were freed).
//
// Block locks of the metadata mapping are taken one at a time and never
// held while taking another lock: callers may hold a mapper's lock or
// allocMu, not the reverse.

// checkMetaBlock fails blocks past the end of the volume as corruption
// (a block number read from the device).
func (v *Volume) checkMetaBlock(blk uint64) error {
	if blk >= v.sb.BlocksCount {
		return fmt.Errorf("%w: block %d past the end of the volume (%d blocks)", ErrCorrupt, blk, v.sb.BlocksCount)
	}
	return nil
}

// updateMeta changes bytes of metadata block blk: fn gets the block's bytes
// (locked) and edits them in place; the block is then marked dirty. An
// error from fn leaves the block as fn left it, not dirtied.
func (v *Volume) updateMeta(blk uint64, fn func(b []byte) error) error {
	if err := v.checkMetaBlock(blk); err != nil {
		return err
	}
	r, err := v.meta.ReadBlock(blk)
	if err != nil {
		return fmt.Errorf("ext: metadata block %d: %w", blk, err)
	}
	defer r.Release()
	if err := r.Lock(); err != nil {
		return fmt.Errorf("ext: metadata block %d: %w", blk, err)
	}
	err = fn(r.Data())
	if err == nil {
		r.MarkDirty()
	}
	r.Unlock()
	return err
}

// zeroMetaBlock makes blk a block of zeroes in the metadata mapping, dirty:
// a freshly allocated indirect block.
func (v *Volume) zeroMetaBlock(blk uint64) error {
	if err := v.checkMetaBlock(blk); err != nil {
		return err
	}
	if err := v.meta.ZeroBlock(blk); err != nil {
		return fmt.Errorf("ext: zero block %d: %w", blk, err)
	}
	return nil
}

// balanceMeta starts writeback of some dirty metadata when the metadata
// mapping holds a lot of it: the engine's dirty throttling only makes a
// writer clean its own mapping, and the metadata mapping has no writer of
// its own.
func (v *Volume) balanceMeta() {
	if v.meta.DirtyPages() < v.metaDirtyLimit {
		return
	}
	wbc := mpage.WritebackControl{SyncMode: mpage.SyncNone, NrToWrite: int64(v.metaDirtyLimit / 2)}
	// Errors stay on the mapping and reach the next Sync.
	_ = v.meta.WritePages(&wbc)
}
