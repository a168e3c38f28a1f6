package ext

import (
	"errors"
	"fmt"
	"path"
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
// name's removal. So the replacement goes in steps, each inode keeping a
// name on the device at every moment:
//
//  0. the file path names gets a second name in StagingDir (a grave,
//     oldPrefix) and one more link, made durable by the staging sync;
//  1. path is pointed at the staged file B, which keeps its staging name
//     and gets one more link (then a sync). If path names another file
//     by then (a concurrent replacement), that one gets a grave first,
//     made durable by a sync of its own. Once durable, path names B;
//  2. every grave's file loses its grave's link, the replaced one also
//     path's, B its staging name's (then a sync): the replaced file, with
//     no links left, goes on the orphan list and is freed (or at the last
//     close of a File open on it), its inode write fresh metadata, flushed
//     before any directory block of that sync;
//  3. the graves and the staging name go (no sync: a crash may leave them,
//     pointing at B, counted one link short, and at a free inode, which
//     e2fsck -p clears; CleanStaging removes them either way).
//
// A crash anywhere leaves path naming the old file or B, whole.

// oldPrefix starts the name a replaced file has in StagingDir while its
// replacement becomes durable.
const oldPrefix = TempPrefix + "old."

// grave is a second name, in StagingDir, of a file a replacement may
// unlink, and the file, referenced.
type grave struct {
	n    *node
	name string
}

// replacement is a ReplaceFile between its steps: the staged file (B,
// named stagedName in StagingDir), the graves dug for it and the file it
// replaced (one of the graves' nodes; nil when path was free).
type replacement struct {
	staged     *node
	stagedName string
	graves     []grave
	old        *node
}

// errNeedGrave: the file path names has no durable grave yet.
var errNeedGrave = errors.New("ext: the replaced file needs a durable grave first")

// stagingDir resolves StagingDir, referenced.
func (v *Volume) stagingDir() (*node, error) {
	comps, _, err := splitPath(StagingDir)
	if err != nil {
		return nil, err
	}
	return v.resolve(comps, false)
}

// digGrave is step 0: the regular file comps names (if any) gets a grave.
// Nothing to do for a free name or a directory (linkOver refuses it).
func (v *Volume) digGrave(r *replacement, comps []string) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	v.ns.Lock()
	defer v.ns.Unlock()
	dir, name, err := v.parentAndName(comps)
	if err != nil {
		return err
	}
	defer v.putNode(dir)
	cur, err := v.entryNode(dir, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.inode().IsDir() || cur.inode().Links >= v.linkMax()-1 {
		v.putNode(cur)
		return nil
	}
	return v.addGrave(r, cur)
}

// addGrave gives n (referenced; the reference goes to r) a grave. The
// caller holds v.ns.
func (v *Volume) addGrave(r *replacement, n *node) error {
	stage, err := v.stagingDir()
	if err != nil {
		v.putNode(n)
		return err
	}
	defer v.putNode(stage)
	v.markInUse()
	g := grave{n: n, name: oldPrefix + randomSuffix()}
	t := now()
	err = v.editDir(stage, t, 0, func() error {
		if err := v.dirEditable(stage); err != nil {
			return err
		}
		return v.addEntry(stage, g.name, n.ino, n.inode().Type())
	})
	if err != nil {
		v.putNode(n)
		return err
	}
	r.graves = append(r.graves, g)
	return addLink(n, t)
}

// hasGrave says whether n has a grave in r.
func (r *replacement) hasGrave(n *node) bool {
	for _, g := range r.graves {
		if g.n == n {
			return true
		}
	}
	return false
}

// linkOver is step 1 up to its sync: path (comps) is pointed at the
// staged file tmp, which keeps its staging name. check sees what path
// names in the same name-space change. A file path names without a
// durable grave gets one, synced, and the step is tried again.
func (v *Volume) linkOver(r *replacement, tmp string, comps []string, check func(*FileInfo) error) (existed bool, err error) {
	r.stagedName = path.Base(tmp)
	for {
		err = v.linkOverOnce(r, comps, check)
		if !errors.Is(err, errNeedGrave) {
			return r.old != nil, err
		}
		if err := v.syncAllNames(); err != nil {
			return false, err
		}
	}
}

func (v *Volume) linkOverOnce(r *replacement, comps []string, check func(*FileInfo) error) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	v.ns.Lock()
	err := v.linkOverLocked(r, comps, check)
	v.ns.Unlock()
	if err == nil {
		v.balanceMeta()
	}
	return err
}

