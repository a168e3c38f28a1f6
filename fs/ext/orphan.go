package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// The orphan list.
//
// An inode whose last name is gone but which is not freed yet (a File
// still has it open; or the free is in the cache only) is an orphan. On
// the device such an inode is in use, nameless, and e2fsck -p refuses an
// unattached inode that still counts a link ("UNEXPECTED INCONSISTENCY").
// ext3 and ext4 chain orphans from the superblock: s_last_orphan names
// the first, each orphan's i_dtime the next (0 ends the chain). e2fsck,
// also in preen mode and also without a journal, walks the chain before
// anything else and frees each orphan with no links ("Clearing orphaned
// inode"), or truncates to i_size one that still has links; the kernel
// does the same at mount. Open does it too (releaseOrphans).
//
// So the writer makes an inode an orphan in the same inode write that
// drops its last link (dropLink: i_links_count 0, i_dtime the old head,
// then s_last_orphan this inode), and takes it off the chain before the
// write that frees it (releaseInode). What the device may hold after a
// crash, and what e2fsck -p then does by itself:
//   - the name gone, the inode with no links, on the chain or not: freed
//     (from the chain, or pass 1 takes an inode with no links for deleted
//     and pass 5 fixes the bitmaps);
//   - the name still there, the inode with no links: freed, and the
//     name, which points at a deleted inode, cleared (pass 2). A removal
//     in flight may end either way.
//
// The inode's write thus must not reach the device after the directory
// block that drops its name: a delete lists the inode's table block as
// fresh metadata (addFresh), which a sync writes and flushes before any
// directory; a replaced file's link is dropped only once the directory
// that no longer names it is durable (syncNamesDropping).
//
// The list is mirrored in memory (orphanList), head first: while an inode
// is on it, every write of that inode carries its successor in i_dtime
// (writeInode asks orphanNext), so a commit of an open orphan (its data
// grew) cannot break the chain. Removing an inode that is not the head
// rewrites its predecessor's i_dtime.
type orphanList struct {
	mu sync.Mutex
	// inos is the chain, head (s_last_orphan) first.
	inos []uint32
}

// sLastOrphanOff is s_last_orphan's offset in the superblock.
const sLastOrphanOff = 0xE8

// orphanNext says whether inode ino is on the orphan list and, if so, the
// inode after it (0 at the end). The caller holds orphans.mu.
func (l *orphanList) nextLocked(ino uint32) (next uint32, ok bool) {
	i := slices.Index(l.inos, ino)
	if i < 0 {
		return 0, false
	}
	if i+1 < len(l.inos) {
		next = l.inos[i+1]
	}
	return next, true
}

// addOrphan puts n at the head of the orphan list. The caller holds n.wmu
// and commits n with no links next (that write carries the chain in
// i_dtime); the superblock names n once that commit is in the cache.
func (v *Volume) addOrphan(n *node) {
	v.orphans.mu.Lock()
	defer v.orphans.mu.Unlock()
	if slices.Contains(v.orphans.inos, n.ino) {
		return
	}
	v.orphans.inos = slices.Insert(v.orphans.inos, 0, n.ino)
}

// publishOrphanHead writes the list's head to s_last_orphan. Called after
// the inode write that links the new head to the rest (or the one that
// took the old head off), so the superblock never names an inode whose
// i_dtime does not continue the chain yet.
func (v *Volume) publishOrphanHead() error {
	v.orphans.mu.Lock()
	defer v.orphans.mu.Unlock()
	return v.writeOrphanHeadLocked()
}

func (v *Volume) writeOrphanHeadLocked() error {
	var head uint32
	if len(v.orphans.inos) > 0 {
		head = v.orphans.inos[0]
	}
	return v.setOrphanHead(head)
}

// setOrphanHead writes head to s_last_orphan (nothing if it is there).
func (v *Volume) setOrphanHead(head uint32) error {
	v.sbMu.Lock()
	defer v.sbMu.Unlock()
	cur := binary.LittleEndian.Uint32(v.sb.Raw[sLastOrphanOff:])
	if cur == head {
		return nil
	}
	return v.updateSuper(func(r []byte) { binary.LittleEndian.PutUint32(r[sLastOrphanOff:], head) })
}

// removeOrphan takes inode ino off the orphan list, if it is on it: the
// superblock names its successor when it was the head, else its
// predecessor's i_dtime does. The caller is about to free ino (or has
// given it a link back).
func (v *Volume) removeOrphan(ino uint32) error {
	v.orphans.mu.Lock()
	defer v.orphans.mu.Unlock()
	l := &v.orphans
	i := slices.Index(l.inos, ino)
	if i < 0 {
		return nil
	}
	var next uint32
	if i+1 < len(l.inos) {
		next = l.inos[i+1]
	}
	l.inos = slices.Delete(l.inos, i, i+1)
	if i == 0 {
		return v.writeOrphanHeadLocked()
	}
	return v.setDtimeLocked(l.inos[i-1], next)
}

