package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// Directory changes: entries are added to and removed from linear
// directory blocks through the directory's own data mapping (where
// lookups read them), one block at a time:
//   - add: the first entry with room after its own name (or a free
//     entry, inode 0, big enough) is split; failing that a block is
//     appended holding the one entry;
//   - remove: the entry's record joins the one before it in its block,
//     or, first in its block, gets inode 0;
//   - with metadata_csum every changed block's tail checksum is redone.
// An htree directory (INDEX_FL) is edited as the linear directory it also
// is, and loses INDEX_FL first, which e2fsck and the kernel accept (its
// index blocks read as empty entries). With metadata_csum every block of a
// linear directory needs the leaf checksum tail, which index blocks lack:
// their last entry (".." in the root, the empty entry spanning an interior
// node) gives up the tail's 12 bytes, and the block is sealed.
// Callers hold v.ns exclusively and the directory's wmu.

// direntAt decodes the entry header at off.
func (v *Volume) direntAt(b []byte, off int) (ino uint32, recLen, nameLen int) {
	le := binary.LittleEndian
	ino = le.Uint32(b[off:])
	recLen = int(le.Uint16(b[off+4:]))
	nameLen = int(b[off+6])
	if !v.sb.HasIncompat(IncompatFiletype) {
		nameLen = int(le.Uint16(b[off+6:]))
	}
	return
}

// putDirent writes an entry header and name at off.
func (v *Volume) putDirent(b []byte, off int, ino uint32, recLen int, name string, ft FileType) {
	le := binary.LittleEndian
	le.PutUint32(b[off:], ino)
	le.PutUint16(b[off+4:], uint16(recLen))
	if v.sb.HasIncompat(IncompatFiletype) {
		b[off+6] = byte(len(name))
		b[off+7] = byte(ft)
	} else {
		le.PutUint16(b[off+6:], uint16(len(name)))
	}
	copy(b[off+direntHeader:], name)
}

// dirLimit is how many leading bytes of a directory block hold entries:
// all of them, or all but the checksum tail.
func (v *Volume) dirLimit() int {
	if v.sb.MetadataCsum() {
		return v.sb.BlockSize - direntTailLen
	}
	return v.sb.BlockSize
}

// sealDirBlock writes the checksum tail of a directory block of dir.
func (v *Volume) sealDirBlock(dir *node, b []byte) {
	if !v.sb.MetadataCsum() {
		return
	}
	in := dir.inode()
	top := len(b) - direntTailLen
	le := binary.LittleEndian
	t := b[top:]
	le.PutUint32(t, 0)
	le.PutUint16(t[4:], direntTailLen)
	t[6], t[7] = 0, direntTailType
	le.PutUint32(t[8:], crc32c(inodeCsumSeed(v.sb, in.Ino, in.Generation), b[:top]))
}

// dirEditable checks that directory dir can be edited here, dropping an
// htree index first where that is allowed.
func (v *Volume) dirEditable(dir *node) error {
	in := dir.inode()
	switch {
	case !in.IsDir():
		return ErrNotDir
	case in.Flags&(FlagInlineData|FlagEncrypt|FlagCasefold) != 0 || dir.wmap == nil:
		return fmt.Errorf("%w: directory inode %d: inline, encrypted or casefolded", ErrUnsupported, in.Ino)
	case in.Flags&FlagIndex != 0:
		if v.sb.MetadataCsum() {
			if err := v.unindexBlocks(dir); err != nil {
				return err
			}
		}
		return dir.commitLocked(func(in *Inode) { in.Flags &^= FlagIndex })
	}
	return nil
}

