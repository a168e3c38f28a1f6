package ext

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
)

// StagingDir is the directory ReplaceFile writes new content in before it
// renames it into place. Whatever is left there was cut off by a crash:
// CleanStaging removes it. Paths reach it only spelled so (IsStagingPath):
// resolution that enters it through a symbolic link is ErrHidden.
const StagingDir = "/" + stagingName

// stagingName is StagingDir's one component: an entry of the root.
const stagingName = ".mpaged-staging"

// TempPrefix starts the names of ReplaceFile's files in StagingDir.
const TempPrefix = ".mpaged-put."

// copyChunk is how much of a reader one WriteAt hands the engine.
const copyChunk = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// WriteFrom writes what r yields at off and on, a chunk at a time (the
// file grows as needed), and returns how many bytes it wrote. Only a
// clean end of r (io.EOF) ends it well: any other error of r is returned,
// wrapped, after what came before it was written.
func (f *File) WriteFrom(r io.Reader, off int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := fill(r, buf)
		if m > 0 {
			if _, err := f.WriteAt(buf[:m], off+n); err != nil {
				return n, err
			}
			n += int64(m)
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, fmt.Errorf("ext: inode %d: reading the data to write: %w", f.n.ino, rerr)
		}
	}
}

// fill reads into buf until it is full or r fails; unlike io.ReadFull it
// keeps r's own error, so a reader that ends early (io.ErrUnexpectedEOF)
// is not mistaken for one that ends cleanly.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReplaceFile makes the regular file at path hold exactly what r yields,
// atomically and durably. The bytes go to a new file in StagingDir, which
// is made durable (File.Sync), then linked at path in its place; that is
// made durable before ReplaceFile returns. Until then, path shows its old
// content to every reader; an error before it (r failing, ENOSPC, EIO,
// check refusing) removes the new file and leaves path as it was. A crash
// leaves the old content or the new one whole, never a mix and never
// nothing, and never a state e2fsck -p refuses: every inode keeps a name
// on the device until the write that frees it (replace_link.go).
//
// check, if set, sees what path names at the moment of the rename (nil:
// nothing) and may refuse it, so a caller's precondition (an ETag match)
// holds against concurrent replacements. A new file gets perm; a replaced
// one keeps its permission bits. existed says whether the rename replaced
// a file. After the rename, an error means the new content is in place but
// may not be durable yet.
func (v *Volume) ReplaceFile(p string, r io.Reader, perm fs.FileMode, check func(cur *FileInfo) error) (fi FileInfo, existed bool, err error) {
	wrap := func(err error) error { return &fs.PathError{Op: "replace", Path: p, Err: err} }
	comps, trailing, err := splitPath(p)
	switch {
	case err != nil:
		return FileInfo{}, false, wrap(err)
	case len(comps) == 0 || trailing:
		return FileInfo{}, false, wrap(fmt.Errorf("%w %q: names a directory", ErrIsDir, p))
	}
	if cur, err := v.Stat(p); err == nil && !cur.IsDir() {
		perm = cur.Mode.Perm()
	}
	if v.jnl != nil {
		return v.replaceJournaled(p, comps, r, perm, check)
	}
	if err := v.Mkdir(StagingDir, 0o700); err != nil && !errors.Is(err, ErrExist) {
		return FileInfo{}, false, wrap(err)
	}
	// The file p names gets a grave now, made durable by stage's sync
	// (replace_link.go).
	rep := &replacement{}
	if err := v.digGrave(rep, comps); err != nil {
		return FileInfo{}, false, wrap(errors.Join(err, v.finishReplace(rep, false)))
	}
	tmp, err := v.stage(r, perm)
	if err != nil {
		return FileInfo{}, false, wrap(errors.Join(err, v.finishReplace(rep, false)))
	}
	existed, err = v.linkOver(rep, tmp, comps, check)
	if err != nil {
		err = v.unstage(tmp, err)
		return FileInfo{}, false, wrap(errors.Join(err, v.finishReplace(rep, false)))
	}
	if err := v.finishReplace(rep, true); err != nil {
		return FileInfo{}, existed, wrap(fmt.Errorf("replaced: %w", err))
	}
	fi, err = v.Stat(p)
	return fi, existed, err
}

// replaceJournaled is ReplaceFile on a journaled volume: the staged file
// renamed over path in one transaction that also drops the replaced
// inode's last link (renameHolding keeps nothing), and one commit. A
// crash keeps the transaction whole or not at all, so the graves of
// replace_link.go are not needed.
func (v *Volume) replaceJournaled(p string, comps []string, r io.Reader, perm fs.FileMode, check func(cur *FileInfo) error) (fi FileInfo, existed bool, err error) {
	wrap := func(err error) error { return &fs.PathError{Op: "replace", Path: p, Err: err} }
	tmp, err := v.stage(r, perm)
	if err != nil {
		return FileInfo{}, false, wrap(err)
	}
	held, existed, err := v.renameOver(tmp, comps, check)
	if err != nil {
		return FileInfo{}, false, wrap(v.unstage(tmp, err))
	}
	if err := v.syncNamesDropping(held); err != nil { // held is nil: a commit
		return FileInfo{}, existed, wrap(fmt.Errorf("replaced, but not yet durable: %w", err))
	}
	fi, err = v.Stat(p)
	return fi, existed, err
}

