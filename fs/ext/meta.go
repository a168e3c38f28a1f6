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
// a freshly allocated indirect or extent tree block. The block is fresh
// until the next sync writes it ahead of what points at it (syncFresh).
func (v *Volume) zeroMetaBlock(blk uint64) error {
	if err := v.checkMetaBlock(blk); err != nil {
		return err
	}
	if v.jnl == nil {
		// Journaled, the block reaches the log with what points at it
		// and goes home only after their commit.
		v.addFresh(blk)
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
	if v.syncFresh() != nil {
		return // the fresh blocks stay listed; the next Sync reports it
	}
	wbc := mpage.WritebackControl{SyncMode: mpage.SyncNone, NrToWrite: int64(v.metaDirtyLimit / 2)}
	// Errors stay on the mapping and reach the next Sync.
	_ = v.meta.WritePages(&wbc)
}

// Fresh metadata blocks.
//
// A block that has just become an indirect or extent tree block holds
// whatever it held before (another file's bytes) until its write lands.
// Written in the same flush as the inode (or parent block) that points at
// it, a power cut may keep the pointer and not the block: e2fsck then
// reads garbage block numbers, and clears the whole inode, taking a file
// whose old bytes were durable with it. So a sync first writes the fresh
// blocks and flushes (syncFresh), and only then the rest of the metadata;
// so do the metadata mapping's background writeback (metaOwner, before
// the Flusher writes its pages) and balanceMeta. What is left: a metadata
// page whose write is started after a Boundary run (the engine's
// WriteBlockIfDirty: normally the fresh indirect block itself) together with a pointer in
// the same page.

// metaOwner is the metadata mapping's Owner: before background writeback
// writes metadata pages, the fresh blocks they may point at go first.
type metaOwner Volume

// BeforeWriteback implements mpage.PreWriter.
func (o *metaOwner) BeforeWriteback() error {
	v := (*Volume)(o)
	if err := v.enter(); err != nil {
		return nil // closed: Close wrote everything
	}
	defer v.leave()
	if v.readOnly {
		return nil
	}
	return v.syncFresh()
}

var _ mpage.PreWriter = (*metaOwner)(nil)

// addFresh lists blk as fresh metadata: written and flushed before any
// directory block at the next sync. Journal-less volumes only: on a
// journaled one the block is pinned in the running transaction (a
// synchronous write would not write it) and the commit keeps a change
// whole, so there is no order to keep.
func (v *Volume) addFresh(blk uint64) {
	if v.jnl != nil {
		return
	}
	v.freshMu.Lock()
	if v.fresh == nil {
		v.fresh = make(map[uint64]struct{})
	}
	v.fresh[blk] = struct{}{}
	v.freshMu.Unlock()
}

// syncFresh writes the fresh metadata blocks, waits for them and flushes
// the device; nothing to do without fresh blocks. A failure puts them
// back for the next sync.
func (v *Volume) syncFresh() error {
	v.freshMu.Lock()
	fresh := v.fresh
	v.fresh = nil
	v.freshMu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	err := v.writeFresh(fresh)
	if err == nil {
		err = v.cfg.Device.Flush()
	}
	if err != nil {
		for blk := range fresh {
			v.addFresh(blk)
		}
		return fmt.Errorf("ext: new metadata blocks: %w", err)
	}
	return nil
}

func (v *Volume) writeFresh(fresh map[uint64]struct{}) error {
	bs := int64(v.sb.BlockSize)
	for blk := range fresh {
		off := int64(blk) * bs
		if err := v.meta.WriteAndWait(off, off+bs-1); err != nil {
			return err
		}
	}
	return nil
}
