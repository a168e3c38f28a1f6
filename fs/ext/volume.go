package ext

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/mpage"
)

// Config opens a volume.
type Config struct {
	// Device is the block device (or image file) the volume lives on;
	// every mapping of the volume, metadata and file data, uses it.
	Device *mpage.Device
	// Cache is the page cache the volume's mappings share.
	Cache *mpage.Cache
	// DeviceSize is the device's size in bytes. A device too small to
	// hold a superblock (0 bytes included) is refused with ErrNotExt, a
	// superblock claiming more blocks than fit as corrupt. A negative
	// size means unknown and skips both checks (a device shorter than
	// the superblock then fails its read with EIO).
	DeviceSize int64
	// ReadOnly opens the volume for reading only. Without it, Open
	// replays a journal that needs recovery (and fails with
	// ErrNeedsRecovery if it cannot), refuses volumes that must not be
	// written (ErrReadOnly for unknown RO_COMPAT features) and serves
	// read-only,
	// with the reason logged and reported by Volume.ReadOnly, volumes
	// with features the writer does not handle (a journal, extents, ...):
	// writes to them fail with ErrReadOnly naming the features. The
	// device must be open for writing unless ReadOnly is set.
	ReadOnly bool
	// Logf receives notices (recovery needed, downgraded to read-only,
	// unclean volume). Nil discards them.
	Logf func(format string, args ...any)
	// IdleFiles is how many closed files keep their mapping (and cached
	// pages) for reuse; default 128.
	IdleFiles int
	// AllowUnclean lets a read-write open go ahead on a volume whose
	// superblock says it was not cleanly unmounted or has recorded
	// errors (e2fsck -p has not run since). Without it such an open
	// fails with ErrUnclean; read-only opens never need it. Close leaves
	// a volume that was unclean at open unclean, so e2fsck still checks
	// it.
	AllowUnclean bool
	// SectorSize is the alignment the device needs for direct I/O: its
	// logical block size (BLKSSZGET) when it is open with O_DIRECT; 0
	// (meaning 512) for buffered I/O. Open reads the superblock in units
	// of max(1024, SectorSize) and refuses (ErrSectorSize) a file system
	// whose blocks are smaller than that; every later read and write is
	// in file-system blocks, so nothing else needs it.
	SectorSize int
	// ShowRecovered lets a read-only Open show a volume whose journal
	// needs recovery as replay would leave it, without writing the
	// device. When the superblock says needs_recovery and the journal is
	// internal, Open scans the journal (jbd2.Scan: what replay would
	// write, at most MaxRecoveredView bytes of it) through mappings it
	// closes again, so nothing of the device stays cached, and hands the
	// result to ShowRecovered, which must make every later read of the
	// device see those blocks (engine.Engine.ShowRecovered lays them under
	// the ring); Open then reads the superblock and everything else
	// through that view. Nil keeps the volume as it is on the device,
	// before the unreplayed transactions (logged). Read-write opens replay
	// instead and ignore it.
	ShowRecovered func(*jbd2.Replay) error
}

// metaReadahead is the metadata mapping's readahead window in pages:
// inode tables and directory-adjacent blocks are read in batches, without
// dragging in the megabyte a data stream gets.
const metaReadahead = 32

