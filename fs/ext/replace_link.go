package ext

import (
	"errors"
	"fmt"

	"time"
)

// How ReplaceFile puts a staged file in place without a window e2fsck -p
// refuses.
//
// Without a journal every directory block and inode reaches the device on
// its own, in any order within a flush. e2fsck -p repairs by itself a link
// count that disagrees with the names it counts, a name that points at a
// deleted inode (it clears the name), and an orphan-list inode without
// links (it frees it); it refuses an in-use inode that still counts a
// link and that no name points at. A plain rename over a file always has
// such a moment: the staged file loses its staging name in one block
// while gaining its new one in another, and the replaced file loses its
// name before the write that drops its link can be ordered after that
// name's removal. So the replacement goes in three steps, each inode
// keeping a name on the device at every moment:
//
//  1. link (one name-space change, then a sync): the replaced file A gets
//     a second name in StagingDir (oldPrefix), the staged file B keeps its
//     staging name, and path is pointed at B. Link counts go up by one for
//     each (what e2fsck -p sees in between is only a count to correct).
//     Once durable, path names B;
//  2. unlink A and B's extra links (then a sync): A, with no links left,
//     goes on the orphan list and is freed (or at the last close of a
//     File open on it). Its inode write is fresh metadata, flushed before
//     any directory block of that sync;
//  3. drop the staging names (no sync: a crash may leave them, pointing at
//     B, counted one link short, and at a free A, which e2fsck -p clears;
//     CleanStaging removes them either way).
//
// A crash anywhere leaves path naming A or B, whole.

// oldPrefix starts the name a replaced file has in StagingDir while its
// replacement becomes durable.
const oldPrefix = TempPrefix + "old."

// replacement is a ReplaceFile between its steps: the staged file (B,
// named stagedName in StagingDir) and the replaced one (A, named oldName
// there; nil when path was free), both referenced.
type replacement struct {
	staged, old         *node
	stagedName, oldName string
}

// linkOver is step 1 up to the sync: path (comps) is pointed at the staged
// file tmp, which keeps its staging name; the file it named gets a name in
// StagingDir too. check sees what path names before anything changes.
func (v *Volume) linkOver(tmp string, comps []string, check func(*FileInfo) error) (r *replacement, existed bool, err error) {
	if err := v.enter(); err != nil {
		return nil, false, err
	}
	defer v.leave()
	v.ns.Lock()
	r, err = v.linkOverLocked(tmp, comps, check)
	v.ns.Unlock()
	if err != nil {
		return nil, false, err
	}
	v.balanceMeta()
	return r, r.old != nil, nil
}

func (v *Volume) linkOverLocked(tmp string, comps []string, check func(*FileInfo) error) (*replacement, error) {
	stageComps, _, err := splitPath(StagingDir)
	if err != nil {
		return nil, err
	}
	stage, err := v.resolve(stageComps, false)
	if err != nil {
		return nil, err
	}
	defer v.putNode(stage)
	dir, name, err := v.parentAndName(comps)
	if err != nil {
		return nil, err
	}
	defer v.putNode(dir)
	r := &replacement{stagedName: baseName(mustSplit(tmp))}
	if r.staged, err = v.entryNode(stage, r.stagedName); err != nil {
		return nil, err
	}
	if r.old, err = v.replaced(dir, name, check); err != nil {
		v.putNode(r.staged)
		return nil, err
	}
	if err := v.applyLinkOver(stage, dir, name, r); err != nil {
		r.release(v)
		return nil, err
	}
	return r, nil
}

func mustSplit(p string) []string {
	c, _, _ := splitPath(p)
	return c
}

// replaced returns what name in dir names (nil: nothing), referenced,
// after check accepted it; a directory is refused.
func (v *Volume) replaced(dir *node, name string, check func(*FileInfo) error) (*node, error) {
	old, err := v.entryNode(dir, name)
	switch {
	case errors.Is(err, ErrNotFound):
		old, err = nil, nil
	case err != nil:
		return nil, err
	}
	var cur *FileInfo
	if old != nil {
		fi := infoOf(name, old.inode())
		cur = &fi
	}
	if check != nil {
		err = check(cur)
	}
	if err == nil && old != nil {
		switch in := old.inode(); {
		case in.IsDir():
			err = fmt.Errorf("%w: %q", ErrIsDir, name)
		case in.Links >= v.linkMax():
			err = fmt.Errorf("%w: inode %d has %d links", ErrTooManyLinks, old.ino, in.Links)
		default:
			err = v.canFree(old)
		}
	}
	if err != nil && old != nil {
		v.putNode(old)
	}
	return old, err
}

