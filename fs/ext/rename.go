package ext

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Rename.
//
// Rename(old, new) moves the name old to new in one name-space change
// (v.ns held exclusively, so no lookup or listing sees a step of it):
//
//  1. new's entry is pointed at old's inode in place (it existed: the
//     replaced inode loses that link) or added; either way new shows old's
//     file from here on, and showed what it showed before up to here;
//  2. old's entry is removed;
//  3. a directory that changed parents gets its ".." entry pointed at the
//     new parent, and the parents' link counts follow (a replaced
//     directory's ".." link leaves the new parent as the moved one's
//     arrives);
//  4. the replaced inode's link goes; its last link gone, it is freed, or
//     at the last close of a File that still has it open (the orphan
//     machinery of Unlink). A replaced file keeps its link until the
//     directory change is durable (renameHolding), so Rename over a file
//     syncs the name space before it returns, dropping that link (onto
//     the orphan list) once the directories are flushed
//     (syncNamesDropping).
//
// Everything that can refuse the rename is checked before step 1, so a
// refused rename changes nothing (but an htree index dropped from a
// directory it would edit, which stands on its own). Both parents get mtime and ctime, the
// moved inode ctime, as the kernel's ext2 and ext4 do.

// renameArgs is one rename, resolved: the parents (the same node when the
// name stays in its directory), the moved inode and the replaced one (nil
// when the new name was free). All are referenced.
type renameArgs struct {
	oldDir, newDir   *node
	oldName, newName string
	src, tgt         *node
}

// Rename renames oldpath to newpath, as rename(2) does: newpath, if it
// exists, is replaced (a file by a file, a directory by a directory that
// must be empty); a directory cannot move into its own subtree; renaming
// a name onto another link of the same inode does nothing. The replaced
// inode's data stays readable through Files open on it until they close.
// A rename over a file is durable when Rename returns: a crash leaves
// newpath naming the old file or the new one, never neither.
// A symbolic link is renamed itself, not its target; the parents are
// resolved following links. Errors are *os.LinkError wrapping ErrNotFound,
// ErrExist-like sentinels (ErrNotEmpty, ErrIsDir, ErrNotDir), ErrBusy (the
// root), ErrIntoItself, ErrTooManyLinks, ErrInvalidPath, each of which
// errors.Is its syscall errno.
func (v *Volume) Rename(oldpath, newpath string) error {
	wrap := func(err error) error { return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err} }
	if v.readOnly {
		return wrap(v.errReadOnly())
	}
	oldComps, oldTrailing, err := splitPath(oldpath)
	if err != nil {
		return wrap(err)
	}
	newComps, newTrailing, err := splitPath(newpath)
	if err != nil {
		return wrap(err)
	}
	if len(oldComps) == 0 || len(newComps) == 0 {
		return wrap(fmt.Errorf("%w: the root directory cannot be renamed or replaced", ErrBusy))
	}
	held, existed, err := v.renameHolding(oldComps, newComps, oldTrailing || newTrailing, nil)
	if err != nil {
		return wrap(err)
	}
	if held == nil {
		if existed && v.jnl != nil {
			// Journaled: one commit makes the replacement durable.
			if err := v.syncNames(); err != nil {
				return wrap(fmt.Errorf("renamed, but not yet durable: %w", err))
			}
		}
		return nil
	}
	// A replaced file is let go only once the directory that no longer
	// names it is durable (renameHolding), so a crash leaves newpath
	// naming the old file or the new one, never neither.
	if err := v.syncNamesDropping(held); err != nil {
		return wrap(fmt.Errorf("renamed, but not yet durable: %w", err))
	}
	return nil
}

// renameHooks let a caller inside the package (ReplaceFile) shape a
// rename.
type renameHooks struct {
	// check, if set, sees the node the new name holds now (nil when free)
	// before anything changes, and may refuse the rename: a caller's
	// precondition, checked in the same name-space change as the rename
	// it guards.
	check func(tgt *node) error
	// keepTarget leaves a replaced file its link: the caller, which
	// holds it, drops the link (dropLink) once the directory that no
	// longer names it is on the device. A replaced directory is not kept.
	keepTarget bool
}