// Volume is an open ext2/3/4 file system. Its methods are safe for
// concurrent use.
type Volume struct {
	cfg  Config
	logf func(string, ...any)
	sb   *Superblock
	// groups is immutable on the read side; see groupTable.
	groups *groupTable
	// meta is the whole device as one mapping in file-system blocks: all
	// metadata (superblock, descriptors, inode tables, indirect and
	// extent blocks) is read through it, so it shares the engine's cache.
	meta     *mpage.Mapping
	blkbits  uint
	readOnly bool
	roReason string
	// idleFlushing: an idle node is being written back before it is
	// dropped (flushIdle); one at a time.
	idleFlushing atomic.Bool

	// life is held shared by every public call for its duration and
	// exclusively by Close, so Close never pulls a mapping from under a
	// read (and no read starts on a closed mapping).
	life   sync.RWMutex
	closed bool

	// mu guards nodes and idle: the per-inode cache of open files. A node
	// with refs > 0 is in use; one with refs == 0 sits on idle (most
	// recently released at the front) until evicted.
	mu    sync.Mutex
	nodes map[uint32]*node
	idle  list.List

	blockBufs sync.Pool

	// Write side (volume open read-write).
	//
	// ns serialises changes to the name space (directory entries, link
	// counts) against lookups: path resolution and directory listings
	// hold it shared, Create, Unlink, Mkdir and Rmdir exclusively.
	ns sync.RWMutex
	// allocMu serialises block and inode allocation and freeing; it
	// guards freeBlocks and freeInodes (the superblock's counts).
	allocMu    sync.Mutex
	freeBlocks uint64
	freeInodes uint32
	// quar: blocks and inodes freed since the last sync, not reused
	// until it is durable (quarantine.go). Guarded by allocMu.
	quar quarantine
	// fresh: metadata blocks allocated since the last sync, written and
	// flushed before what points at them (syncFresh, meta.go).
	freshMu sync.Mutex
	fresh   map[uint64]struct{}
	// sbMu guards the superblock's bytes (sb.Raw) and inUse.
	sbMu sync.Mutex
	// inUse: the superblock on the device says "not cleanly unmounted"
	// (set before the first change of the session; Close restores the
	// state found at open).
	inUse bool
	// openState is s_state as Open found it, and wasClean whether it said
	// cleanly unmounted without recorded errors. Close puts openState
	// back, so only a volume that was clean at open ends clean.
	openState uint16
	wasClean  bool
	// recoveredView: the volume is read through an overlay of its
	// journal's unreplayed blocks (Config.ShowRecovered).
	recoveredView bool
	// needLargeFile: a file reached 2 GiB on a volume without large_file;
	// the next superblock write sets the feature.
	needLargeFile atomic.Bool
	// metaDirtyLimit is how many dirty metadata pages start writeback.
	metaDirtyLimit int

	// jnl is the journal's write side on a journaled volume open for
	// writing (jtxn.go), nil otherwise.
	jnl *volJournal
	// orphanFrees counts frees of unlinked files handed to goroutines of
	// their own (journaled volumes: see releaseNode); Close waits for them.
	orphanFrees sync.WaitGroup
	// orphans mirrors the on-disk orphan list (orphan.go).
	orphans orphanList
	// strayAllocs counts allocations a mapper made outside node.allocate
	// on a journaled volume: by the engine's writeback, outside any
	// handle (see write.go; none is expected).
	strayAllocs atomic.Int64
	// spaceCommits counts the commits an allocation that ran out of
	// space forced to free the blocks a transaction held (commitForSpace).
	spaceCommits atomic.Int64
}