// applyLinkOver makes step 1's changes: the replaced file's staging name
// and link, the staged file's link, then path pointed at it.
func (v *Volume) applyLinkOver(stage, dir *node, name string, r *replacement) error {
	v.markInUse()
	for _, d := range []*node{stage, dir} {
		d.wmu.Lock()
		err := v.dirEditable(d)
		d.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	t := now()
	if r.old != nil {
		r.oldName = oldPrefix + randomSuffix()
		err := v.editDir(stage, t, 0, func() error {
			return v.addEntry(stage, r.oldName, r.old.ino, r.old.inode().Type())
		})
		if err == nil {
			err = addLink(r.old, t)
		}
		if err != nil {
			return err
		}
	}
	if err := addLink(r.staged, t); err != nil {
		return err
	}
	return v.editDir(dir, t, 0, func() error {
		ft := r.staged.inode().Type()
		if r.old != nil {
			_, err := v.setEntry(dir, name, r.staged.ino, ft)
			return err
		}
		return v.addEntry(dir, name, r.staged.ino, ft)
	})
}

// addLink counts one more name of n, at time t.
func addLink(n *node, t time.Time) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	return n.commitLocked(func(in *Inode) {
		in.Links++
		in.Ctime = t
	})
}

// dropExtraLinks is step 2 up to its sync: the replaced file loses both
// its links (path's, now B's, and its staging name's, which goes in step
// 3), the staged file the one of its staging name.
func (v *Volume) dropExtraLinks(r *replacement) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	v.ns.Lock()
	defer v.ns.Unlock()
	t := now()
	var errs []error
	if r.old != nil {
		errs = append(errs, v.dropLink(r.old, t), v.dropLink(r.old, t))
	}
	errs = append(errs, v.dropLink(r.staged, t))
	return errors.Join(errs...)
}

// dropStagingNames is step 3: the staging names go, in the cache only.
func (v *Volume) dropStagingNames(r *replacement) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	v.ns.Lock()
	defer v.ns.Unlock()
	stageComps, _, _ := splitPath(StagingDir)
	stage, err := v.resolve(stageComps, false)
	if err != nil {
		return err
	}
	defer v.putNode(stage)
	names := []string{r.stagedName}
	if r.old != nil {
		names = append(names, r.oldName)
	}
	return v.editDir(stage, now(), 0, func() error {
		for _, name := range names {
			if _, err := v.removeEntry(stage, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// release lets go of r's references.
func (r *replacement) release(v *Volume) {
	v.putNode(r.staged)
	if r.old != nil {
		v.putNode(r.old)
	}
}

// finishReplace runs steps 1 (the sync), 2 and 3 after linkOver, and lets
// go of r. An error after step 1's sync means path names the new file
// durably but the old one may not be freed yet.
func (v *Volume) finishReplace(r *replacement) error {
	defer r.release(v)
	if err := v.syncAllNames(); err != nil {
		// Not durable: drop the extra links anyway (in the cache), so
		// nothing leaks; the next sync writes the whole change.
		return errors.Join(fmt.Errorf("replaced, but not yet durable: %w", err), v.dropExtraLinks(r), v.dropStagingNames(r))
	}
	if err := v.dropExtraLinks(r); err != nil {
		return fmt.Errorf("replaced; freeing the old content: %w", err)
	}
	if err := v.syncAllNames(); err != nil {
		return fmt.Errorf("replaced; freeing the old content: %w", err)
	}
	if err := v.dropStagingNames(r); err != nil {
		return fmt.Errorf("replaced; removing the staging names: %w", err)
	}
	return nil
}

// syncAllNames is syncNamesLocked from outside the volume's lifetime lock.
func (v *Volume) syncAllNames() error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	return v.syncNamesLocked()
}

// unlinkStaged removes name p in StagingDir. A name whose inode is not in
// use (a crash cut a replacement off after freeing the old file, before
// its staging name went) is removed alone.
func (v *Volume) unlinkStaged(p string) error {
	err := v.Unlink(p)
	if !errors.Is(err, ErrCorrupt) {
		return err
	}
	return v.nsOp("unlink", p, func(comps []string) error {
		dir, name, err := v.parentAndName(comps)
		if err != nil {
			return err
		}
		defer v.putNode(dir)
		v.markInUse()
		return v.editDir(dir, now(), 0, func() error {
			_, err := v.removeEntry(dir, name)
			return err
		})
	})
}