// setDtimeLocked rewrites i_dtime of orphan ino (the chain's link) in its
// inode table block, from the inode as last committed. The caller holds
// orphans.mu, which every write of an orphan's inode holds too.
func (v *Volume) setDtimeLocked(ino, next uint32) error {
	v.mu.Lock()
	n := v.nodes[ino]
	v.mu.Unlock()
	var in Inode
	if n != nil {
		in = *n.inode()
	} else {
		cur, err := v.readInode(ino)
		if err != nil {
			return fmt.Errorf("ext: orphan list: %w", err)
		}
		in = *cur
	}
	in.Dtime = next
	_, err := v.writeInodeRaw(&in)
	return err
}

// releaseOrphans frees the inodes on the orphan list that have no links
// and cuts those that still have links (a truncate the crash interrupted)
// to i_size, then empties the list and makes that durable. Open calls it
// on a volume it writes, before anything else uses it; a journal's replay
// must come first, since the list it leaves is the one to release. It
// returns how many orphans it released.
//
// A power cut may leave the list half updated: a link that is a deletion
// time rather than an inode (the inode's free was written, the list's
// update not), an orphan already free, blocks already freed. As e2fsck
// does, the walk ends at a link that is no inode, and an orphan whose
// release finds the volume inconsistent is left (logged) for e2fsck: the
// volume stays marked unclean. Only an I/O error fails the open.
func (v *Volume) releaseOrphans() (int, error) {
	head := binary.LittleEndian.Uint32(v.sb.Raw[sLastOrphanOff:])
	if head == 0 {
		return 0, nil
	}
	v.markInUse()
	seen := map[uint32]bool{}
	released := 0
	for ino := head; ino != 0; {
		if ino < v.sb.FirstIno || ino > v.sb.InodesCount || seen[ino] {
			v.logf("ext: orphan list: link %d is no orphan inode (reserved, outside the volume or seen before): the list ends there", ino)
			break
		}
		seen[ino] = true
		next, err := v.releaseOrphanHandle(ino)
		switch {
		case errors.Is(err, ErrCorrupt):
			v.logf("ext: orphan list: inode %d left for e2fsck: %v", ino, err)
		case err != nil:
			return released, fmt.Errorf("ext: orphan list: inode %d: %w", ino, err)
		default:
			released++
		}
		ino = next
	}
	stop := v.startHandle()
	err := v.writeOrphanHeadLocked() // the list is empty in memory
	stop()
	if err != nil {
		return released, err
	}
	if err := v.syncAll(); err != nil {
		return released, fmt.Errorf("ext: orphan list: %w", err)
	}
	return released, nil
}

// releaseOrphanHandle is releaseOrphan in a handle of its own. On a
// journaled volume (replayed before this runs) the same handle moves
// s_last_orphan on to the next orphan, so whatever transaction a crash
// keeps holds a list whose head is an orphan not yet released, and a
// list cut short by a link that is no inode ends at 0.
func (v *Volume) releaseOrphanHandle(ino uint32) (uint32, error) {
	stop := v.startHandle()
	defer stop()
	next, err := v.releaseOrphan(ino)
	if v.jnl == nil || (err != nil && !errors.Is(err, ErrCorrupt)) {
		return next, err
	}
	head := next
	if head != 0 && (head < v.sb.FirstIno || head > v.sb.InodesCount) {
		head = 0
	}
	return next, errors.Join(err, v.setOrphanHead(head))
}

// releaseOrphan frees orphan ino (no links) or truncates it to i_size
// (links left), and returns the next inode of the chain, read before the
// inode's i_dtime is overwritten.
func (v *Volume) releaseOrphan(ino uint32) (uint32, error) {
	in, err := v.readInode(ino)
	if err != nil {
		return 0, err
	}
	next := in.Dtime
	if in.Mode == 0 || in.Type() == TypeUnknown {
		return next, fmt.Errorf("%w: orphan inode %d is free (mode %#o)", ErrCorrupt, ino, in.Mode)
	}
	n, err := v.newNode(in)
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	if _, ok := v.nodes[ino]; ok {
		v.mu.Unlock()
		_ = n.m.Close()
		return next, fmt.Errorf("%w: orphan inode %d is already in use", ErrCorrupt, ino)
	}
	n.refs = 1
	v.nodes[ino] = n
	v.mu.Unlock()
	n.wmu.Lock()
	if in.Links == 0 {
		err = v.releaseInode(n, in.IsDir())
	} else {
		err = v.cutToSize(n)
	}
	n.wmu.Unlock()
	v.mu.Lock()
	delete(v.nodes, ino)
	v.mu.Unlock()
	err = errors.Join(err, n.m.Close())
	return next, err
}

// cutToSize frees n's blocks past i_size and clears its i_dtime: what a
// truncate cut off by a crash leaves to do. The caller holds n.wmu.
func (v *Volume) cutToSize(n *node) error {
	if n.wmap != nil {
		bs := uint64(v.sb.BlockSize)
		if err := n.wmap.truncate((n.inode().Size + bs - 1) / bs); err != nil {
			return err
		}
	}
	return n.commitLocked(func(in *Inode) { in.Dtime = 0 })
}