// rename resolves and checks the rename, then applies it. mustBeDir: a
// path had a trailing slash. The caller holds v.ns exclusively.
func (v *Volume) rename(oldComps, newComps []string, mustBeDir bool, hooks renameHooks) error {
	var r renameArgs
	var err error
	if r.oldDir, r.oldName, err = v.parentAndName(oldComps); err != nil {
		return err
	}
	defer v.putNode(r.oldDir)
	if r.newDir, r.newName, err = v.parentAndName(newComps); err != nil {
		return err
	}
	defer v.putNode(r.newDir)
	if r.src, err = v.entryNode(r.oldDir, r.oldName); err != nil {
		return err
	}
	defer v.putNode(r.src)
	if mustBeDir && !r.src.inode().IsDir() {
		return fmt.Errorf("%w: %q", ErrNotDir, r.oldName)
	}
	switch tgt, err := v.entryNode(r.newDir, r.newName); {
	case err == nil:
		defer v.putNode(tgt)
		if tgt == r.src {
			// Two links of one inode: rename(2) does nothing.
			return nil
		}
		r.tgt = tgt
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if hooks.check != nil {
		if err := hooks.check(r.tgt); err != nil {
			return err
		}
	}
	if err := v.checkRename(&r); err != nil {
		return err
	}
	v.markInUse()
	if err := v.makeEditable(&r); err != nil {
		return err
	}
	// Only a replaced file is kept (renameHolding); a replaced empty
	// directory goes at once.
	keep := hooks.keepTarget && r.tgt != nil && !r.tgt.inode().IsDir()
	return v.applyRename(&r, keep)
}

// checkRename refuses what rename(2) refuses, before anything changes.
func (v *Volume) checkRename(r *renameArgs) error {
	srcDir := r.src.inode().IsDir()
	if srcDir {
		if err := v.checkNotUnder(r.newDir, r.src.ino); err != nil {
			return err
		}
	}
	if t := r.tgt; t != nil {
		switch tgtDir := t.inode().IsDir(); {
		case srcDir && !tgtDir:
			return fmt.Errorf("%w: %q replacing %q", ErrNotDir, r.oldName, r.newName)
		case !srcDir && tgtDir:
			return fmt.Errorf("%w: %q replacing %q", ErrIsDir, r.oldName, r.newName)
		case tgtDir:
			if err := v.checkEmpty(t, r.newName); err != nil {
				return err
			}
		}
		if t.inode().IsDir() || t.inode().Links <= 1 {
			if err := v.canFree(t); err != nil {
				return err
			}
		}
	} else if srcDir && r.newDir != r.oldDir && r.newDir.inode().Links >= v.linkMax() {
		return fmt.Errorf("%w: directory inode %d has %d links", ErrTooManyLinks, r.newDir.ino, r.newDir.inode().Links)
	}
	return nil
}

// makeEditable readies the directories the rename edits (dropping an
// htree index, a change that stands on its own), so that none can refuse
// its edit halfway through.
func (v *Volume) makeEditable(r *renameArgs) error {
	edit := []*node{r.oldDir, r.newDir}
	if r.src.inode().IsDir() && r.newDir != r.oldDir {
		edit = append(edit, r.src)
	}
	for _, d := range edit {
		d.wmu.Lock()
		err := v.dirEditable(d)
		d.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// checkNotUnder fails with ErrIntoItself when directory dir is inode ino
// or lies below it, walking ".." entries up to the root.
func (v *Volume) checkNotUnder(dir *node, ino uint32) error {
	seen := map[uint32]bool{}
	for cur := dir.ino; ; {
		switch {
		case cur == ino:
			return fmt.Errorf("%w: directory inode %d would move below itself (into inode %d)", ErrIntoItself, ino, dir.ino)
		case cur == rootIno:
			return nil
		case seen[cur]:
			return fmt.Errorf("%w: directory inode %d: its \"..\" entries loop", ErrCorrupt, cur)
		}
		seen[cur] = true
		n, err := v.getNode(cur)
		if err != nil {
			return err
		}
		parent, err := v.lookupIn(n, "..")
		v.putNode(n)
		if err != nil {
			return fmt.Errorf("directory inode %d: \"..\": %w", cur, err)
		}
		cur = parent
	}
}

// applyRename makes the checked rename, in the order the comment at the
// top gives. The caller holds v.ns exclusively; each directory's wmu is
// held only for its own edit.
func (v *Volume) applyRename(r *renameArgs, keepTarget bool) error {
	t := now()
	srcDir := r.src.inode().IsDir()
	moved := srcDir && r.newDir != r.oldDir
	// Link count changes of the parents: the moved directory's ".." link
	// goes from the old parent to the new one, a replaced directory's
	// ".." link leaves the new parent.
	oldDelta, newDelta := 0, 0
	if moved {
		oldDelta, newDelta = -1, +1
	}
	if r.tgt != nil && r.tgt.inode().IsDir() {
		newDelta--
	}

	err := v.editDir(r.newDir, t, newDelta, func() error {
		ft := r.src.inode().Type()
		if r.tgt != nil {
			_, err := v.setEntry(r.newDir, r.newName, r.src.ino, ft)
			return err
		}
		return v.addEntry(r.newDir, r.newName, r.src.ino, ft)
	})
	if err != nil {
		return err
	}
	// Within one directory oldDelta is 0: nothing moved between parents.
	err = v.editDir(r.oldDir, t, oldDelta, func() error {
		_, err := v.removeEntry(r.oldDir, r.oldName)
		return err
	})
	if err != nil {
		return err
	}
	r.src.wmu.Lock()
	if moved {
		_, err = v.setEntry(r.src, "..", r.newDir.ino, TypeDir)
	}
	if err == nil {
		err = r.src.commitLocked(func(in *Inode) { in.Ctime = t })
	}
	r.src.wmu.Unlock()
	if err != nil {
		return err
	}
	if r.tgt != nil && !keepTarget {
		return v.dropLink(r.tgt, t)
	}
	return nil
}

// editDir runs edit on directory dir with its wmu held, then commits its
// times (t) and its link count changed by delta (-1, 0 or +1). A link
// count of 1 means "too many to count" (dir_nlink) and stays.
func (v *Volume) editDir(dir *node, t time.Time, delta int, edit func() error) error {
	dir.wmu.Lock()
	defer dir.wmu.Unlock()
	if err := edit(); err != nil {
		return err
	}
	return dir.commitLocked(func(in *Inode) {
		switch {
		case in.Links == 1:
		case delta > 0:
			in.Links++
		case delta < 0:
			in.Links--
		}
		in.Mtime, in.Ctime = t, t
	})
}