// stage writes r to a new file in StagingDir and makes it durable.
func (v *Volume) stage(r io.Reader, perm fs.FileMode) (string, error) {
	if err := v.Mkdir(StagingDir, 0o700); err != nil && !errors.Is(err, ErrExist) {
		return "", err
	}
	tmp := path.Join(StagingDir, TempPrefix+randomSuffix())
	f, err := v.OpenWrite(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, perm)
	if err != nil {
		return "", err
	}
	_, err = f.WriteFrom(r, 0)
	if err == nil {
		// The data reaches the device before the name does: a crash
		// after the rename finds the new bytes, never unwritten blocks.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", v.unstage(tmp, err)
	}
	return tmp, nil
}

// unstage removes a staged file after err stopped its replacement, and
// returns err (with the removal's failure, if any).
func (v *Volume) unstage(tmp string, err error) error {
	if uerr := v.Unlink(tmp); uerr != nil && !errors.Is(uerr, ErrNotFound) {
		return errors.Join(err, fmt.Errorf("ext: staged file %s left behind: %w", tmp, uerr))
	}
	return err
}

// renameOver renames the staged file tmp to comps, running check in the
// same name-space change (renameHolding).
func (v *Volume) renameOver(tmp string, comps []string, check func(*FileInfo) error) (held *node, existed bool, err error) {
	tmpComps, _, err := splitPath(tmp)
	if err != nil {
		return nil, false, err
	}
	return v.renameHolding(tmpComps, comps, false, check)
}

// renameHolding renames oldComps to newComps, running check in the same
// name-space change. A file it replaces keeps its link and comes back
// referenced (held): on the device the old inode stays whole and linked
// until syncNamesDropping, which the caller runs to make the directory
// that names the new file durable. Freeing it earlier could let background writeback
// (or the device's reordering of one sync's writes) put a free or
// unlinked inode on the device while the old directory block still names
// it; e2fsck would then clear the name, and a crash would leave neither
// the old file nor the new one at newComps. A replaced directory (empty)
// is not held.
func (v *Volume) renameHolding(oldComps, newComps []string, mustBeDir bool, check func(*FileInfo) error) (held *node, existed bool, err error) {
	if err := v.enter(); err != nil {
		return nil, false, err
	}
	defer v.leave()
	// With a journal the rename and the replaced file's last link go in
	// one transaction, which a crash keeps whole or not at all: nothing
	// to hold.
	keep := v.jnl == nil
	stop := v.startHandle()
	v.ns.Lock()
	err = v.rename(oldComps, newComps, mustBeDir, renameHooks{keepTarget: keep, check: func(tgt *node) error {
		var cur *FileInfo
		if tgt != nil {
			fi := infoOf(baseName(newComps), tgt.inode())
			cur = &fi
			existed = true
		}
		if check != nil {
			if err := check(cur); err != nil {
				return err
			}
		}
		if tgt != nil && !tgt.inode().IsDir() && keep {
			v.holdNode(tgt)
			held = tgt
		}
		return nil
	}})
	v.ns.Unlock()
	stop()
	if err != nil {
		if held != nil {
			v.putNode(held)
		}
		return nil, false, err
	}
	v.balanceMeta()
	return held, existed, nil
}

// syncNamesDropping makes a rename that replaced held durable, and drops
// the link renameHolding kept on held (putting it on the orphan list; it
// is freed now, or at the last close of a File still open on it) once the
// directory that no longer names it is on the device: after the
// directories are written and the device flushed, in the same sync's
// metadata. A crash before that flush finds held whole under its old name
// (or the new file there); one after it finds held without links, on the
// orphan list, which e2fsck -p and Open release by themselves. What is
// left: a crash between the flush and the inode's write finds held
// linked and nameless, which e2fsck -p refuses. held may be nil (nothing
// was replaced: a plain sync). held's reference is let go either way.
func (v *Volume) syncNamesDropping(held *node) error {
	if err := v.enter(); err != nil {
		if held != nil {
			v.putNode(held)
		}
		return err
	}
	defer v.leave()
	if held == nil {
		return v.syncNamesLocked()
	}
	dropped := false
	err := v.syncNamesThen(func() error {
		if err := v.cfg.Device.Flush(); err != nil {
			return fmt.Errorf("ext: %w", err)
		}
		dropped = true
		return v.dropLink(held, now())
	})
	if !dropped {
		// The directory may not be durable: held keeps its link in the
		// cache until the next sync could write both, and is dropped
		// now so it is not leaked (its inode write may still reach the
		// device first: e2fsck -p then clears the stale name).
		if derr := v.dropLink(held, now()); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	v.putNode(held)
	return err
}

// syncNames makes the name space durable (syncNamesLocked) from outside
// the volume's lifetime lock.
func (v *Volume) syncNames() error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.leave()
	return v.syncNamesLocked()
}

// CleanStaging removes StagingDir with whatever is in it, and returns how
// many files it removed: at the start of a session, what a crash cut off;
// at its end, the empty directory. No ReplaceFile may run meanwhile (the
// caller holds the volume for writing and has not started serving, or has
// stopped).
func (v *Volume) CleanStaging() (int, error) {
	ents, err := v.ReadDir(StagingDir)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if err := v.unlinkStaged(path.Join(StagingDir, e.Name)); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if len(errs) == 0 {
		if err := v.Rmdir(StagingDir); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