// unindexBlocks turns directory dir's htree index blocks into leaf blocks
// with a checksum tail (metadata_csum), so the directory reads as linear.
func (v *Volume) unindexBlocks(dir *node) error {
	bs := v.sb.BlockSize
	b := v.getBlockBuf()
	defer v.putBlockBuf(b)
	for blk := int64(0); blk < dir.m.Size()/int64(bs); blk++ {
		if err := v.readDirBlock(dir, b, blk); err != nil {
			return err
		}
		if hasDirentTail(b) || allZero(b) {
			continue
		}
		if _, ok := dxCountOffset(b); !ok {
			return fmt.Errorf("%w: directory inode %d block %d: neither a leaf nor an index block", ErrCorrupt, dir.ino, blk)
		}
		// The entry that runs to the end of the block.
		off := 0
		for {
			_, rl, _ := v.direntAt(b, off)
			if rl < direntHeader || off+rl > bs {
				return fmt.Errorf("%w: directory inode %d index block %d: entry at %d", ErrCorrupt, dir.ino, blk, off)
			}
			if off+rl == bs {
				break
			}
			off += rl
		}
		ino, rl, nl := v.direntAt(b, off)
		used := direntHeader
		if ino != 0 {
			used = direntLen(nl)
		}
		if rl-used < direntTailLen {
			return fmt.Errorf("%w: directory inode %d index block %d: no room for a checksum tail", ErrCorrupt, dir.ino, blk)
		}
		binary.LittleEndian.PutUint16(b[off+4:], uint16(rl-direntTailLen))
		if err := v.writeDirBlock(dir, b, blk); err != nil {
			return err
		}
	}
	return nil
}

// readDirBlock reads block blk of directory dir into b.
func (v *Volume) readDirBlock(dir *node, b []byte, blk int64) error {
	k, err := dir.readAt(b, blk*int64(len(b)))
	if err == io.EOF && k == len(b) {
		err = nil
	}
	return err
}

// writeDirBlock writes block blk of directory dir back, resealed.
func (v *Volume) writeDirBlock(dir *node, b []byte, blk int64) error {
	v.sealDirBlock(dir, b)
	if v.jnl != nil {
		return v.writeDirBlockJournaled(dir, b, blk)
	}
	if _, err := dir.writeAt(b, blk*int64(len(b))); err != nil {
		return err
	}
	return nil
}

// addEntry adds name -> ino (of type ft) to directory dir. The caller has
// checked that name is not there.
func (v *Volume) addEntry(dir *node, name string, ino uint32, ft FileType) error {
	if err := v.dirEditable(dir); err != nil {
		return err
	}
	bs := v.sb.BlockSize
	need := direntLen(len(name))
	limit := v.dirLimit()
	b := v.getBlockBuf()
	defer v.putBlockBuf(b)
	nblocks := dir.m.Size() / int64(bs)
	for blk := int64(0); blk < nblocks; blk++ {
		if err := v.readDirBlock(dir, b, blk); err != nil {
			return err
		}
		if v.sb.MetadataCsum() && !hasDirentTail(b) {
			continue // not a leaf block we can reseal
		}
		for off := 0; off < limit; {
			eino, rl, nl := v.direntAt(b, off)
			if rl < direntMinLen || off+rl > limit {
				return fmt.Errorf("%w: directory inode %d block %d: entry at %d", ErrCorrupt, dir.ino, blk, off)
			}
			used := 0
			if eino != 0 {
				used = direntLen(nl)
			}
			if rl-used >= need {
				if eino != 0 {
					binary.LittleEndian.PutUint16(b[off+4:], uint16(used))
					off += used
					rl -= used
				}
				clear(b[off+direntHeader : off+rl])
				v.putDirent(b, off, ino, rl, name, ft)
				return v.writeDirBlock(dir, b, blk)
			}
			off += rl
		}
	}
	// No room: a new block holding just this entry.
	clear(b)
	v.putDirent(b, 0, ino, limit, name, ft)
	return v.writeDirBlock(dir, b, nblocks)
}

