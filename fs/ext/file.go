package ext

import (
	"container/list"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/mpaged/mpaged/mpage"
)

// node is one inode in use: its decoded inode and its data mapping (the
// file's page cache, with the mapper that fits its format). Nodes are
// shared: the volume keeps one per inode while it is referenced, and a
// bounded number of unreferenced ones for reuse.
type node struct {
	v   *Volume
	ino uint32
	// cur is the inode as last committed (read from the device or written
	// to the metadata mapping). Readers load it without locks; a writer
	// publishes a new copy, never changes a published one.
	cur  atomic.Pointer[Inode]
	m    *mpage.Mapping
	refs int           // guarded by v.mu
	elem *list.Element // on v.idle when refs == 0

	// Write side. wmu serialises changes to the inode and its data:
	// WriteAt, Truncate, directory edits, link counts, inode commits.
	// Lock order: Volume.ns, then wmu (parent directory before child),
	// then the mapper's lock, then Volume.allocMu, then metadata pages.
	wmu sync.Mutex
	// wmap is the inode's mapper when the write side can allocate and
	// truncate with it (block pointers, extents on a writable volume);
	// nil for inline and data-less inodes and on read-only volumes.
	wmap writeMapper
	// inodeDirty: the mapper allocated blocks (i_block, i_blocks) since
	// the inode was last committed; Sync, or the background flusher's
	// WriteInode, commits it again. Set through markInodeDirty.
	inodeDirty atomic.Bool
	// allocating counts node.allocate calls in progress (under wmu, so
	// 0 or 1): a mapper that allocates while it is 0 was called by the
	// engine's writeback (mapperAllocated).
	allocating atomic.Int32
	// orphan: unlinked (no links left) while open; the last release frees
	// its blocks and inode. Guarded by v.mu.
	orphan bool
}

// inode returns the inode as last committed.
func (n *node) inode() *Inode { return n.cur.Load() }

// holeMapper maps nothing: special files and fast symbolic links have no
// data blocks.
type holeMapper struct{}

func (holeMapper) MapBlocks(bm *mpage.BlockMap) error {
	bm.Flags, bm.PBlock, bm.Len = 0, 0, max(bm.Len, 1)
	return nil
}

// isFastSymlink reports whether a symlink's target lives in i_block. Both
// rules in use agree on what mke2fs and the kernel write: no data blocks
// (the kernel's test, allowing for an xattr block) and a target shorter
// than i_block (e2fsprogs' test).
func (v *Volume) isFastSymlink(in *Inode) bool {
	if in.Type() != TypeSymlink || in.Flags&(FlagInlineData|FlagExtents) != 0 {
		return false
	}
	ea := uint64(0)
	if in.FileACL != 0 {
		ea = uint64(v.sb.BlockSize/512) << v.sb.LogClusterSize >> v.sb.LogBlockSize
	}
	return in.Size < iBlockLen && in.Blocks <= ea
}

