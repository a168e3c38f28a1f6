package ext

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/mpaged/mpaged/mpage"
)

// Writing file data.
//
// Blocks are allocated when the data is written into the cache (as ext2's
// write_begin does), not when the engine writes the pages back: WriteAt
// asks the inode's mapper to allocate every hole the write covers, so
// running out of space is an error of the WriteAt that asked for the
// space (ErrNoSpace, wrapping ENOSPC), the layout follows the order of the
// writes (a sequential writer gets contiguous blocks), and the engine's
// writeback finds every block it writes mapped, so its Create calls
// allocate nothing. That includes the holes a write leaves in the pages it
// dirties (blocks smaller than a page: a write past the end of the file,
// or into a sparse one): the engine writes a dirty page whole, mapping
// every block of it inside the file's size, so WriteAt allocates the
// page's other holes inside the size too, and those of the page the old
// size ends in when it grows the file from a later page (pageHoles);
// Truncate to a larger size first writes that page back. An
// allocation by writeback would run outside any handle, and on a
// journaled volume its bitmap would join whatever transaction is running
// while the inode pointing at the block commits later: a crash between
// the two commits would leave the block marked in use and owned by no
// inode (or i_blocks short of the tree's blocks). Parts of a newly
// allocated block that the write does not cover are zeroed in the cache
// before the data goes in, so stale device bytes never show through.

// now is the clock for inode times (tests may pin it).
var now = time.Now

// maxFileSize is the largest size n may have: what its mapper addresses,
// and under 2 GiB on revision 0 volumes.
func (n *node) maxFileSize() int64 {
	v := n.v
	max := n.wmap.maxBlocks() << v.blkbits
	if v.sb.RevLevel == revGoodOld {
		max = min(max, maxRev0Size)
	}
	return int64(min(max, 1<<62))
}

// writable checks that n's data can be written.
func (n *node) writable() error {
	v := n.v
	if v.readOnly {
		return v.errReadOnly()
	}
	if n.wmap == nil {
		return fmt.Errorf("%w: inode %d: only files mapped by block pointers or extents can be written", ErrUnsupported, n.ino)
	}
	return n.readable()
}

// allocate makes sure file blocks [first, last] are mapped, allocating
// holes. It returns how many blocks from first are mapped (all of them
// unless an error stopped it) and the runs it allocated.
func (n *node) allocate(first, last uint64) (uint64, [][2]uint64, error) {
	n.allocating.Add(1)
	defer n.allocating.Add(-1)
	var fresh [][2]uint64
	b := first
	for b <= last {
		bm := mpage.BlockMap{Block: b, Len: int(min(last-b+1, 1<<20)), Create: true}
		if err := n.wmap.MapBlocks(&bm); err != nil {
			return b - first, fresh, err
		}
		if bm.Flags&mpage.New != 0 {
			fresh = append(fresh, [2]uint64{b, uint64(bm.Len)})
		}
		b += uint64(max(bm.Len, 1))
	}
	return b - first, fresh, nil
}

// zeroes is a page of zero bytes for padding new blocks.
var zeroes [mpage.PageSize]byte

// writeZero writes zeroes to [from, to) of n's data through its mapping.
func (n *node) writeZero(from, to int64) error {
	for from < to {
		k := min(to-from, int64(len(zeroes)))
		if _, err := n.m.WriteAt(zeroes[:k], from); err != nil {
			return err
		}
		from += k
	}
	return nil
}

