package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Block and inode allocation.
//
// The bitmaps, group descriptors and superblock are changed through the
// metadata mapping under allocMu, which serialises every allocation and
// free on the volume. Invariants kept at every release of allocMu:
//   - a bit is set in a group's block (inode) bitmap exactly when the
//     block (inode) is in use;
//   - the group's descriptor counts its clear bits (bg_free_blocks_count,
//     bg_free_inodes_count) and, with metadata_csum, holds the bitmaps'
//     checksums; its own checksum matches;
//   - freeBlocks and freeInodes (the superblock's counts, written at sync
//     points) are the sums over the groups.
// The decoded descriptors in v.groups change together with their bytes.

// Block bitmap checksum fields in a group descriptor.
const (
	gdBlockBitmapCsumLo = 0x18
	gdInodeBitmapCsumLo = 0x1A
	gdBlockBitmapCsumHi = 0x38
	gdInodeBitmapCsumHi = 0x3A
)

// encodeGroupDesc writes the fields of d that the allocator changes into
// the on-disk descriptor b (GroupDescSize bytes) and recomputes its
// checksum. Fields it does not change keep their bytes.
func encodeGroupDesc(b []byte, d *GroupDesc, g uint32, sb *Superblock) {
	le := binary.LittleEndian
	le.PutUint16(b[0xC:], uint16(d.FreeBlocks))
	le.PutUint16(b[0xE:], uint16(d.FreeInodes))
	le.PutUint16(b[0x10:], uint16(d.UsedDirs))
	le.PutUint16(b[0x12:], d.Flags)
	le.PutUint16(b[gdBlockBitmapCsumLo:], uint16(d.BlockBitmapCsum))
	le.PutUint16(b[gdInodeBitmapCsumLo:], uint16(d.InodeBitmapCsum))
	le.PutUint16(b[0x1C:], uint16(d.ItableUnused))
	if sb.GroupDescSize >= 64 {
		le.PutUint16(b[0x2C:], uint16(d.FreeBlocks>>16))
		le.PutUint16(b[0x2E:], uint16(d.FreeInodes>>16))
		le.PutUint16(b[0x30:], uint16(d.UsedDirs>>16))
		le.PutUint16(b[0x32:], uint16(d.ItableUnused>>16))
		le.PutUint16(b[gdBlockBitmapCsumHi:], uint16(d.BlockBitmapCsum>>16))
		le.PutUint16(b[gdInodeBitmapCsumHi:], uint16(d.InodeBitmapCsum>>16))
	}
	if sb.groupCsum() {
		d.Checksum = groupDescCsum(b, g, sb)
		le.PutUint16(b[gdChecksumOff:], d.Checksum)
	}
}