// newNode builds the node for a decoded inode: the mapper its format needs
// and a data mapping of i_size bytes.
func (v *Volume) newNode(in *Inode) (*node, error) {
	sb := v.sb
	var mapper mpage.BlockMapper
	var wmap writeMapper
	size := in.Size
	switch {
	case in.Flags&FlagInlineData != 0:
		im, err := newInlineMapper(v, in)
		if err != nil {
			return nil, err
		}
		mapper = im
	case in.Type() == TypeCharDev || in.Type() == TypeBlockDev || in.Type() == TypeFIFO || in.Type() == TypeSocket:
		mapper, size = holeMapper{}, 0
	case v.isFastSymlink(in):
		mapper, size = holeMapper{}, 0
	case in.Flags&FlagExtents != 0:
		if !sb.HasIncompat(IncompatExtents) {
			return nil, fmt.Errorf("%w: inode %d: extents flag on a volume without the extent feature", ErrCorrupt, in.Ino)
		}
		em, err := newExtentMapper(v, in)
		if err != nil {
			return nil, err
		}
		if size > uint64(maxLogicalBlocks)<<v.blkbits {
			return nil, fmt.Errorf("%w: inode %d: size %d past what extents address", ErrCorrupt, in.Ino, size)
		}
		mapper = em
		if !v.readOnly {
			ew := newExtentWriter(v, em, in)
			mapper, wmap = ew, ew
		}
	default:
		if size > indirectMaxBlocks(uint64(sb.BlockSize/4))<<v.blkbits {
			return nil, fmt.Errorf("%w: inode %d: size %d past what block pointers address", ErrCorrupt, in.Ino, size)
		}
		im := newIndirectMapper(v, in)
		mapper = im
		if !v.readOnly {
			wmap = im
		}
	}
	if size > 1<<62 {
		return nil, fmt.Errorf("%w: inode %d: size %d", ErrCorrupt, in.Ino, size)
	}
	n := &node{v: v, ino: in.Ino, wmap: wmap}
	cfg := mpage.MappingConfig{
		Device: v.cfg.Device, Cache: v.cfg.Cache, Mapper: mapper,
		BlockSize: sb.BlockSize, Size: int64(size), Name: fmt.Sprintf("inode %d", in.Ino),
	}
	if !v.readOnly {
		cfg.Owner = n // the background flusher's write_inode
		// The engine's write path forgets the blocks it allocates in
		// the metadata mapping and writes the indirect block after a
		// boundary from it.
		cfg.Meta = v.meta
	}
	m, err := mpage.NewMapping(cfg)
	if err != nil {
		return nil, fmt.Errorf("ext: inode %d: %w", in.Ino, err)
	}
	n.m = m
	n.cur.Store(in)
	if wmap != nil {
		wmap.setNode(n)
	}
	return n, nil
}

// getNode returns inode ino's node, referenced: from the cache, or read
// and built. Only live inodes are returned.
func (v *Volume) getNode(ino uint32) (*node, error) {
	v.mu.Lock()
	if n, ok := v.nodes[ino]; ok {
		v.holdLocked(n)
		v.mu.Unlock()
		return n, nil
	}
	v.mu.Unlock()

	in, err := v.readInode(ino)
	if err != nil {
		return nil, err
	}
	if err := in.checkLive(); err != nil {
		return nil, err
	}
	n, err := v.newNode(in)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if other, ok := v.nodes[ino]; ok {
		// Built twice concurrently: keep the first, drop ours (it has no
		// pages yet).
		v.holdLocked(other)
		v.mu.Unlock()
		n.m.Close()
		return other, nil
	}
	n.refs = 1
	v.nodes[ino] = n
	v.mu.Unlock()
	return n, nil
}

// holdNode takes another reference on a referenced node.
func (v *Volume) holdNode(n *node) {
	v.mu.Lock()
	v.holdLocked(n)
	v.mu.Unlock()
}

func (v *Volume) holdLocked(n *node) {
	if n.refs == 0 && n.elem != nil {
		v.idle.Remove(n.elem)
		n.elem = nil
	}
	n.refs++
}

// putNode drops a reference. An unreferenced node goes on the idle list;
// past the idle limit the least recently used one is dropped with its
// pages.
func (v *Volume) putNode(n *node) { v.releaseNode(n, true) }