// writeAt writes b at off: allocation, padding of new blocks, the data
// through the engine's cache, then the inode (size, times, blocks). The
// caller holds n.wmu.
func (n *node) writeAt(b []byte, off int64) (int, error) {
	v := n.v
	if off < 0 {
		return 0, fmt.Errorf("ext: inode %d: write at negative offset %d", n.ino, off)
	}
	if len(b) == 0 {
		return 0, nil
	}
	limit := n.maxFileSize()
	if off >= limit || int64(len(b)) > limit-off {
		return 0, fmt.Errorf("%w: inode %d: write of %d bytes at %d (limit %d)", ErrTooLarge, n.ino, len(b), off, limit)
	}
	v.markInUse()
	bs := int64(v.sb.BlockSize)
	first, last := uint64(off/bs), uint64((off+int64(len(b))-1)/bs)
	oldSize := n.m.Size()
	mapped, fresh, aerr := n.allocate(first, last)
	end := min(off+int64(len(b)), int64(first+mapped)*bs)
	if end <= off {
		// Not even the first block could be had: nothing changed.
		return 0, fmt.Errorf("write at %d: %w", off, aerr)
	}
	size := max(oldSize, end)
	spans, nspans := n.pageHoles(off, end, oldSize, size)
	for _, span := range spans[:nspans] {
		_, more, err := n.allocate(span[0], span[1])
		fresh = append(fresh, more...)
		if err != nil && aerr == nil {
			// The data goes in, but writeback of its page will ask
			// for the block again.
			aerr = err
		}
	}
	if len(fresh) > 0 {
		n.markInodeDirty()
	}
	if err := n.padFresh(fresh, off, end, size); err != nil {
		return 0, n.writeFailed(off, err)
	}
	if err := n.zeroOldTail(oldSize, off); err != nil {
		return 0, n.writeFailed(off, err)
	}
	k, err := n.m.WriteAt(b[:end-off], off)
	t := now()
	cerr := n.commitLocked(func(in *Inode) {
		in.Size = uint64(n.m.Size())
		in.Mtime, in.Ctime = t, t
	})
	switch {
	case err != nil:
		return k, n.writeFailed(off, err)
	case cerr != nil:
		return k, cerr
	case aerr != nil:
		return k, fmt.Errorf("write at %d: %w", off+int64(k), aerr)
	}
	v.balanceMeta()
	return k, nil
}

// pageHoles returns the file blocks, as inclusive spans, that a write of
// bytes [off, end) must allocate besides the ones it covers, when the
// file's size goes from oldSize to size: the holes inside size that share
// a page with the bytes written, and, when the write grows the file from
// a later page, those of the page oldSize ends in (it may be dirty, and
// its blocks past oldSize come inside size). The engine writes a dirty
// page whole, so writeback would allocate any of them, outside the
// write's handle. The spans are spans[:k] (an array: no allocation).
func (n *node) pageHoles(off, end, oldSize, size int64) (spans [3][2]uint64, k int) {
	bs, ps := int64(n.v.sb.BlockSize), int64(mpage.PageSize)
	perPage := uint64(max(ps/bs, 1))
	first, last := uint64(off/bs), uint64((end-1)/bs)
	lastIn := uint64((size - 1) / bs)
	add := func(from, to uint64) {
		if from <= to {
			spans[k] = [2]uint64{from, to}
			k++
		}
	}
	if oldSize%ps != 0 && oldSize/ps < off/ps {
		// The page is dirtied (its new blocks zeroed): all of it inside
		// size, holes inside oldSize too (a Truncate may have left them).
		from := uint64(oldSize/bs) &^ (perPage - 1)
		add(from, min(from|(perPage-1), lastIn))
	}
	if head := first &^ (perPage - 1); head < first {
		add(head, first-1)
	}
	if tail := min(last|(perPage-1), lastIn); last < tail {
		add(last+1, tail)
	}
	return spans, k
}