// Open reads and checks the superblock and group descriptors of the volume
// on cfg.Device. The superblock is read through a small bootstrap mapping
// with 1 KiB blocks, or the device's logical block size if larger (the
// file system's block size is not known before it), which is closed
// again; everything after goes through the volume's metadata mapping in
// the file system's block size.
func Open(cfg Config) (*Volume, error) {
	if cfg.Device == nil || cfg.Cache == nil {
		return nil, errors.New("ext: open: Config needs a Device and a Cache")
	}
	v := &Volume{cfg: cfg, logf: cfg.Logf, nodes: make(map[uint32]*node)}
	if v.logf == nil {
		v.logf = func(string, ...any) {}
	}
	if v.cfg.IdleFiles <= 0 {
		v.cfg.IdleFiles = 128
	}
	sb, err := loadSuperblock(cfg)
	if err != nil {
		return nil, err
	}
	if sb, err = v.recoveredSuperblock(sb); err != nil {
		return nil, err
	}
	v.sb = sb
	v.blkbits = uint(10 + sb.LogBlockSize)
	v.blockBufs.New = func() any { b := make([]byte, sb.BlockSize); return &b }
	size := int64(sb.BlocksCount) << v.blkbits
	if err := v.decideAccess(); err != nil {
		return nil, err
	}
	v.meta, err = mpage.NewMapping(mpage.MappingConfig{
		Device: cfg.Device, Cache: cfg.Cache, Mapper: mpage.LinearMapper{Blocks: sb.BlocksCount},
		BlockSize: sb.BlockSize, Size: size, Name: "ext metadata", Owner: (*metaOwner)(v),
	})
	if err != nil {
		return nil, fmt.Errorf("ext: open: %w", err)
	}
	v.meta.SetReadahead(metaReadahead)
	if err := v.loadGroups(); err != nil {
		v.meta.Close()
		return nil, err
	}
	v.freeBlocks, v.freeInodes = sb.FreeBlocks, sb.FreeInodes
	if !v.readOnly {
		// The superblock's counts may lag (the kernel writes them
		// lazily): the descriptors are the authority.
		var fb uint64
		var fi uint64
		for _, d := range v.groups.descs {
			fb += uint64(d.FreeBlocks)
			fi += uint64(d.FreeInodes)
		}
		v.freeBlocks, v.freeInodes = fb, uint32(fi)
		v.metaDirtyLimit = max(int(cfg.Cache.Stats().Limit/8), 64)
	}
	if !v.readOnly && v.journaled() {
		if err := v.openJournal(); err != nil {
			v.meta.Close()
			return nil, err
		}
	}
	root, err := v.getNode(rootIno)
	if err != nil {
		v.closeAll()
		return nil, fmt.Errorf("ext: root directory: %w", err)
	}
	isDir := root.inode().IsDir()
	v.putNode(root)
	if !isDir {
		v.closeAll()
		return nil, fmt.Errorf("%w: root inode is not a directory", ErrCorrupt)
	}
	if !v.readOnly {
		n, err := v.releaseOrphans()
		if err != nil {
			v.closeAll()
			return nil, err
		}
		if n > 0 {
			v.logf("ext: orphan list: released %d inodes a crash left without a name", n)
		}
	}
	return v, nil
}

// bootBlockSize is the block size of the bootstrap mapping the superblock
// is read through: 1 KiB, the superblock's own unit, unless the device's
// logical blocks are larger; then it is one logical block, and the
// aligned read at offset 0 covers bytes 1024..2047 too.
func bootBlockSize(sector int) (int, error) {
	switch sector {
	case 0, 512, 1024, 2048, 4096:
		return max(superblockSize, sector), nil
	}
	return 0, &detailed{fmt.Sprintf("ext: device logical block size %d: the engine handles 512, 1024, 2048 and 4096", sector), ErrSectorSize}
}

// errTooSmall says that a device of size bytes cannot hold the
// superblock.
func errTooSmall(size int64) error {
	return &detailed{fmt.Sprintf("ext: %d bytes: too small to be an ext2/3/4 volume (the superblock ends at byte %d)",
		size, superblockOffset+superblockSize), ErrNotExt}
}

// readSuperblock reads the 1024 bytes at device offset 1024 through a
// bootstrap mapping in units the device can serve with direct I/O.
func readSuperblock(cfg Config) ([]byte, error) {
	bs, err := bootBlockSize(cfg.SectorSize)
	if err != nil {
		return nil, err
	}
	need := int64(superblockOffset + superblockSize)
	if cfg.DeviceSize >= 0 && cfg.DeviceSize < need {
		return nil, errTooSmall(cfg.DeviceSize)
	}
	boot, err := mpage.NewMapping(mpage.MappingConfig{
		Device: cfg.Device, Cache: cfg.Cache, Mapper: mpage.LinearMapper{},
		BlockSize: bs, Size: max(need, int64(bs)), Name: "ext superblock",
	})
	if err != nil {
		return nil, fmt.Errorf("ext: open: %w", err)
	}
	boot.SetReadahead(0)
	raw := make([]byte, superblockSize)
	_, err = boot.ReadAt(raw, superblockOffset)
	if cerr := boot.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("ext: read superblock: %w", err)
	}
	return raw, nil
}