// editEntry finds the live entry name in directory dir and lets edit
// change the block holding it (b; the entry at off, the one before it in
// the block at prev, or -1), which is then written back, resealed. It
// returns the inode the entry named, or ErrNotFound.
func (v *Volume) editEntry(dir *node, name string, edit func(b []byte, off, prev int)) (uint32, error) {
	if err := v.dirEditable(dir); err != nil {
		return 0, err
	}
	bs := v.sb.BlockSize
	limit := v.dirLimit()
	b := v.getBlockBuf()
	defer v.putBlockBuf(b)
	nblocks := dir.m.Size() / int64(bs)
	for blk := int64(0); blk < nblocks; blk++ {
		if err := v.readDirBlock(dir, b, blk); err != nil {
			return 0, err
		}
		if v.sb.MetadataCsum() && !hasDirentTail(b) {
			continue
		}
		prev := -1
		for off := 0; off < limit; {
			eino, rl, nl := v.direntAt(b, off)
			if rl < direntMinLen || off+rl > limit {
				return 0, fmt.Errorf("%w: directory inode %d block %d: entry at %d", ErrCorrupt, dir.ino, blk, off)
			}
			if eino != 0 && nl == len(name) && string(b[off+direntHeader:off+direntHeader+nl]) == name {
				edit(b, off, prev)
				return eino, v.writeDirBlock(dir, b, blk)
			}
			prev = off
			off += rl
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrNotFound, name)
}

// removeEntry removes name from directory dir and returns the inode it
// named.
func (v *Volume) removeEntry(dir *node, name string) (uint32, error) {
	return v.editEntry(dir, name, func(b []byte, off, prev int) {
		_, rl, _ := v.direntAt(b, off)
		if prev >= 0 {
			_, prl, _ := v.direntAt(b, prev)
			binary.LittleEndian.PutUint16(b[prev+4:], uint16(prl+rl))
			clear(b[off : off+rl])
		} else {
			binary.LittleEndian.PutUint32(b[off:], 0)
		}
	})
}

// setEntry points the entry name of directory dir at inode ino of type ft,
// in place, and returns the inode it named before.
func (v *Volume) setEntry(dir *node, name string, ino uint32, ft FileType) (uint32, error) {
	return v.editEntry(dir, name, func(b []byte, off, _ int) {
		binary.LittleEndian.PutUint32(b[off:], ino)
		if v.sb.HasIncompat(IncompatFiletype) {
			b[off+7] = byte(ft)
		}
	})
}

// dirEmpty reports whether directory dir holds nothing but "." and "..".
func (v *Volume) dirEmpty(dir *node) (bool, error) {
	empty := true
	err := v.walkDir(dir, func(name []byte, _ uint32, _ FileType) error {
		if s := string(name); s != "." && s != ".." {
			empty = false
			return errStop
		}
		return nil
	})
	return empty, err
}

// fileTypeOfMode is the directory entry type for a mode.
func fileTypeOfMode(mode uint16) FileType { return typeOfMode(mode) }

// createInode allocates and writes a new inode of the given mode in
// directory dir and returns its node, referenced.
func (v *Volume) createInode(dir *node, mode uint16) (*node, error) {
	isDir := mode&modeTypeMask == modeDir
	ino, err := v.allocInode(dir.ino, isDir)
	if err != nil {
		return nil, err
	}
	in := v.newInode(ino, mode, now())
	if v.sb.HasIncompat(IncompatExtents) {
		// New files on extent volumes are extent-mapped, as the
		// kernel's ext4 makes them: an empty root leaf in i_block.
		in.Flags |= FlagExtents
		putExtentHeader(in.Block[:], 0, extentRootMax, 0)
	}
	raw, err := v.writeInode(in)
	if err != nil {
		_ = v.freeInode(ino, isDir)
		return nil, err
	}
	in.Raw = raw
	n, err := v.newNode(in)
	if err != nil {
		_ = v.freeInode(ino, isDir)
		return nil, err
	}
	v.mu.Lock()
	if old, ok := v.nodes[ino]; ok {
		// A stale node of a freed inode number: it must not be found.
		v.mu.Unlock()
		_ = n.m.Close()
		return nil, fmt.Errorf("%w: new inode %d is still cached as in use (refs %d)", ErrCorrupt, ino, old.refs)
	}
	n.refs = 1
	v.nodes[ino] = n
	v.mu.Unlock()
	return n, nil
}

// permBits converts fs.FileMode permission bits to i_mode's.
func permBits(perm fs.FileMode) uint16 {
	m := uint16(perm.Perm())
	if perm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if perm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if perm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// createFile makes a new regular file name in dir, returning its node
// referenced. The caller holds v.ns.
func (v *Volume) createFile(dir *node, name string, perm fs.FileMode) (*node, error) {
	v.markInUse()
	dir.wmu.Lock()
	defer dir.wmu.Unlock()
	if err := v.dirEditable(dir); err != nil {
		return nil, err
	}
	n, err := v.createInode(dir, modeRegular|permBits(perm))
	if err != nil {
		return nil, err
	}
	if err := v.addEntry(dir, name, n.ino, TypeRegular); err != nil {
		v.dropNewInode(n, false)
		return nil, err
	}
	t := now()
	if err := dir.commitLocked(func(in *Inode) { in.Mtime, in.Ctime = t, t }); err != nil {
		v.putNode(n)
		return nil, err
	}
	return n, nil
}

// dropNewInode undoes createInode for a node nothing links to yet.
func (v *Volume) dropNewInode(n *node, dir bool) {
	n.wmu.Lock()
	err := v.releaseInode(n, dir)
	n.wmu.Unlock()
	if err != nil {
		v.logf("ext: undoing new inode %d: %v", n.ino, err)
	}
	v.mu.Lock()
	if v.nodes[n.ino] == n {
		delete(v.nodes, n.ino)
	}
	v.mu.Unlock()
	_ = n.m.Close()
}

// releaseInode frees everything inode n holds (data, indirect and xattr
// blocks) and the inode itself, and writes it as deleted (no links, a
// deletion time, no size or blocks). The caller holds n.wmu and has made
// sure nothing else uses n.
func (v *Volume) releaseInode(n *node, dir bool) error {
	if err := n.m.Truncate(0); err != nil {
		return err
	}
	var errs []error
	if n.wmap != nil {
		if err := n.wmap.truncate(0); err != nil {
			errs = append(errs, err)
		}
	}
	in := n.inode()
	var acl uint64
	if in.FileACL != 0 {
		acl = in.FileACL
		if err := v.releaseXattrBlock(in.Ino, acl); err != nil {
			errs = append(errs, err)
		}
	}
	// Off the orphan list first: the commit below overwrites the chain's
	// link in i_dtime with the deletion time.
	if err := v.removeOrphan(n.ino); err != nil {
		errs = append(errs, err)
	}
	t := now()
	dt, _ := encodeTime(t)
	err := n.commitLocked(func(in *Inode) {
		in.Links, in.Size, in.Dtime = 0, 0, dt
		in.Ctime, in.Mtime = t, t
		if acl != 0 {
			in.FileACL = 0
			in.Blocks -= min(in.Blocks, uint64(v.sb.BlockSize/512))
		}
	})
	if err != nil {
		errs = append(errs, err)
	}
	if err := v.freeInode(n.ino, dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// releaseXattrBlock drops inode ino's reference to its extended attribute
// block: the block is freed when it was the last one, else its reference
// count goes down (and its checksum is redone).
func (v *Volume) releaseXattrBlock(ino uint32, blk uint64) error {
	const (
		xattrBlockMagic = 0xEA020000
		hRefcountOff    = 4
		hChecksumOff    = 16
	)
	le := binary.LittleEndian
	last := false
	err := v.updateMeta(blk, func(b []byte) error {
		if le.Uint32(b) != xattrBlockMagic {
			return fmt.Errorf("%w: inode %d: xattr block %d: bad magic %#x", ErrCorrupt, ino, blk, le.Uint32(b))
		}
		refs := le.Uint32(b[hRefcountOff:])
		if refs <= 1 {
			last = true
			return nil
		}
		le.PutUint32(b[hRefcountOff:], refs-1)
		if v.sb.MetadataCsum() {
			var nb [8]byte
			le.PutUint64(nb[:], blk)
			le.PutUint32(b[hChecksumOff:], 0)
			c := crc32c(v.sb.seed, nb[:])
			le.PutUint32(b[hChecksumOff:], crc32c(c, b))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if last {
		v.meta.ForgetBlocks(blk, 1)
		return v.freeBlockRange(blk, 1)
	}
	return nil
}

// freeOrphan frees an inode that was unlinked while open, now that its
// last user is gone.
func (v *Volume) freeOrphan(n *node) error {
	n.wmu.Lock()
	err := v.releaseInode(n, n.inode().IsDir())
	n.wmu.Unlock()
	if cerr := n.m.Close(); err == nil {
		err = cerr
	}
	return err
}

// parentAndName resolves the directory that holds the last component of
// comps, referenced.
func (v *Volume) parentAndName(comps []string) (*node, string, error) {
	if len(comps) == 0 {
		return nil, "", fmt.Errorf("%w: the root directory", ErrInvalidPath)
	}
	dir, err := v.resolve(comps[:len(comps)-1], true)
	if err != nil {
		return nil, "", err
	}
	if !dir.inode().IsDir() {
		v.putNode(dir)
		return nil, "", ErrNotDir
	}
	name := comps[len(comps)-1]
	if err := linkedToStaging(dir, name, comps); err != nil {
		v.putNode(dir)
		return nil, "", err
	}
	return dir, name, nil
}

// linkedToStaging refuses name in dir when it is the staging directory
// and comps did not spell it: comps has no "." or "..", so a parent of
// more than zero components that resolved to the root went through a
// symbolic link (a change of that name would move, remove or replace the
// staging directory).
func linkedToStaging(dir *node, name string, comps []string) error {
	if len(comps) > 1 && IsStagingEntry(dir.ino, name) {
		return fmt.Errorf("%w: %q", ErrHidden, StagingDir)
	}
	return nil
}

// nsOp runs a name-space change on path with v.ns held exclusively,
// wrapping errors as *fs.PathError.
func (v *Volume) nsOp(op, path string, fn func(comps []string) error) error {
	if v.readOnly {
		return &fs.PathError{Op: op, Path: path, Err: v.errReadOnly()}
	}
	comps, _, err := splitPath(path)
	if err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	if err := v.enter(); err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	defer v.leave()
	err = v.nsChange(fn, comps)
	for try := 0; try < noSpaceRetries && errors.Is(err, ErrNoSpace) && v.commitForSpace(); try++ {
		err = v.nsChange(fn, comps) // a failed change undid itself
	}
	if err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	v.balanceMeta()
	return nil
}

// nsChange is one try of nsOp, in a handle of its own.
func (v *Volume) nsChange(fn func(comps []string) error, comps []string) error {
	defer v.startHandle()()
	v.ns.Lock()
	defer v.ns.Unlock()
	return fn(comps)
}

// Mkdir creates the directory path (its parent must exist) with
// permission bits perm.
func (v *Volume) Mkdir(path string, perm fs.FileMode) error {
	return v.nsOp("mkdir", path, func(comps []string) error {
		dir, name, err := v.parentAndName(comps)
		if err != nil {
			return err
		}
		defer v.putNode(dir)
		if _, err := v.lookupIn(dir, name); err == nil {
			return fmt.Errorf("%w: %q", ErrExist, name)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		v.markInUse()
		dir.wmu.Lock()
		defer dir.wmu.Unlock()
		if err := v.dirEditable(dir); err != nil {
			return err
		}
		if dir.inode().Links >= v.linkMax() {
			return fmt.Errorf("%w: directory inode %d has %d links", ErrTooManyLinks, dir.ino, dir.inode().Links)
		}
		n, err := v.createInode(dir, modeDir|permBits(perm))
		if err != nil {
			return err
		}
		n.wmu.Lock()
		err = v.initDir(n, dir.ino)
		n.wmu.Unlock()
		if err == nil {
			err = v.addEntry(dir, name, n.ino, TypeDir)
		}
		if err != nil {
			v.dropNewInode(n, true)
			return err
		}
		v.putNode(n)
		t := now()
		return dir.commitLocked(func(in *Inode) {
			in.Links++
			in.Mtime, in.Ctime = t, t
		})
	})
}

// initDir writes the first block of new directory n: "." and "..".
func (v *Volume) initDir(n *node, parent uint32) error {
	b := v.getBlockBuf()
	defer v.putBlockBuf(b)
	clear(b)
	v.putDirent(b, 0, n.ino, direntMinLen, ".", TypeDir)
	v.putDirent(b, direntMinLen, parent, v.dirLimit()-direntMinLen, "..", TypeDir)
	return v.writeDirBlock(n, b, 0)
}

// Rmdir removes the empty directory path.
func (v *Volume) Rmdir(path string) error {
	return v.nsOp("rmdir", path, func(comps []string) error {
		return v.remove(comps, true)
	})
}

// Unlink removes the name path (not a directory). The file's blocks and
// inode are freed when its last link goes and no File has it open; an open
// file keeps its data until closed.
func (v *Volume) Unlink(path string) error {
	return v.nsOp("unlink", path, func(comps []string) error {
		return v.remove(comps, false)
	})
}

// remove unlinks comps: a directory (rmdir) or anything else (unlink).
func (v *Volume) remove(comps []string, rmdir bool) error {
	dir, name, err := v.parentAndName(comps)
	if err != nil {
		return err
	}
	defer v.putNode(dir)
	n, err := v.entryNode(dir, name)
	if err != nil {
		return err
	}
	defer v.putNode(n)
	isDir := n.inode().IsDir()
	switch {
	case rmdir && !isDir:
		return ErrNotDir
	case !rmdir && isDir:
		return ErrIsDir
	case isDir && (n.ino == rootIno || n.ino == dir.ino):
		return fmt.Errorf("%w: cannot remove %q", ErrInvalidPath, name)
	}
	if isDir {
		if err := v.checkEmpty(n, name); err != nil {
			return err
		}
	}
	if err := v.canFree(n); err != nil {
		return err
	}
	v.markInUse()
	t := now()
	undo, err := v.unlinkFirst(n, t)
	if err != nil {
		return err
	}
	dir.wmu.Lock()
	defer dir.wmu.Unlock()
	if _, err := v.removeEntry(dir, name); err != nil {
		undo()
		return err
	}
	if err := dir.commitLocked(func(in *Inode) {
		if isDir && in.Links > 1 {
			in.Links--
		}
		in.Mtime, in.Ctime = t, t
	}); err != nil {
		return err
	}
	if !isDir && n.inode().Links == 0 {
		return v.freeUnlinked(n) // unlinkFirst dropped the link
	}
	return v.dropLink(n, t)
}

// entryNode returns the node that name in directory dir names,
// referenced. Reserved inodes (but the root) are refused: the writer does
// not move or free them.
func (v *Volume) entryNode(dir *node, name string) (*node, error) {
	ino, err := v.lookupIn(dir, name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		return nil, err
	}
	if ino < v.sb.FirstIno && ino != rootIno {
		return nil, fmt.Errorf("%w: %q is reserved inode %d", ErrUnsupported, name, ino)
	}
	return v.getNode(ino)
}

// checkEmpty fails with ErrNotEmpty unless directory n (named name) holds
// only "." and "..".
func (v *Volume) checkEmpty(n *node, name string) error {
	empty, err := v.dirEmpty(n)
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("%w: %q", ErrNotEmpty, name)
	}
	return nil
}

// canFree says whether the writer can free n's blocks should its last
// link go.
func (v *Volume) canFree(n *node) error {
	if n.wmap == nil && n.inode().Size > 0 && !v.isFastSymlink(n.inode()) {
		return fmt.Errorf("%w: inode %d: freeing a file the writer cannot truncate (inline data?)", ErrUnsupported, n.ino)
	}
	return nil
}

// dropLink takes one of n's links away (all of them for a directory,
// whose "." is the other) after a name of it was removed, at time t. The
// last link gone, n is freed now or, if a File (or another caller) still
// holds it, at its last release. The caller holds one reference to n.
func (v *Volume) dropLink(n *node, t time.Time) error {
	links, err := v.dropLinkCount(n, t)
	if err != nil || links > 0 {
		return err
	}
	return v.freeUnlinked(n)
}

// dropLinkCount is dropLink's inode write: one link less (all for a
// directory) and, the last one gone, n on the orphan list, its inode
// table block fresh metadata (written and flushed before any directory
// block at the next sync). It returns the links left.
func (v *Volume) dropLinkCount(n *node, t time.Time) (uint16, error) {
	isDir := n.inode().IsDir()
	n.wmu.Lock()
	links := n.inode().Links
	if isDir || links <= 1 {
		links = 0
		// The write that drops the last link puts n on the orphan list,
		// and reaches the device before the directory block that drops
		// its name (see orphan.go).
		v.addOrphan(n)
	}
	if links > 0 {
		links--
	}
	err := n.commitLocked(func(in *Inode) {
		in.Links = links
		in.Ctime = t
	})
	n.wmu.Unlock()
	if links == 0 {
		blk, _ := v.inodeLocation(n.ino)
		v.addFresh(blk)
		if herr := v.publishOrphanHead(); err == nil {
			err = herr
		}
	}
	return links, err
}

// freeUnlinked frees n, whose last link is gone, now, or marks it to be
// freed at its last release if a File (or another caller) still holds
// it. The caller holds one reference to n.
func (v *Volume) freeUnlinked(n *node) error {
	isDir := n.inode().IsDir()
	v.mu.Lock()
	if n.refs > 1 {
		n.orphan = true
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	n.wmu.Lock()
	err := v.releaseInode(n, isDir)
	n.wmu.Unlock()
	v.mu.Lock()
	if v.nodes[n.ino] == n {
		n.orphan = false
		delete(v.nodes, n.ino)
	}
	v.mu.Unlock()
	// The caller's reference finds it gone from the volume; its mapping
	// has no pages left.
	if cerr := n.m.Close(); err == nil {
		err = cerr
	}
	return err
}

// unlinkFirst is remove's first step when the name to remove is n's last
// link (not a directory): the inode's write that drops the link is put on
// the device (written, not flushed) before the directory block changes,
// since the directory's page may be written at any moment from then on
// (dirty throttling, background writeback). A cut in between finds the
// name pointing at an inode without links, which e2fsck -p clears by
// itself; the other order left a linked inode without a name, which it
// refuses. undo gives the link back should the entry's removal fail.
// Journal-less volumes only: on a journaled one the remove's handle puts
// the inode and the directory in one transaction (and a synchronous write
// of a pinned block would not write it).
func (v *Volume) unlinkFirst(n *node, t time.Time) (undo func(), err error) {
	if v.jnl != nil || n.inode().IsDir() || n.inode().Links != 1 {
		return func() {}, nil
	}
	if _, err := v.dropLinkCount(n, t); err != nil {
		return nil, err
	}
	blk, _ := v.inodeLocation(n.ino)
	if err := v.meta.SyncBlock(blk); err != nil {
		// Not fatal: the block stays fresh, written before any
		// directory at the next sync, which reports the error.
		v.logf("ext: inode %d: writing it ahead of its unlink: %v", n.ino, err)
	}
	return func() {
		n.wmu.Lock()
		err := n.commitLocked(func(in *Inode) { in.Links = 1 })
		n.wmu.Unlock()
		err = errors.Join(err, v.removeOrphan(n.ino))
		if err != nil {
			v.logf("ext: inode %d: giving its link back: %v", n.ino, err)
		}
	}, nil
}