// padFresh zeroes, in the cache, the parts of the new blocks (fresh runs
// of file blocks) that the write of [off, end) does not cover, up to size
// (the file's size after the write): their device bytes are not the
// file's. Parts past the old size are zeroed too rather than left to the
// zeroes of the page's tail: a block of the page that the write does not
// touch is written only because the page is.
func (n *node) padFresh(fresh [][2]uint64, off, end, size int64) error {
	bs := int64(n.v.sb.BlockSize)
	for _, r := range fresh {
		for fb := r[0]; fb < r[0]+r[1]; fb++ {
			bstart, bend := int64(fb)*bs, min(int64(fb+1)*bs, size)
			if hi := min(bend, off); bstart < hi {
				if err := n.writeZero(bstart, hi); err != nil {
					return err
				}
			}
			if lo := max(bstart, end); lo < bend {
				if err := n.writeZero(lo, bend); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// zeroOldTail zeroes, in the cache, the bytes of the block the old size
// ends in from there to the write at off (when it starts past the old
// size): they must read as zeroes, and the device may hold others there.
// A crash whose replay took the size back (an extension not committed,
// its data written already) leaves those bytes past the end, and the
// block is read back with them; only new blocks are padded (padFresh).
// The block is mapped: pageHoles allocated every block of its page inside
// the new size.
func (n *node) zeroOldTail(oldSize, off int64) error {
	bs := int64(n.v.sb.BlockSize)
	if off <= oldSize || oldSize%bs == 0 {
		return nil
	}
	return n.writeZero(oldSize, min(off, (oldSize/bs+1)*bs))
}

func (n *node) writeFailed(off int64, err error) error {
	return fmt.Errorf("ext: inode %d: write at %d: %w", n.ino, off, err)
}

// truncate sets n's size. Shrinking drops the cached pages past the new
// end (zeroing the tail of the last block on the device too) and frees
// the blocks past it; growing leaves a hole. The caller holds n.wmu.
func (n *node) truncate(size int64) error {
	v := n.v
	if size < 0 {
		return fmt.Errorf("ext: inode %d: truncate to %d", n.ino, size)
	}
	if size > n.maxFileSize() {
		return fmt.Errorf("%w: inode %d: truncate to %d (limit %d)", ErrTooLarge, n.ino, size, n.maxFileSize())
	}
	v.markInUse()
	old := n.m.Size()
	var ferr error // fillEndPage's
	switch {
	case size < old:
		if err := n.m.Truncate(size); err != nil {
			return fmt.Errorf("ext: inode %d: truncate to %d: %w", n.ino, size, err)
		}
		bs := int64(v.sb.BlockSize)
		if err := n.wmap.truncate(uint64((size + bs - 1) / bs)); err != nil {
			return err
		}
		if err := n.fillEndPage(size); err != nil {
			// The size has changed already: commit it. Out of space,
			// writeback asks for the holes again (counted, logged).
			ferr = fmt.Errorf("ext: inode %d: truncate to %d: %w", n.ino, size, err)
		}
	case size > old:
		if err := n.growTo(old, size); err != nil {
			return fmt.Errorf("ext: inode %d: truncate to %d: %w", n.ino, size, err)
		}
	}
	t := now()
	err := n.commitLocked(func(in *Inode) {
		in.Size = uint64(size)
		in.Mtime, in.Ctime = t, t
	})
	if err == nil && ferr != nil && !errors.Is(ferr, ErrNoSpace) {
		err = ferr
	}
	return err
}

// fillEndPage allocates, after a shrink to size, the holes before size in
// the page size ends in, when the engine's Truncate dirtied that page (the
// block size ends in is mapped: its tail was zeroed, on the device too).
// The engine writes a dirty page whole, so writeback would allocate them
// outside this handle (see the top of this file). The new blocks are
// zeroed in the cache: a hole reads as zeroes, their device bytes are not
// the file's.
func (n *node) fillEndPage(size int64) error {
	bs, ps := int64(n.v.sb.BlockSize), int64(mpage.PageSize)
	if size%ps == 0 || size%bs == 0 || bs >= ps {
		return nil
	}
	end := uint64(size / bs)
	bm := mpage.BlockMap{Block: end, Len: 1}
	if err := n.wmap.MapBlocks(&bm); err != nil {
		return err
	}
	if bm.Flags&mpage.Mapped == 0 {
		return nil // a hole: the engine zeroed the cached page at most
	}
	from := end &^ uint64(ps/bs-1)
	if from == end {
		return nil
	}
	_, fresh, err := n.allocate(from, end-1)
	if len(fresh) > 0 {
		n.markInodeDirty()
		if perr := n.padFresh(fresh, size, size, size); err == nil {
			err = perr
		}
	}
	return err
}

// growTo raises n's size from old to size (a Truncate), leaving a hole.
// The bytes of the block old ends in past old must read as zeroes, and
// the device may hold others there (see zeroOldTail): the engine's
// Truncate to the same size zeroes them, in the page and, for a mapped
// block, on the device (the page dirtied). Then that page goes to the
// device, at the old size: once the size covers its blocks past the old
// end (holes), writeback of it dirty would allocate them outside this
// handle (see the top of this file). Clean, it stays so until a write
// dirties it, and the write allocates them. This writeback runs inside
// the handle, before the inode's commit, so what it may allocate (a hole
// before old in the page) is counted as node.allocate's.
func (n *node) growTo(old, size int64) error {
	if ps := int64(mpage.PageSize); old%ps != 0 {
		n.allocating.Add(1)
		err := n.m.Truncate(old)
		if err == nil {
			err = n.m.WriteAndWait(old&^(ps-1), old-1)
		}
		n.allocating.Add(-1)
		if err != nil {
			return err
		}
	}
	n.m.SetSize(size)
	return nil
}

// syncData writes n's dirty pages and waits for them, then commits its
// inode if allocation during writeback changed it. The metadata itself is
// the caller's to write.
func (n *node) syncData() error {
	err := n.m.WriteAndWait(0, -1)
	if err != nil {
		// A mapper failure (ENOSPC, corrupt metadata) is in err, as the
		// MapError of the page it failed.
		err = fmt.Errorf("ext: inode %d: %w", n.ino, err)
	}
	if n.inodeDirty.Load() {
		stop := n.v.startHandle()
		n.wmu.Lock()
		if n.inodeDirty.Load() {
			if cerr := n.commitLocked(nil); cerr != nil && err == nil {
				err = cerr
			}
		}
		n.wmu.Unlock()
		stop()
	}
	return err
}

// WriteAt writes b at off (the file grows as needed), allocating blocks
// for holes as it goes. A short count comes with the error that stopped
// it: ErrNoSpace (wrapping syscall.ENOSPC) when the volume is full. On a
// journaled volume, space that a transaction not yet committed frees
// (a file deleted, truncated or replaced just before) is had by
// committing it and writing the rest (commitForSpace). The data is
// durable after Sync.
func (f *File) WriteAt(b []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, ErrClosed
	}
	if !f.write {
		return 0, fmt.Errorf("ext: inode %d: %w", f.n.ino, errNotOpenForWriting)
	}
	if err := f.v.enter(); err != nil {
		return 0, err
	}
	defer f.v.leave()
	k, err := f.writeAtInHandle(b, off)
	for try := 0; try < noSpaceRetries && k < len(b) && errors.Is(err, ErrNoSpace) && f.v.commitForSpace(); try++ {
		var more int
		more, err = f.writeAtInHandle(b[k:], off+int64(k))
		k += more
	}
	return k, err
}

// writeAtInHandle is one try of WriteAt, in a handle of its own.
func (f *File) writeAtInHandle(b []byte, off int64) (int, error) {
	defer f.v.startHandle()()
	f.n.wmu.Lock()
	defer f.n.wmu.Unlock()
	return f.n.writeAt(b, off)
}

var errNotOpenForWriting = errors.New("file not open for writing")

// Truncate changes the file's size: blocks past a smaller size are freed,
// a larger size leaves a hole.
func (f *File) Truncate(size int64) error {
	if f.closed.Load() {
		return ErrClosed
	}
	if !f.write {
		return fmt.Errorf("ext: inode %d: %w", f.n.ino, errNotOpenForWriting)
	}
	if err := f.v.enter(); err != nil {
		return err
	}
	defer f.v.leave()
	defer f.v.startHandle()()
	f.n.wmu.Lock()
	defer f.n.wmu.Unlock()
	return f.n.truncate(size)
}

// Sync makes the file's data and the metadata that reaches it durable: its
// dirty pages are written and waited for, then those of every changed
// directory (the entries naming it), then every dirty metadata block (its
// inode, indirect blocks, bitmaps, group descriptors, the superblock),
// then the device's cache is flushed. It waits for a name-space change in
// progress (Create, Unlink, Mkdir, Rename) to finish, so the image it
// leaves never holds half of one. A write error (EIO,
// ENOSPC from the device) is returned, and again by later Syncs until the
// data has reached the device.
func (f *File) Sync() error {
	if f.closed.Load() {
		return ErrClosed
	}
	if err := f.v.enter(); err != nil {
		return err
	}
	defer f.v.leave()
	if f.v.readOnly {
		return nil
	}
	// The file's data first, outside the name-space lock: a long
	// write-back must not hold up lookups (a waiting Create would make
	// every later reader of the lock wait behind it).
	err := f.n.syncData()
	// The directory entries that name the file live in directory data:
	// write every changed directory too (a superset of the file's path,
	// and directories change far less than file data), then the
	// metadata. A name-space change in progress (a Create, a Rename) is
	// not half written: the ns lock makes this wait for it to finish.
	if nerr := f.v.syncNamesLocked(); err == nil {
		err = nerr
	}
	return err
}

// syncDirs writes back every cached directory with dirty pages or an
// inode to commit.
func (v *Volume) syncDirs() error {
	v.mu.Lock()
	var dirs []*node
	for _, n := range v.nodes {
		if n.inode().IsDir() && n.unsynced() {
			v.holdLocked(n)
			dirs = append(dirs, n)
		}
	}
	v.mu.Unlock()
	var errs []error
	for _, n := range dirs {
		if err := n.syncData(); err != nil {
			errs = append(errs, err)
		}
		v.putNode(n)
	}
	return errors.Join(errs...)
}

// OpenWrite opens the regular file at path for reading and writing. flag
// takes os.O_CREATE (create it with permission bits perm if missing; its
// directory must exist), os.O_EXCL (with O_CREATE: fail with ErrExist if it
// exists) and os.O_TRUNC (cut it to zero bytes); other bits are ignored.
func (v *Volume) OpenWrite(path string, flag int, perm fs.FileMode) (*File, error) {
	if v.readOnly {
		return nil, &fs.PathError{Op: "open", Path: path, Err: v.errReadOnly()}
	}
	comps, trailing, err := splitPath(path)
	if err == nil && (len(comps) == 0 || trailing) {
		err = fmt.Errorf("%w %q: names a directory", ErrIsDir, path)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if err := v.enter(); err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer v.leave()
	f, err := v.openWriteInHandle(comps, flag, perm)
	for try := 0; try < noSpaceRetries && errors.Is(err, ErrNoSpace) && v.commitForSpace(); try++ {
		f, err = v.openWriteInHandle(comps, flag, perm) // a failed create undid itself
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// openWriteInHandle is one try of OpenWrite, in a handle of its own.
func (v *Volume) openWriteInHandle(comps []string, flag int, perm fs.FileMode) (*File, error) {
	defer v.startHandle()()
	return v.openWrite(comps, flag, perm)
}

func (v *Volume) openWrite(comps []string, flag int, perm fs.FileMode) (*File, error) {
	name := comps[len(comps)-1]
	v.ns.Lock()
	defer v.ns.Unlock()
	dir, err := v.resolve(comps[:len(comps)-1], true)
	if err != nil {
		return nil, err
	}
	defer v.putNode(dir)
	if !dir.inode().IsDir() {
		return nil, ErrNotDir
	}
	if err := linkedToStaging(dir, name, comps); err != nil {
		return nil, err
	}
	var n *node
	_, err = v.lookupIn(dir, name)
	switch {
	case err == nil:
		if flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0 {
			return nil, fmt.Errorf("%w: %q", ErrExist, name)
		}
		n, err = v.resolve(comps, true) // follows a symbolic link
		if err != nil {
			return nil, err
		}
	case errors.Is(err, ErrNotFound) && flag&os.O_CREATE != 0:
		if n, err = v.createFile(dir, name, perm); err != nil {
			return nil, err
		}
	default:
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		return nil, err
	}
	switch n.inode().Type() {
	case TypeRegular:
	case TypeDir:
		v.putNode(n)
		return nil, ErrIsDir
	default:
		v.putNode(n)
		return nil, fmt.Errorf("%w: %s", ErrNotRegular, n.inode().Type())
	}
	if err := n.writable(); err != nil {
		v.putNode(n)
		return nil, err
	}
	if flag&os.O_TRUNC != 0 && n.m.Size() > 0 {
		n.wmu.Lock()
		err := n.truncate(0)
		n.wmu.Unlock()
		if err != nil {
			v.putNode(n)
			return nil, err
		}
	}
	return &File{v: v, n: n, write: true}, nil
}

// Create creates the regular file at path, or truncates it if it exists,
// and opens it for writing (os.Create's semantics).
func (v *Volume) Create(path string, perm fs.FileMode) (*File, error) {
	return v.OpenWrite(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, perm)
}

// Sync makes every change made so far durable: the dirty pages of every
// file, then all dirty metadata, then a device cache flush.
func (v *Volume) Sync() error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	if v.readOnly {
		return nil
	}
	if v.jnl != nil {
		return v.syncJournaled(true)
	}
	return v.syncAll()
}

// syncAll writes every file's data (outside the name-space lock, as
// File.Sync does), then the directories and the metadata under it.
func (v *Volume) syncAll() error {
	v.mu.Lock()
	nodes := make([]*node, 0, len(v.nodes))
	for _, n := range v.nodes {
		if !n.inode().IsDir() {
			v.holdLocked(n)
			nodes = append(nodes, n)
		}
	}
	v.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		if err := n.syncData(); err != nil {
			errs = append(errs, err)
		}
		v.putNode(n)
	}
	if err := v.syncNamesLocked(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncNamesLocked writes every changed directory, then the metadata, then
// flushes the device, holding the name-space lock shared so the image it
// leaves never holds half of a Create, Unlink, Mkdir or Rename. The caller
// is inside the volume's lifetime (enter).
func (v *Volume) syncNamesLocked() error { return v.syncNamesThen(nil) }

// syncNamesThen is syncNamesLocked that runs afterDirs (if set) once the
// directories are written, before the metadata: a rename over a file
// drops the replaced inode's link there (syncNamesDropping). On a
// journaled volume afterDirs runs in a handle of its own and one commit
// follows: the journal commits whole changes, no name-space lock needed.
func (v *Volume) syncNamesThen(afterDirs func() error) error {
	if v.jnl != nil {
		var err error
		if afterDirs != nil {
			stop := v.startHandle()
			v.ns.RLock()
			err = afterDirs()
			v.ns.RUnlock()
			stop()
		}
		return errors.Join(err, v.syncJournaled(false))
	}
	v.ns.RLock()
	defer v.ns.RUnlock()
	// What was freed before this point is durable once the flush is
	// done, and may then be reused (quarantine.go).
	gen := v.sealQuarantine()
	if err := v.syncFresh(); err != nil {
		// A metadata page whose write failed earlier keeps the mapping's
		// error until it is written again, which only syncMeta does:
		// without this a sync with fresh blocks could never succeed
		// again after a write error. If writing everything (fresh blocks
		// included, in one flush: their order is lost after a failure)
		// succeeds, go on.
		if merr := v.syncMeta(); merr != nil {
			return err
		}
	}
	err := v.syncDirs()
	if err == nil && afterDirs != nil {
		err = afterDirs()
	}
	if err == nil {
		// Blocks allocated by writers while the directories were
		// written: before the inodes that point at them (nothing to do,
		// no flush, if none).
		err = v.syncFresh()
	}
	if merr := v.syncMeta(); err == nil {
		err = merr
	}
	if err == nil {
		v.releaseQuarantine(gen)
	}
	return err
}

// syncMeta writes the superblock's counts, waits for every dirty metadata
// block to reach the device, and flushes the device's cache.
func (v *Volume) syncMeta() error {
	if err := v.flushSuper(false); err != nil {
		return err
	}
	return v.metaHome()
}

// metaHome waits for every dirty metadata block to reach the device and
// flushes the device's cache.
func (v *Volume) metaHome() error {
	if err := v.meta.WriteAndWait(0, -1); err != nil {
		return fmt.Errorf("ext: metadata: %w", err)
	}
	if err := v.cfg.Device.Flush(); err != nil {
		return fmt.Errorf("ext: %w", err)
	}
	return nil
}