// loadSuperblock reads, parses and checks the superblock against the
// device: its block size against the sector size, its block count against
// the device's size.
func loadSuperblock(cfg Config) (*Superblock, error) {
	raw, err := readSuperblock(cfg)
	if err != nil {
		return nil, err
	}
	sb, err := ParseSuperblock(raw)
	if err != nil {
		return nil, err
	}
	if err := checkSectorSize(sb, cfg.SectorSize); err != nil {
		return nil, err
	}
	blkbits := uint(10 + sb.LogBlockSize)
	const maxBytes = 1 << 62
	if sb.BlocksCount > maxBytes>>blkbits {
		return nil, fmt.Errorf("%w: superblock: %d blocks of %d bytes", ErrUnsupported, sb.BlocksCount, sb.BlockSize)
	}
	size := int64(sb.BlocksCount) << blkbits
	if cfg.DeviceSize >= 0 && size > cfg.DeviceSize {
		return nil, fmt.Errorf("%w: superblock: %d blocks of %d bytes (%d bytes) do not fit the %d-byte device (truncated image?)",
			ErrCorrupt, sb.BlocksCount, sb.BlockSize, size, cfg.DeviceSize)
	}
	return sb, nil
}

// checkSectorSize refuses a file system whose blocks are smaller than the
// device's logical blocks: direct I/O of one such block is refused by the
// device (EINVAL), and blocks are the unit of every later I/O.
func checkSectorSize(sb *Superblock, sector int) error {
	if sector <= sb.BlockSize {
		return nil
	}
	return &detailed{fmt.Sprintf("ext: file system blocks of %d bytes are smaller than the device's %d-byte logical blocks, "+
		"which direct I/O cannot split (open the device without O_DIRECT and SectorSize 0, or make the file system with -b %d)",
		sb.BlockSize, sector, sector), ErrSectorSize}
}

// decideAccess settles read-only or read-write from the features and state,
// refusing read-write where writing would do harm.
func (v *Volume) decideAccess() error {
	sb := v.sb
	v.readOnly = true
	if sb.HasIncompat(IncompatRecover) {
		if !v.cfg.ReadOnly {
			return fmt.Errorf("%w: the journal holds unreplayed transactions; run e2fsck first or open read-only", ErrNeedsRecovery)
		}
		if !v.recoveredView {
			v.logf("ext: journal needs recovery: reading the volume as it was before the unreplayed transactions (%s; open it read-write or run e2fsck to replay them)",
				whyNotShown(sb, v.cfg))
		}
	}
	if unknown := sb.ROCompat &^ knownROCompat; unknown != 0 && !v.cfg.ReadOnly {
		return fmt.Errorf("%w: unknown RO_COMPAT features %s", ErrReadOnly, unknown)
	}
	v.openState = sb.State
	v.wasClean = sb.State&stateValid != 0 && sb.State&stateErrors == 0
	switch feats := unwritableFeatures(sb); {
	case v.cfg.ReadOnly:
		v.roReason = "opened read-only"
	case feats != "":
		v.roReason = "features this package cannot write: " + feats
	case sb.BlocksCount > 1<<32 && !sb.HasIncompat(IncompatExtents):
		// Block pointers of indirect-mapped files are 32 bits.
		v.roReason = fmt.Sprintf("%d blocks: past what 32-bit block pointers address", sb.BlocksCount)
	case !v.wasClean && !v.cfg.AllowUnclean:
		return fmt.Errorf("%w: %s", ErrUnclean, describeState(sb.State))
	default:
		v.readOnly = false
	}
	switch {
	case v.wasClean:
	case v.readOnly:
		v.logf("ext: %s; reading it as it is (run e2fsck -p to check it)", describeState(sb.State))
	default:
		v.logf("ext: %s; writing it anyway (AllowUnclean): it stays marked unclean for e2fsck", describeState(sb.State))
	}
	if v.readOnly && !v.cfg.ReadOnly {
		v.logf("ext: serving the volume read-only: %s", v.roReason)
	}
	return nil
}

// describeState says what s_state tells of an unclean volume.
func describeState(state uint16) string {
	switch {
	case state&stateErrors != 0:
		return fmt.Sprintf("the volume has recorded errors (state %#x)", state)
	case state&stateValid == 0:
		return fmt.Sprintf("the volume was not cleanly unmounted (state %#x)", state)
	}
	return fmt.Sprintf("state %#x", state)
}

// WasClean reports whether the superblock said "cleanly unmounted, no
// recorded errors" when the volume was opened. A volume that was not is
// left marked unclean by Close, whatever happens in between.
func (v *Volume) WasClean() bool { return v.wasClean }

// errReadOnly is the error a write on a read-only volume returns.
func (v *Volume) errReadOnly() error {
	return fmt.Errorf("%w: %s", ErrReadOnly, v.roReason)
}