func (v *Volume) linkOverLocked(r *replacement, comps []string, check func(*FileInfo) error) error {
	stage, err := v.stagingDir()
	if err != nil {
		return err
	}
	defer v.putNode(stage)
	dir, name, err := v.parentAndName(comps)
	if err != nil {
		return err
	}
	defer v.putNode(dir)
	if r.staged == nil {
		if r.staged, err = v.entryNode(stage, r.stagedName); err != nil {
			return err
		}
	}
	old, err := v.replaced(dir, name, check)
	if err != nil {
		return err
	}
	if old != nil {
		if !r.hasGrave(old) {
			// Dug now, durable after linkOver's sync.
			if err := v.addGrave(r, old); err != nil {
				return err
			}
			return errNeedGrave
		}
		v.putNode(old) // r.graves holds it
	}
	r.old = old
	return v.applyLinkOver(dir, name, r)
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

// applyLinkOver makes step 1's changes: the staged file's link, then path
// pointed at it.
func (v *Volume) applyLinkOver(dir *node, name string, r *replacement) error {
	v.markInUse()
	dir.wmu.Lock()
	err := v.dirEditable(dir)
	dir.wmu.Unlock()
	if err != nil {
		return err
	}
	t := now()
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

// dropExtraLinks is step 2 up to its sync: each grave's file loses that
// link, the replaced file also path's, the staged file (when linked at
// path) its staging name's. linked says whether step 1 happened.
func (v *Volume) dropExtraLinks(r *replacement, linked bool) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	v.ns.Lock()
	defer v.ns.Unlock()
	t := now()
	var errs []error
	if linked && r.old != nil {
		errs = append(errs, v.dropLink(r.old, t))
	}
	for _, g := range r.graves {
		errs = append(errs, v.dropLink(g.n, t))
	}
	if linked {
		errs = append(errs, v.dropLink(r.staged, t))
	}
	return errors.Join(errs...)
}

// dropStagingNames is step 3: the graves go, and the staging name if
// path names the staged file; in the cache only.
func (v *Volume) dropStagingNames(r *replacement, linked bool) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	v.ns.Lock()
	defer v.ns.Unlock()
	stage, err := v.stagingDir()
	if err != nil {
		return err
	}
	defer v.putNode(stage)
	var names []string
	for _, g := range r.graves {
		names = append(names, g.name)
	}
	if linked {
		names = append(names, r.stagedName)
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
	if r.staged != nil {
		v.putNode(r.staged)
	}
	for _, g := range r.graves {
		v.putNode(g.n)
	}
}

// finishReplace runs step 1's sync, then steps 2 and 3, and lets go of r.
// linked says whether step 1 happened (else only the graves are undone:
// the replacement failed before it). After step 1, an error means path
// names the new file, durably or not yet, and the old one may not be
// freed yet.
func (v *Volume) finishReplace(r *replacement, linked bool) error {
	defer r.release(v)
	if err := v.syncAllNames(); err != nil {
		// Not durable: drop the extra links anyway (in the cache), so
		// nothing leaks; the next sync writes the whole change.
		return errors.Join(fmt.Errorf("not yet durable: %w", err), v.dropExtraLinks(r, linked), v.dropStagingNames(r, linked))
	}
	if err := v.dropExtraLinks(r, linked); err != nil {
		return fmt.Errorf("freeing the old content: %w", err)
	}
	if err := v.syncAllNames(); err != nil {
		return fmt.Errorf("freeing the old content: %w", err)
	}
	if err := v.dropStagingNames(r, linked); err != nil {
		return fmt.Errorf("removing the staging names: %w", err)
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