// releaseNode is putNode; evict says whether to shrink the idle list.
func (v *Volume) releaseNode(n *node, evict bool) {
	v.mu.Lock()
	n.refs--
	if n.refs < 0 {
		v.mu.Unlock()
		panic("ext: node released more often than referenced")
	}
	if n.refs > 0 {
		v.mu.Unlock()
		return
	}
	if v.nodes[n.ino] != n {
		// The volume dropped it (closeAll); nothing to keep.
		v.mu.Unlock()
		return
	}
	if n.orphan {
		// Unlinked while open, and this was the last user.
		delete(v.nodes, n.ino)
		v.mu.Unlock()
		if v.jnl != nil {
			// This release may run inside a handle (handles do not
			// nest): the free gets one of its own.
			v.orphanFrees.Add(1)
			go v.freeOrphanHandle(n)
			return
		}
		if err := v.freeOrphan(n); err != nil {
			v.logf("ext: freeing unlinked inode %d: %v", n.ino, err)
		}
		return
	}
	n.elem = v.idle.PushFront(n)
	var drop []*node
	// Drop the least recently used idle nodes past the limit. One with
	// changes the device has not seen (dirty pages, an inode to commit)
	// is written back first, still cached and referenced (so nobody
	// builds a second node of it meanwhile), and put back; a later
	// release drops it. Writers of many files thus write back as they go,
	// one file per release, as the kernel's inode writeback does.
	var flush *node
	for evict && v.idle.Len() > v.cfg.IdleFiles {
		old := v.idle.Back().Value.(*node)
		if old.unsynced() {
			v.holdLocked(old)
			flush = old
			break
		}
		v.idle.Remove(old.elem)
		old.elem = nil
		delete(v.nodes, old.ino)
		drop = append(drop, old)
	}
	v.mu.Unlock()
	for _, old := range drop {
		old.m.WaitWriteback(0, 1<<62-1)
		if err := old.m.Close(); err != nil {
			v.logf("ext: dropping inode %d: %v", old.ino, err)
		}
	}
	if flush != nil {
		v.flushIdle(flush)
	}
}

// flushIdle writes back an idle node on its way out of the cache, on a
// goroutine of its own: the release that picked it may hold the
// name-space lock (a lookup's putNode), and a long write-back under it
// would stall every lookup. One runs at a time; meanwhile the idle list
// may grow past its limit, and a later release picks the node again.
// n is referenced; the reference goes when the write-back is done.
func (v *Volume) flushIdle(n *node) {
	if !v.idleFlushing.CompareAndSwap(false, true) {
		v.releaseNode(n, false)
		return
	}
	go func() {
		defer v.idleFlushing.Store(false)
		if err := v.enter(); err != nil {
			v.releaseNode(n, false) // closing: Close writes everything back
			return
		}
		defer v.leave()
		if err := n.syncData(); err != nil {
			// The error stays on its mapping for the next Sync.
			v.logf("ext: writing back inode %d: %v", n.ino, err)
		}
		v.releaseNode(n, false)
	}()
}

// markInodeDirty notes that n's inode must be committed again, and tells
// the engine so (the mapping stays on the cache's dirty list for the
// background flusher even when no page of it is dirty: the allocation may
// have been made by another writer's writeback).
func (n *node) markInodeDirty() {
	n.inodeDirty.Store(true)
	n.m.MarkInodeDirty()
}

// mapperAllocated is what a mapper calls when it has allocated file
// block blk: the inode is dirty, and on a journaled volume an allocation
// not made through node.allocate (so by writeback, outside any handle:
// its bitmap may commit before the inode pointing at it) is counted in
// strayAllocs and logged. A writeback racing an allocate of the same
// node goes unseen; the count is a detector, not a lock.
func (n *node) mapperAllocated(blk uint64) {
	n.markInodeDirty()
	if v := n.v; v.jnl != nil && n.allocating.Load() == 0 {
		if v.strayAllocs.Add(1) == 1 {
			v.logf("ext: inode %d: file block %d allocated by writeback, outside a journal handle (a crash may leak it)", n.ino, blk)
		}
	}
}

// WriteInode implements mpage.InodeWriter: the background flusher calls it
// after writing the node's pages, and an inode that writeback allocation
// changed (i_block, i_blocks: inodeDirty) is committed into the metadata
// mapping, whose own writeback takes it to the device. It reports whether
// it committed. The flusher holds no page or mapping lock here, so the
// node's locks are taken as any writer takes them: the volume's lifetime
// lock shared, then wmu. On a closed volume there is nothing to do (Close
// committed everything it could).
func (n *node) WriteInode() (bool, error) {
	if !n.inodeDirty.Load() {
		return false, nil
	}
	v := n.v
	if err := v.enter(); err != nil {
		return false, nil
	}
	defer v.leave()
	defer v.startHandle()()
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if !n.inodeDirty.Load() {
		return false, nil
	}
	if err := n.commitLocked(nil); err != nil {
		return false, err
	}
	return true, nil
}