// Superblock returns a copy of the decoded superblock (Raw as last
// written, on a volume open for writing).
func (v *Volume) Superblock() Superblock {
	v.sbMu.Lock()
	defer v.sbMu.Unlock()
	return *v.sb
}

// BlockSize is the file system block size in bytes.
func (v *Volume) BlockSize() int { return v.sb.BlockSize }

// ReadOnly reports whether the volume is served read-only, and why.
func (v *Volume) ReadOnly() (bool, string) { return v.readOnly, v.roReason }

// MetaMapping is the volume's metadata mapping (tests and stats look at
// its cache).
func (v *Volume) MetaMapping() *mpage.Mapping { return v.meta }

// Group returns group g's descriptor.
func (v *Volume) Group(g uint32) (GroupDesc, error) {
	if g >= v.sb.GroupCount {
		return GroupDesc{}, fmt.Errorf("ext: group %d of %d", g, v.sb.GroupCount)
	}
	return v.groups.get(g), nil
}

// Close drops every cached file and the metadata mapping. Files still open
// fail with ErrClosed from then on. On a volume changed since it was
// opened for writing it first syncs everything and then puts back the
// superblock's state as Open found it: cleanly unmounted only if it was
// then (WasClean). If the sync fails the volume is left marked in use
// (e2fsck will check it) and the error returned.
func (v *Volume) Close() error {
	v.orphanFrees.Wait()
	v.life.Lock()
	defer v.life.Unlock()
	if v.closed {
		return ErrClosed
	}
	v.closed = true
	var errs []error
	if v.jnl != nil {
		if err := v.closeJournaled(); err != nil {
			errs = append(errs, fmt.Errorf("ext: close: %w", err))
		}
	} else if !v.readOnly && v.inUse {
		err := v.freeOrphans()
		if serr := v.syncAll(); err == nil {
			err = serr
		}
		if err == nil {
			if err = v.flushSuper(true); err == nil {
				err = v.syncMeta()
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ext: close: %w", err))
		}
	}
	if err := v.closeAll(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// freeOrphans frees the inodes unlinked while open whose Files are still
// open at Close: those Files die with the volume, and a freed inode is
// what e2fsck expects to find.
func (v *Volume) freeOrphans() error {
	v.mu.Lock()
	var orphans []*node
	for ino, n := range v.nodes {
		if n.orphan {
			orphans = append(orphans, n)
			delete(v.nodes, ino)
		}
	}
	v.mu.Unlock()
	var errs []error
	for _, n := range orphans {
		if err := v.freeOrphan(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (v *Volume) closeAll() error {
	v.mu.Lock()
	nodes := v.nodes
	v.nodes = map[uint32]*node{}
	v.idle.Init()
	v.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		if err := n.m.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := v.meta.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// enter starts a public call: it holds off Close until the call is done.
func (v *Volume) enter() error {
	v.life.RLock()
	if v.closed {
		v.life.RUnlock()
		return ErrClosed
	}
	return nil
}

func (v *Volume) leave() { v.life.RUnlock() }

// getBlockBuf returns a block-sized scratch buffer.
func (v *Volume) getBlockBuf() []byte  { return *v.blockBufs.Get().(*[]byte) }
func (v *Volume) putBlockBuf(b []byte) { v.blockBufs.Put(&b) }

// readMeta reads len(b) bytes at byte off of device block blk through the
// metadata mapping.
func (v *Volume) readMeta(b []byte, blk uint64, off int) error {
	if blk >= v.sb.BlocksCount {
		return fmt.Errorf("%w: block %d past the end of the volume (%d blocks)", ErrCorrupt, blk, v.sb.BlocksCount)
	}
	pos := int64(blk)<<v.blkbits + int64(off)
	n, err := v.meta.ReadAt(b, pos)
	if err == io.EOF && n == len(b) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("ext: read block %d: %w", blk, err)
	}
	return nil
}

// readBlock reads one whole block.
func (v *Volume) readBlock(b []byte, blk uint64) error { return v.readMeta(b[:v.sb.BlockSize], blk, 0) }

// readInode reads and checks inode ino from its group's inode table.
func (v *Volume) readInode(ino uint32) (*Inode, error) {
	sb := v.sb
	if ino == 0 || ino > sb.InodesCount {
		return nil, fmt.Errorf("%w: inode %d outside 1..%d", ErrCorrupt, ino, sb.InodesCount)
	}
	g := (ino - 1) / sb.InodesPerGroup
	idx := (ino - 1) % sb.InodesPerGroup
	d := v.groups.get(g)
	if sb.groupCsum() && (d.Flags&bgInodeUninit != 0 || idx >= sb.InodesPerGroup-d.ItableUnused) {
		// The group's descriptor says this part of the inode table was
		// never initialised: nothing may point here.
		return nil, fmt.Errorf("%w: inode %d: in the uninitialised part of group %d's inode table", ErrCorrupt, ino, g)
	}
	off := uint64(idx) * uint64(sb.InodeSize)
	blk := d.InodeTable + off>>v.blkbits
	buf := make([]byte, sb.InodeSize)
	if err := v.readMeta(buf, blk, int(off&(uint64(sb.BlockSize)-1))); err != nil {
		return nil, fmt.Errorf("ext: inode %d: %w", ino, err)
	}
	in, err := parseInode(buf, ino, sb)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// FileInfo describes a file, as Stat returns it.
type FileInfo struct {
	Name   string // the last path component ("/" for the root)
	Ino    uint32
	Type   FileType
	Mode   fs.FileMode // type and permission bits as io/fs spells them
	Size   int64
	Links  uint32
	Blocks int64 // 512-byte units allocated, as st_blocks
	UID    uint32
	GID    uint32
	Flags  uint32 // i_flags
	// Generation is i_generation: an inode number reused for a new file
	// gets a new one, so (Ino, Generation) names one file for its life.
	Generation uint32
	// ModTime, AccessTime, ChangeTime and CreateTime (zero when the inode
	// has no room for it) carry nanoseconds where the inode has them.
	ModTime, AccessTime, ChangeTime, CreateTime time.Time
}

// IsDir reports whether the file is a directory.
func (fi FileInfo) IsDir() bool { return fi.Type == TypeDir }

func infoOf(name string, in *Inode) FileInfo {
	return FileInfo{
		Name: name, Ino: in.Ino, Type: in.Type(), Mode: in.FileMode(), Size: int64(in.Size),
		Links: uint32(in.Links), Blocks: int64(in.Blocks), UID: in.UID, GID: in.GID, Flags: in.Flags,
		Generation: in.Generation,
		ModTime:    in.Mtime, AccessTime: in.Atime, ChangeTime: in.Ctime, CreateTime: in.Crtime,
	}
}

func baseName(comps []string) string {
	if len(comps) == 0 {
		return "/"
	}
	return comps[len(comps)-1]
}

// pathOp runs fn on the node path resolves to, wrapping errors as
// *fs.PathError with op and path.
func (v *Volume) pathOp(op, path string, followLast bool, fn func(n *node, comps []string) error) error {
	comps, trailing, err := splitPath(path)
	if err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	if err := v.enter(); err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	defer v.leave()
	v.ns.RLock()
	defer v.ns.RUnlock()
	n, err := v.resolve(comps, followLast || trailing)
	if err == nil {
		if trailing && !n.inode().IsDir() {
			err = ErrNotDir
		} else {
			err = fn(n, comps)
		}
		v.putNode(n)
	}
	if err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	return nil
}

// Lookup resolves path to its inode number. A symbolic link as the last
// component is not followed.
func (v *Volume) Lookup(path string) (uint32, error) {
	var ino uint32
	err := v.pathOp("lookup", path, false, func(n *node, _ []string) error {
		ino = n.ino
		return nil
	})
	return ino, err
}

// Stat describes the file at path, following a final symbolic link.
func (v *Volume) Stat(path string) (FileInfo, error) {
	var fi FileInfo
	err := v.pathOp("stat", path, true, func(n *node, comps []string) error {
		fi = infoOf(baseName(comps), n.inode())
		return nil
	})
	return fi, err
}

// Lstat describes the file at path; a final symbolic link is described
// itself.
func (v *Volume) Lstat(path string) (FileInfo, error) {
	var fi FileInfo
	err := v.pathOp("lstat", path, false, func(n *node, comps []string) error {
		fi = infoOf(baseName(comps), n.inode())
		return nil
	})
	return fi, err
}

// StatInode describes inode ino (named name), as a listing needs it: the
// inode is read and checked, but no data mapping is built for it.
func (v *Volume) StatInode(ino uint32, name string) (FileInfo, error) {
	if err := v.enter(); err != nil {
		return FileInfo{}, err
	}
	defer v.leave()
	return v.statInode(ino, name)
}

// statInode is StatInode inside a public call.
func (v *Volume) statInode(ino uint32, name string) (FileInfo, error) {
	v.mu.Lock()
	n, ok := v.nodes[ino]
	v.mu.Unlock()
	if ok {
		return infoOf(name, n.inode()), nil
	}
	in, err := v.readInode(ino)
	if err != nil {
		return FileInfo{}, err
	}
	if err := in.checkLive(); err != nil {
		return FileInfo{}, err
	}
	return infoOf(name, in), nil
}

// ReadDir lists the directory at path (following symbolic links), sorted
// by name, without "." and "..". Entries on volumes without the filetype
// feature get their type from their inode.
func (v *Volume) ReadDir(path string) ([]DirEntry, error) {
	var out []DirEntry
	err := v.pathOp("readdir", path, true, func(n *node, _ []string) error {
		var err error
		out, err = v.listDir(n)
		return err
	})
	return out, err
}

// listDir is ReadDir of directory n; entries without a type (no filetype
// feature) get it from their inode where it can be read. The caller holds
// v.ns shared.
func (v *Volume) listDir(n *node) ([]DirEntry, error) {
	if !n.inode().IsDir() {
		return nil, ErrNotDir
	}
	out, err := v.readDirNode(n)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Type != TypeUnknown {
			continue
		}
		if in, err := v.readInode(out[i].Inode); err == nil {
			out[i].Type = in.Type()
		}
	}
	return out, nil
}

// ReadDirInfo lists the directory at path (following symbolic links) as
// ReadDir does, and describes every entry as Lstat would (a symbolic link
// as itself), sorted by name. An entry whose inode cannot be read or is
// corrupt (a checksum mismatch, an impossible mode) is left out of the
// list and reported: the error joins one *fs.PathError per such entry
// (op "stat", the entry's path, wrapping ErrCorrupt or the I/O error), so
// a listing can show every entry it could describe and name the ones it
// could not. A directory that cannot be listed at all gives nil and the
// error.
func (v *Volume) ReadDirInfo(dir string) ([]FileInfo, error) {
	var infos []FileInfo
	var bad []error
	err := v.pathOp("readdir", dir, true, func(n *node, _ []string) error {
		if !n.inode().IsDir() {
			return ErrNotDir
		}
		ents, err := v.readDirNode(n)
		if err != nil {
			return err
		}
		for _, e := range ents {
			fi, err := v.statInode(e.Inode, e.Name)
			if err != nil {
				bad = append(bad, &fs.PathError{Op: "stat", Path: path.Join(dir, e.Name), Err: err})
				continue
			}
			infos = append(infos, fi)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return infos, errors.Join(bad...)
}

// Readlink returns the target of the symbolic link at path.
func (v *Volume) Readlink(path string) (string, error) {
	var target string
	err := v.pathOp("readlink", path, false, func(n *node, _ []string) error {
		if n.inode().Type() != TypeSymlink {
			return fmt.Errorf("%w: inode %d", ErrNotSymlink, n.ino)
		}
		var err error
		target, err = v.readlinkNode(n)
		return err
	})
	return target, err
}

// OpenFile opens the regular file at path (following symbolic links) for
// reading. Opens of one inode share one data mapping, so their pages are
// cached once.
func (v *Volume) OpenFile(path string) (*File, error) {
	var f *File
	err := v.pathOp("open", path, true, func(n *node, _ []string) error {
		switch n.inode().Type() {
		case TypeRegular:
		case TypeDir:
			return ErrIsDir
		default:
			return fmt.Errorf("%w: %s", ErrNotRegular, n.inode().Type())
		}
		if err := n.readable(); err != nil {
			return err
		}
		v.holdNode(n)
		f = &File{v: v, n: n}
		return nil
	})
	return f, err
}
