package ext

import (
	"fmt"
	"io"
	"syscall"

	"github.com/mpaged/mpaged/mpage"
)

// Writing metadata.
//
// Every metadata change goes through the volume's metadata mapping: the
// page holding the block is taken locked and uptodate (read if need be),
// its in-flight write (if any) is waited for, the bytes are changed in
// place, and only the blocks changed are marked dirty (SetBlocksDirty).
// The rule that makes this safe with blocks smaller than a page: a
// metadata page may also hold blocks of file data, written through the
// files' own mappings; the metadata mapping's copy of those is stale and
// is never written, because only blocks changed through it are dirty.
//
// The converse rule, for blocks that change owner: a block leaving the
// free pool for file data is "forgotten" by the metadata mapping first
// (forgetBlocks: any pending write of it is dropped and its cached bytes
// zeroed), so an old metadata write (a freed indirect block) never lands
// over the new data. A block leaving the free pool for metadata is zeroed
// in the metadata mapping (zeroMetaBlock) before anything points at it.
// Freed file data has no cached pages left (the file's mapping was
// truncated before its blocks were freed).
//
// Page locks of the metadata mapping are taken one at a time and never
// held while taking another lock: callers may hold a mapper's lock or
// allocMu, not the reverse.

// metaPos returns the metadata page index holding device block blk and
// the block's byte offset in that page.
func (v *Volume) metaPos(blk uint64) (idx uint64, off int) {
	pos := blk << v.blkbits
	return pos >> mpage.PageShift, int(pos & (mpage.PageSize - 1))
}

// lockMeta returns the metadata page holding blk locked, uptodate and not
// under writeback, and blk's offset in it.
func (v *Volume) lockMeta(blk uint64) (*mpage.Page, int, error) {
	if blk >= v.sb.BlocksCount {
		return nil, 0, fmt.Errorf("%w: block %d past the end of the volume (%d blocks)", ErrCorrupt, blk, v.sb.BlocksCount)
	}
	idx, off := v.metaPos(blk)
	for attempt := 0; ; attempt++ {
		p, _, err := v.meta.GrabPage(idx)
		if err != nil {
			return nil, 0, fmt.Errorf("ext: metadata block %d: %w", blk, err)
		}
		if p.Has(mpage.Uptodate) {
			p.WaitWriteback()
			return p, off, nil
		}
		p.Unlock()
		p.Release()
		if attempt > 2 {
			return nil, 0, fmt.Errorf("ext: metadata block %d: page keeps leaving the cache: %w", blk, syscall.EIO)
		}
		// Read it the ordinary way (readahead included), then retake it.
		var one [1]byte
		if _, err := v.meta.ReadAt(one[:], int64(idx)<<mpage.PageShift); err != nil && err != io.EOF {
			return nil, 0, fmt.Errorf("ext: read metadata block %d: %w", blk, err)
		}
	}
}

// updateMeta changes bytes of metadata block blk: fn gets the block's bytes
// (in the locked page) and edits them in place; the block is then marked
// dirty. An error from fn leaves the block as fn left it, not dirtied.
func (v *Volume) updateMeta(blk uint64, fn func(b []byte) error) error {
	p, off, err := v.lockMeta(blk)
	if err != nil {
		return err
	}
	bs := v.sb.BlockSize
	err = fn(p.Data[off : off+bs])
	if err == nil {
		v.meta.SetBlocksDirty(p, off, off+bs)
	}
	p.Unlock()
	p.Release()
	return err
}

// zeroMetaBlock makes blk a block of zeroes in the metadata mapping, dirty:
// a freshly allocated indirect or extent tree block. With one block per
// page the page is not read first. The block is fresh until the next sync
// writes it ahead of what points at it (syncFresh).
func (v *Volume) zeroMetaBlock(blk uint64) error {
	v.addFresh(blk)
	if v.sb.BlockSize == mpage.PageSize {
		buf := v.getBlockBuf()
		clear(buf)
		_, err := v.meta.WriteAt(buf, int64(blk)<<v.blkbits)
		v.putBlockBuf(buf)
		if err != nil {
			return fmt.Errorf("ext: zero block %d: %w", blk, err)
		}
		return nil
	}
	return v.updateMeta(blk, func(b []byte) error {
		clear(b)
		return nil
	})
}

// forgetBlocks makes the metadata mapping drop blocks [blk, blk+n), which
// now hold (or are about to hold) file data: pending writes of them are
// discarded, a write in flight is waited for, cached bytes are zeroed.
// Pages not cached need nothing.
func (v *Volume) forgetBlocks(blk uint64, n int) {
	bs := v.sb.BlockSize
	for n > 0 {
		idx, off := v.metaPos(blk)
		k := min(n, (mpage.PageSize-off)/bs)
		if p := v.meta.FindPage(idx); p != nil {
			p.Lock()
			if p.Mapping() == v.meta {
				v.meta.DiscardBlocks(p, off, off+k*bs)
			}
			p.Unlock()
			p.Release()
		}
		blk += uint64(k)
		n -= k
	}
}

// writeMetaBlockIfDirty starts the write of the metadata page holding blk
// if it is cached and dirty (the seeds' write_boundary_block): the
// engine calls it after submitting the data block just before blk, so an
// indirect block placed after its data goes out in the same sweep.
func (v *Volume) writeMetaBlockIfDirty(blk uint64) {
	if blk >= v.sb.BlocksCount {
		return
	}
	idx, _ := v.metaPos(blk)
	p := v.meta.FindPage(idx)
	if p == nil {
		return
	}
	defer p.Release()
	p.Lock()
	if p.Mapping() == v.meta && p.Has(mpage.Dirty) && !p.Has(mpage.Writeback) {
		// Errors stay on the mapping and reach the next Sync.
		_ = v.meta.WritePage(p)
		return
	}
	p.Unlock()
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
// page whose write is started by the Boundary hook (writeMetaBlockIfDirty:
// normally the fresh indirect block itself) together with a pointer in
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

func (v *Volume) addFresh(blk uint64) {
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