var _ mpage.InodeWriter = (*node)(nil)

// unsynced reports whether the node holds changes not yet handed to the
// metadata mapping or the device: dirty data pages or an inode to commit.
func (n *node) unsynced() bool { return n.inodeDirty.Load() || n.m.DirtyPages() > 0 }

// readable says whether the node's data can be read.
func (n *node) readable() error {
	switch {
	case n.inode().Flags&FlagEncrypt != 0:
		return fmt.Errorf("%w: inode %d is encrypted", ErrUnsupported, n.ino)
	case n.inode().Flags&FlagCompr != 0:
		return fmt.Errorf("%w: inode %d is compressed", ErrUnsupported, n.ino)
	}
	return nil
}

// readAt reads the node's data through its mapping. A mapper failure
// (corrupt metadata) comes from the engine as a MapError wrapped with EIO,
// for the page it failed only, so errors.Is sees both.
func (n *node) readAt(b []byte, off int64) (int, error) {
	k, err := n.m.ReadAt(b, off)
	if err != nil && err != io.EOF {
		return k, fmt.Errorf("ext: inode %d: read at %d: %w", n.ino, off, err)
	}
	return k, err
}

// readlinkNode returns a symbolic link's target: from i_block (fast), the
// inline data, or its data block.
func (v *Volume) readlinkNode(n *node) (string, error) {
	in := n.inode()
	if err := n.readable(); err != nil {
		return "", err
	}
	if in.Size == 0 || in.Size >= maxSymlinkLen {
		return "", fmt.Errorf("%w: symbolic link inode %d: target of %d bytes", ErrCorrupt, in.Ino, in.Size)
	}
	if v.isFastSymlink(in) {
		return string(in.Block[:in.Size]), nil
	}
	buf := make([]byte, in.Size)
	k, err := n.readAt(buf, 0)
	if err != nil && !(err == io.EOF && k == len(buf)) {
		return "", err
	}
	return string(buf), nil
}

// File is an open regular file. It is safe for concurrent use; several
// Files of one inode share its pages.
type File struct {
	v      *Volume
	n      *node
	write  bool // opened by OpenWrite or Create
	closed atomic.Bool
}

// ReadAt reads len(b) bytes at off through the engine: io.EOF when the
// read reaches past the end of the file.
func (f *File) ReadAt(b []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, ErrClosed
	}
	if err := f.v.enter(); err != nil {
		return 0, err
	}
	defer f.v.leave()
	return f.n.readAt(b, off)
}

// Size is the file's size in bytes.
func (f *File) Size() int64 { return f.n.m.Size() }

// Ino is the file's inode number.
func (f *File) Ino() uint32 { return f.n.ino }

// Stat describes the file.
func (f *File) Stat() FileInfo { return infoOf("", f.n.inode()) }

// Mapping is the file's data mapping (its page cache). Every File open on
// the inode returns the same one.
func (f *File) Mapping() *mpage.Mapping { return f.n.m }

// Close releases the file. Its pages stay cached while the volume keeps
// the inode among its idle files.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return ErrClosed
	}
	f.v.putNode(f.n)
	return nil
}

var _ io.ReaderAt = (*File)(nil)

// freeOrphanHandle frees an unlinked node whose last user is gone, in a
// handle of its own (journaled volumes).
func (v *Volume) freeOrphanHandle(n *node) {
	defer v.orphanFrees.Done()
	stop := v.startHandle()
	defer stop()
	if err := v.freeOrphan(n); err != nil {
		v.logf("ext: freeing unlinked inode %d: %v", n.ino, err)
	}
}