// updateGroup applies fn to group g's descriptor and writes it back.
// Callers hold allocMu.
func (v *Volume) updateGroup(g uint32, fn func(d *GroupDesc)) error {
	sb := v.sb
	v.groups.mu.Lock()
	d := v.groups.descs[g]
	fn(&d)
	v.groups.descs[g] = d
	v.groups.mu.Unlock()
	nr := g / uint32(sb.DescPerBlock)
	off := int(g%uint32(sb.DescPerBlock)) * sb.GroupDescSize
	err := v.updateMeta(sb.descBlock(nr), func(b []byte) error {
		encodeGroupDesc(b[off:off+sb.GroupDescSize], &d, g, sb)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ext: group %d descriptor: %w", g, err)
	}
	return nil
}

// bitmapCsum is a bitmap's metadata_csum checksum over its first n bytes.
func (v *Volume) bitmapCsum(b []byte, n int) uint32 { return crc32c(v.sb.seed, b[:n]) }

// blockBitmapBytes and inodeBitmapBytes are how many bytes of a bitmap
// block the checksums cover.
func (v *Volume) blockBitmapBytes() int { return int(v.sb.BlocksPerGroup / 8) }
func (v *Volume) inodeBitmapBytes() int { return int(v.sb.InodesPerGroup / 8) }

// markRange sets bits [from, to) of a bitmap.
func markRange(b []byte, from, to uint64) {
	for i := from; i < to; i++ {
		b[i>>3] |= 1 << (i & 7)
	}
}

// initBlockBitmap builds the block bitmap of a group whose descriptor says
// BLOCK_UNINIT: the group's own superblock backup and descriptor blocks,
// every group's bitmaps and inode table that lie in it (flex_bg puts them
// anywhere), and the bits past the group's end are in use, the rest free.
func (v *Volume) initBlockBitmap(g uint32, b []byte) {
	sb := v.sb
	clear(b)
	first := sb.groupFirstBlock(g)
	n := sb.groupBlocks(g)
	markRange(b, n, uint64(sb.BlockSize)*8)
	used := uint64(0)
	if sb.groupHasSuper(g) {
		used = 1
		if g == 0 && first == 0 && sb.BlockSize == 1024 {
			used++ // the boot block of a 1 KiB-block volume starting at 0
		}
	}
	perMeta := uint32(sb.DescPerBlock)
	if !sb.HasIncompat(IncompatMetaBG) || g/perMeta < sb.FirstMetaBG {
		if sb.groupHasSuper(g) {
			desc := uint64(sb.GDTBlocks) + uint64(sb.ReservedGDT)
			if sb.HasIncompat(IncompatMetaBG) {
				desc = uint64(sb.FirstMetaBG)
			}
			used += desc
		}
	} else if r := g % perMeta; r == 0 || r == 1 || r == perMeta-1 {
		used++
	}
	markRange(b, 0, min(used, n))
	itb := sb.inodeTableBlocks()
	v.groups.mu.RLock()
	for h := range sb.GroupCount {
		d := &v.groups.descs[h]
		for _, r := range [][2]uint64{{d.BlockBitmap, 1}, {d.InodeBitmap, 1}, {d.InodeTable, itb}} {
			lo, hi := max(r[0], first), min(r[0]+r[1], first+n)
			if lo < hi {
				markRange(b, lo-first, hi-first)
			}
		}
	}
	v.groups.mu.RUnlock()
}

// initInodeBitmap builds the inode bitmap of an INODE_UNINIT group: every
// inode free, the bits past InodesPerGroup in use.
func (v *Volume) initInodeBitmap(b []byte) {
	clear(b)
	markRange(b, uint64(v.sb.InodesPerGroup), uint64(v.sb.BlockSize)*8)
}

// findClear returns the first clear bit of b in [from, to), or to.
func findClear(b []byte, from, to uint64) uint64 {
	i := from
	for i < to && i&7 != 0 {
		if b[i>>3]&(1<<(i&7)) == 0 {
			return i
		}
		i++
	}
	for i+8 <= to && b[i>>3] == 0xFF {
		i += 8
	}
	for i < to {
		if c := b[i>>3]; c != 0xFF {
			j := i + uint64(bits.TrailingZeros8(^c))
			if j < to {
				return j
			}
			return to
		}
		i += 8
	}
	return to
}

// allocBlocks allocates between 1 and n contiguous blocks, the first as
// close after goal as the bitmaps allow: from goal to the end of its group,
// then the following groups (wrapping), then the start of goal's group.
// It returns the first block and the count, or ErrNoSpace.
func (v *Volume) allocBlocks(goal uint64, n int) (uint64, int, error) {
	sb := v.sb
	if n < 1 {
		n = 1
	}
	v.allocMu.Lock()
	defer v.allocMu.Unlock()
	if v.freeBlocks == 0 {
		return 0, 0, ErrNoSpace
	}
	if goal < uint64(sb.FirstDataBlock) || goal >= sb.BlocksCount {
		goal = uint64(sb.FirstDataBlock)
	}
	// The first pass leaves quarantined blocks alone; the second takes
	// them, when nothing else is free.
	for _, honour := range []bool{true, false} {
		if !honour && len(v.quar.blocks) == 0 {
			break
		}
		blk, got, err := v.allocFrom(goal, n, honour)
		if err != nil || got > 0 {
			return blk, got, err
		}
	}
	return 0, 0, ErrNoSpace
}

// allocFrom is one pass of allocBlocks over the groups from goal's;
// got is 0 when no group had a block to give. Caller holds allocMu.
func (v *Volume) allocFrom(goal uint64, n int, honour bool) (uint64, int, error) {
	sb := v.sb
	g0 := uint32((goal - uint64(sb.FirstDataBlock)) / uint64(sb.BlocksPerGroup))
	start0 := goal - sb.groupFirstBlock(g0)
	for i := uint32(0); i <= sb.GroupCount; i++ {
		g := (g0 + i) % sb.GroupCount
		from, to := uint64(0), sb.groupBlocks(g)
		switch {
		case i == 0:
			from = start0
		case i == sb.GroupCount:
			to = start0 // back at the goal's group: its head
		}
		if from >= to || v.groups.get(g).FreeBlocks == 0 {
			continue
		}
		blk, got, err := v.allocInGroup(g, from, to, n, honour)
		if err != nil {
			return 0, 0, err
		}
		if got > 0 {
			v.freeBlocks -= uint64(got)
			return blk, got, nil
		}
	}
	return 0, 0, nil
}

// allocInGroup takes up to n contiguous clear bits of group g's block
// bitmap, starting at the first clear one in [from, to) (not quarantined,
// when honour is set). got is 0 when there is none.
func (v *Volume) allocInGroup(g uint32, from, to uint64, n int, honour bool) (blk uint64, got int, err error) {
	sb := v.sb
	d := v.groups.get(g)
	uninit := sb.groupCsum() && d.Flags&bgBlockUninit != 0
	var csum uint32
	err = v.updateMeta(d.BlockBitmap, func(b []byte) error {
		if uninit {
			v.initBlockBitmap(g, b)
		}
		i, limit := v.findFree(b, g, from, to, honour)
		if i >= to {
			// Nothing dirtied; an initialised bitmap left in the cache
			// is what the next look builds again.
			return errNothing
		}
		first := sb.groupFirstBlock(g)
		k := uint64(0)
		for i+k < limit && k < uint64(n) && b[(i+k)>>3]&(1<<((i+k)&7)) == 0 && !(honour && v.quar.hasBlock(first+i+k)) {
			b[(i+k)>>3] |= 1 << ((i + k) & 7)
			k++
		}
		blk, got = sb.groupFirstBlock(g)+i, int(k)
		if sb.MetadataCsum() {
			csum = v.bitmapCsum(b, v.blockBitmapBytes())
		}
		return nil
	})
	if err == errNothing {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("ext: group %d block bitmap: %w", g, err)
	}
	if uint32(got) > d.FreeBlocks {
		return 0, 0, fmt.Errorf("%w: group %d: block bitmap has more free blocks than its descriptor's %d", ErrCorrupt, g, d.FreeBlocks)
	}
	err = v.updateGroup(g, func(d *GroupDesc) {
		d.FreeBlocks -= uint32(got)
		d.Flags &^= bgBlockUninit
		if sb.MetadataCsum() {
			d.BlockBitmapCsum = csum
		}
	})
	return blk, got, err
}

// errNothing: the bitmap had no clear bit where asked (not an error).
var errNothing = errors.New("ext: nothing free here")

// freeBlockRange returns blocks [blk, blk+n) to the free pool. A block already
// free is corruption (a double free); the rest are freed all the same.
func (v *Volume) freeBlockRange(blk uint64, n int) error {
	sb := v.sb
	if blk < uint64(sb.FirstDataBlock) || n < 0 || blk+uint64(n) > sb.BlocksCount {
		return fmt.Errorf("%w: freeing blocks %d+%d outside the volume", ErrCorrupt, blk, n)
	}
	v.allocMu.Lock()
	defer v.allocMu.Unlock()
	var firstErr error
	for n > 0 {
		g := uint32((blk - uint64(sb.FirstDataBlock)) / uint64(sb.BlocksPerGroup))
		i := blk - sb.groupFirstBlock(g)
		k := min(uint64(n), sb.groupBlocks(g)-i)
		d := v.groups.get(g)
		var csum uint32
		freed, double := 0, 0
		err := v.updateMeta(d.BlockBitmap, func(b []byte) error {
			for j := i; j < i+k; j++ {
				if b[j>>3]&(1<<(j&7)) == 0 {
					double++
					continue
				}
				b[j>>3] &^= 1 << (j & 7)
				if v.jnl == nil { // journaled: busy until the commit (jtxn.go)
					v.quar.addBlock(sb.groupFirstBlock(g) + j)
				}
				freed++
			}
			if sb.MetadataCsum() {
				csum = v.bitmapCsum(b, v.blockBitmapBytes())
			}
			return nil
		})
		if err == nil {
			err = v.updateGroup(g, func(d *GroupDesc) {
				d.FreeBlocks += uint32(freed)
				if sb.MetadataCsum() {
					d.BlockBitmapCsum = csum
				}
			})
			v.freeBlocks += uint64(freed)
		}
		if err == nil && v.jnl != nil {
			v.jnl.freed(blk, int(k))
		}
		if err == nil && double > 0 {
			err = fmt.Errorf("%w: group %d: freeing %d blocks from %d that were already free", ErrCorrupt, g, double, blk)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		blk += k
		n -= int(k)
	}
	return firstErr
}

// inodeGroupOK says whether group g can take a new inode.
func (v *Volume) inodeGroupOK(d GroupDesc, needBlocks bool) bool {
	return d.FreeInodes > 0 && (!needBlocks || d.FreeBlocks > 0)
}

// pickInodeGroup chooses the group for a new inode. Files go near their
// directory: the parent's group, else the next with free inodes and
// blocks. Directories spread out (an Orlov-like rule): among groups with
// at least the average free inodes and blocks, the one with the fewest
// directories, so that trees started later do not crowd the first ones.
func (v *Volume) pickInodeGroup(parent uint32, dir bool) (uint32, bool) {
	sb := v.sb
	pg := (parent - 1) / sb.InodesPerGroup
	v.groups.mu.RLock()
	defer v.groups.mu.RUnlock()
	descs := v.groups.descs
	if dir {
		avgInodes := uint64(v.freeInodes) / uint64(sb.GroupCount)
		avgBlocks := v.freeBlocks / uint64(sb.GroupCount)
		best, found := uint32(0), false
		for i := range sb.GroupCount {
			g := (pg + i) % sb.GroupCount
			d := &descs[g]
			if uint64(d.FreeInodes) < max(avgInodes, 1) || uint64(d.FreeBlocks) < avgBlocks {
				continue
			}
			if !found || d.UsedDirs < descs[best].UsedDirs {
				best, found = g, true
			}
		}
		if found {
			return best, true
		}
	}
	for _, needBlocks := range []bool{true, false} {
		for i := range sb.GroupCount {
			g := (pg + i) % sb.GroupCount
			if v.inodeGroupOK(descs[g], needBlocks) {
				return g, true
			}
		}
	}
	return 0, false
}

// allocInode takes a free inode for a new file (dir: a directory) whose
// directory is parent, and returns its number. Quarantined inodes are
// taken only when no other is free.
func (v *Volume) allocInode(parent uint32, dir bool) (uint32, error) {
	sb := v.sb
	v.allocMu.Lock()
	defer v.allocMu.Unlock()
	if v.freeInodes == 0 {
		return 0, ErrNoSpace
	}
	g0, ok := v.pickInodeGroup(parent, dir)
	if !ok {
		return 0, ErrNoSpace
	}
	for _, honour := range []bool{true, false} {
		if !honour && len(v.quar.inodes) == 0 {
			break
		}
		for i := range sb.GroupCount {
			ino, err := v.allocInodeInGroup((g0+i)%sb.GroupCount, dir, honour)
			if err != nil || ino != 0 {
				return ino, err
			}
		}
	}
	return 0, ErrNoSpace
}

// allocInodeInGroup takes the first free inode of group g (not
// quarantined, when honour is set), or returns 0. Caller holds allocMu.
func (v *Volume) allocInodeInGroup(g uint32, dir, honour bool) (uint32, error) {
	sb := v.sb
	d := v.groups.get(g)
	if d.FreeInodes == 0 {
		return 0, nil
	}
	uninit := sb.groupCsum() && d.Flags&bgInodeUninit != 0
	from := uint64(0)
	if g == 0 {
		from = uint64(sb.FirstIno - 1) // reserved inodes
	}
	var idx uint64
	var csum uint32
	err := v.updateMeta(d.InodeBitmap, func(b []byte) error {
		if uninit {
			v.initInodeBitmap(b)
		}
		idx = v.findFreeInode(b, g, from, uint64(sb.InodesPerGroup), honour)
		if idx >= uint64(sb.InodesPerGroup) {
			return errNothing
		}
		b[idx>>3] |= 1 << (idx & 7)
		if sb.MetadataCsum() {
			csum = v.bitmapCsum(b, v.inodeBitmapBytes())
		}
		return nil
	})
	if err == errNothing {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ext: group %d inode bitmap: %w", g, err)
	}
	widened := false
	err = v.updateGroup(g, func(d *GroupDesc) {
		d.FreeInodes--
		if dir {
			d.UsedDirs++
		}
		widened = d.Flags&bgInodeUninit != 0
		d.Flags &^= bgInodeUninit
		if sb.groupCsum() {
			// Inodes past ipg-itable_unused were never initialised;
			// the new one must be inside the initialised part.
			if unused := sb.InodesPerGroup - uint32(idx) - 1; unused < d.ItableUnused {
				d.ItableUnused = unused
				widened = true
			}
		}
		if sb.MetadataCsum() {
			d.InodeBitmapCsum = csum
		}
	})
	if err != nil {
		return 0, err
	}
	if widened {
		// The descriptor that takes the new inode into the table's
		// initialised part reaches the device before a directory entry
		// naming it: e2fsck -p refuses an entry that names an inode in
		// the unused part (a fresh metadata block, meta.go).
		v.addFresh(sb.descBlock(g / uint32(sb.DescPerBlock)))
	}
	v.freeInodes--
	return g*sb.InodesPerGroup + uint32(idx) + 1, nil
}

// freeInode returns inode ino to the free pool.
func (v *Volume) freeInode(ino uint32, dir bool) error {
	sb := v.sb
	if ino < sb.FirstIno || ino > sb.InodesCount {
		return fmt.Errorf("%w: freeing reserved or out-of-range inode %d", ErrCorrupt, ino)
	}
	v.allocMu.Lock()
	defer v.allocMu.Unlock()
	g := (ino - 1) / sb.InodesPerGroup
	idx := (ino - 1) % sb.InodesPerGroup
	d := v.groups.get(g)
	var csum uint32
	wasSet := false
	err := v.updateMeta(d.InodeBitmap, func(b []byte) error {
		wasSet = b[idx>>3]&(1<<(idx&7)) != 0
		b[idx>>3] &^= 1 << (idx & 7)
		if wasSet && v.jnl == nil {
			// Journaled: the free and any reuse are in the log in
			// order, and a crash brings back one state or the other.
			v.quar.addInode(ino)
		}
		if sb.MetadataCsum() {
			csum = v.bitmapCsum(b, v.inodeBitmapBytes())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ext: group %d inode bitmap: %w", g, err)
	}
	if !wasSet {
		return fmt.Errorf("%w: inode %d was already free", ErrCorrupt, ino)
	}
	err = v.updateGroup(g, func(d *GroupDesc) {
		d.FreeInodes++
		if dir && d.UsedDirs > 0 {
			d.UsedDirs--
		}
		if sb.MetadataCsum() {
			d.InodeBitmapCsum = csum
		}
	})
	v.freeInodes++
	return err
}
