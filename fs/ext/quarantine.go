package ext

import "maps"

// quarantine keeps blocks and inodes freed since the last durable sync
// from being allocated again.
//
// Why: a free is only in the cache until a sync writes the directory
// entry, inode and bitmap that record it and flushes the device. Reusing
// the block (or inode) before then lets the new owner's bytes reach the
// device while the old owner's metadata there still points at them: a
// power cut then shows the old name with the new file's bytes, a file
// nobody wrote (the crash drill found this: a file acknowledged durable,
// deleted without a sync, came back holding a later file's data). The
// kernel's ext4 has the same rule through its journal: blocks freed in a
// transaction are not reused before it commits.
//
// Entries carry the generation they were freed in; syncNamesLocked seals
// the generation before it writes anything and, once the device flush
// succeeds, releases what was freed up to the seal. What is freed during
// a sync waits for the next one. A volume whose free space is all in
// quarantine allocates from it anyway (allocBlocks, allocInode: a second
// pass), trading the guarantee for ENOSPC only when nothing else is left.
//
// Guarded by Volume.allocMu.
type quarantine struct {
	gen    uint64
	blocks map[uint64]uint64 // block → generation freed in
	inodes map[uint32]uint64 // inode → generation freed in
}

func (q *quarantine) addBlock(b uint64) {
	if q.blocks == nil {
		q.blocks = make(map[uint64]uint64)
	}
	q.blocks[b] = q.gen
}

func (q *quarantine) addInode(ino uint32) {
	if q.inodes == nil {
		q.inodes = make(map[uint32]uint64)
	}
	q.inodes[ino] = q.gen
}

func (q *quarantine) hasBlock(b uint64) bool {
	_, ok := q.blocks[b]
	return ok
}

func (q *quarantine) hasInode(ino uint32) bool {
	_, ok := q.inodes[ino]
	return ok
}

// seal starts a new generation and returns the one before: everything
// freed so far is at or below it.
func (q *quarantine) seal() uint64 {
	g := q.gen
	q.gen++
	return g
}

// release lets go of what was freed up to generation g.
func (q *quarantine) release(g uint64) {
	old := func(_ uint64, freed uint64) bool { return freed <= g }
	maps.DeleteFunc(q.blocks, old)
	maps.DeleteFunc(q.inodes, func(_ uint32, freed uint64) bool { return freed <= g })
}

// sealQuarantine and releaseQuarantine bracket a sync (syncNamesLocked).
func (v *Volume) sealQuarantine() uint64 {
	v.allocMu.Lock()
	defer v.allocMu.Unlock()
	return v.quar.seal()
}

func (v *Volume) releaseQuarantine(g uint64) {
	v.allocMu.Lock()
	defer v.allocMu.Unlock()
	v.quar.release(g)
}

// findFree is findClear over group g's block bitmap b that skips
// quarantined blocks when honour is set, and, on a journaled volume,
// blocks freed by a transaction not yet committed (always: see jtxn.go).
// limit is where a run from i must stop: the next busy block, or to.
func (v *Volume) findFree(b []byte, g uint32, from, to uint64, honour bool) (i, limit uint64) {
	first := v.sb.groupFirstBlock(g)
	for {
		i := findClear(b, from, to)
		switch {
		case i >= to:
			return to, to
		case honour && v.quar.hasBlock(first+i):
			from = i + 1
			continue
		case v.jnl == nil:
			return i, to
		}
		busy, end := v.jnl.busySpan(first + i)
		if !busy {
			return i, min(to, end-first)
		}
		from = min(end-first, to)
	}
}

// findFreeInode is findClear over group g's inode bitmap b that skips
// quarantined inodes when honour is set.
func (v *Volume) findFreeInode(b []byte, g uint32, from, to uint64, honour bool) uint64 {
	for {
		i := findClear(b, from, to)
		if i >= to || !honour || !v.quar.hasInode(g*v.sb.InodesPerGroup+uint32(i)+1) {
			return i
		}
		from = i + 1
	}
}
