package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/fs/ext/jbd2"
	"github.com/mpaged/mpaged/internal/testenv"
)

// fileDev is a jbd2.Device straight on an image file: the writer tests
// put transactions into an image the way a crashed writer leaves them,
// without a volume open on it.
type fileDev struct {
	f      *os.File
	bs     int
	blocks uint64
}

func openFileDev(t *testing.T, img string, bs int) *fileDev {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return &fileDev{f: f, bs: bs, blocks: uint64(st.Size()) / uint64(bs)}
}

func (d *fileDev) ReadBlock(blk uint64, b []byte) error {
	_, err := d.f.ReadAt(b, int64(blk)*int64(d.bs))
	return err
}

func (d *fileDev) WriteBlock(blk uint64, b []byte) error {
	if blk >= d.blocks {
		return fmt.Errorf("write of block %d past %d", blk, d.blocks)
	}
	_, err := d.f.WriteAt(b, int64(blk)*int64(d.bs))
	return err
}

func (d *fileDev) Flush() error   { return d.f.Sync() }
func (d *fileDev) Blocks() uint64 { return d.blocks }
func (d *fileDev) BlockSize() int { return d.bs }
func (d *fileDev) block(blk uint64) []byte {
	b := make([]byte, d.bs)
	if err := d.ReadBlock(blk, b); err != nil {
		panic(err)
	}
	return b
}

// imageJournal returns img's journal block map, read through fs/ext.
func imageJournal(t *testing.T, img string) (*jbd2.ExtentLog, Superblock) {
	t.Helper()
	v := mustOpenImage(t, img, openOpts{readOnly: true})
	defer v.Close()
	log, err := v.JournalLog()
	if err != nil {
		t.Fatal(err)
	}
	return log, v.Superblock()
}

// setJournalFeatures rewrites the journal superblock of the image on dev
// with the given feature words (crc32c as the checksum type when v2/v3).
func setJournalFeatures(t *testing.T, dev *fileDev, log jbd2.Log, compat, incompat uint32) {
	t.Helper()
	p, err := log.Map(0)
	if err != nil {
		t.Fatal(err)
	}
	b := dev.block(p)
	sb, err := jbd2.ParseSuperblock(b)
	if err != nil {
		t.Fatal(err)
	}
	sb.Compat, sb.Incompat = compat, incompat
	if incompat&(jbd2.IncompatCsumV2|jbd2.IncompatCsumV3) != 0 {
		sb.ChecksumType = jbd2.ChecksumCRC32C
	}
	copy(b, sb.Encode())
	if err := dev.WriteBlock(p, b); err != nil {
		t.Fatal(err)
	}
}

// labelledSuperblock returns the block holding the primary superblock with
// its volume name set to label (checksum recomputed): a real metadata
// block for a transaction.
func labelledSuperblock(dev *fileDev, label string) (uint64, []byte) {
	blk := uint64(superblockOffset / dev.bs)
	off := superblockOffset % dev.bs
	b := dev.block(blk)
	r := b[off : off+superblockSize]
	clear(r[0x78:0x88])
	copy(r[0x78:0x88], label)
	if ROCompatFeatures(binary.LittleEndian.Uint32(r[0x64:]))&ROCompatMetadataCsum != 0 {
		binary.LittleEndian.PutUint32(r[sbChecksumOff:], superblockCsum(r))
	}
	return blk, b
}

// writerCase is one journal format for the writer tests.
type writerCase struct {
	name             string
	bs               int
	mkfs             []string
	compat, incompat uint32
}

var writerCases = []writerCase{
	{"plain-4k", 4096, []string{"-O", "^metadata_csum,^64bit"}, 0, jbd2.IncompatRevoke},
	{"csum-v1-1k", 1024, []string{"-O", "^metadata_csum,^64bit"}, jbd2.CompatChecksum, jbd2.IncompatRevoke},
	{"csum-v2-64bit-1k", 1024, []string{"-O", "metadata_csum,64bit"}, 0, jbd2.IncompatRevoke | jbd2.Incompat64Bit | jbd2.IncompatCsumV2},
	{"csum-v3-64bit-4k", 4096, []string{"-O", "metadata_csum,64bit"}, 0, jbd2.IncompatRevoke | jbd2.Incompat64Bit | jbd2.IncompatCsumV3},
	{"csum-v3-async-4k", 4096, []string{"-O", "metadata_csum,^64bit"}, 0, jbd2.IncompatRevoke | jbd2.IncompatCsumV3 | jbd2.IncompatAsyncCommit},
}

// writerWorkload commits rounds transactions into j: blocks of a free
// region at the end of the volume (rewritten across transactions, with
// the magic at the start of some so they are escaped), a block revoked
// after being journaled, and the superblock with a new label. It returns
// the region's expected content after replay, the label, and how many
// times the log wrapped.
func writerWorkload(t *testing.T, j *jbd2.Journal, dev *fileDev, region uint64, rounds int) (want map[uint64][]byte, label string, wraps int) {
	t.Helper()
	want = map[uint64][]byte{}
	for r := range rounds {
		head := j.Head()
		var tx jbd2.Transaction
		for k := range 6 {
			h := region + uint64((r*5+k*3)%40)
			data := randBytes(uint64(r*1000+k), dev.bs)
			if k == 2 {
				binary.BigEndian.PutUint32(data, jbd2.Magic)
			}
			if !containsHome(tx.Blocks, h) {
				tx.Blocks = append(tx.Blocks, jbd2.Block{Home: h, Data: data})
			}
		}
		if r%3 == 2 {
			// Revoke a block journaled the round before and not in this one.
			for h := range want {
				if !containsHome(tx.Blocks, h) {
					tx.Revoked = append(tx.Revoked, h)
					break
				}
			}
		}
		if r == rounds-3 { // in the log at the end, not checkpointed
			label = fmt.Sprintf("journaled-%d", r)
			blk, b := labelledSuperblock(dev, label)
			tx.Blocks = append(tx.Blocks, jbd2.Block{Home: blk, Data: b})
		}
		if _, err := j.Commit(&tx); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		if j.Head() < head {
			wraps++
		}
		for _, h := range tx.Revoked {
			// A revoke stops replay of the block's earlier log copies; a
			// checkpoint may already have written one home, and that
			// stays.
			want[h] = dev.block(h)
		}
		for _, b := range tx.Blocks {
			if b.Home >= region {
				want[b.Home] = b.Data
			}
		}
	}
	return want, label, wraps
}

func containsHome(bs []jbd2.Block, h uint64) bool {
	for _, b := range bs {
		if b.Home == h {
			return true
		}
	}
	return false
}

// checkRegion compares the region blocks of img with want and the volume
// label.
func checkRegion(t *testing.T, who, img string, bs int, want map[uint64][]byte, label string) {
	t.Helper()
	dev := openFileDev(t, img, bs)
	for h, w := range want {
		if !bytes.Equal(dev.block(h), w) {
			t.Errorf("%s: block %d differs from the last committed (or revoked: untouched) bytes", who, h)
		}
	}
	hdr := dumpe2fsHeader(t, img)
	if got := headerField(hdr, "Filesystem volume name"); got != label {
		t.Errorf("%s: volume name %q, want %q", who, got, label)
	}
	if strings.Contains(headerField(hdr, "Filesystem features"), "needs_recovery") {
		t.Errorf("%s: needs_recovery still set", who)
	}
	if got := headerField(hdr, "Journal start"); got != "0" {
		t.Errorf("%s: journal start %s after recovery, want 0", who, got)
	}
}

// TestJournalWriterReplayedEverywhere: transactions our writer commits
// into a mke2fs image's journal (left uncheckpointed, needs_recovery set,
// as a crash leaves them) are well-formed for debugfs logdump and are
// replayed to the same bytes by e2fsck -fy, by the kernel (mount) and by
// our Recover (a read-write Open). A 1024-block journal makes the log wrap
// and the writer checkpoint on the way.
func TestJournalWriterReplayedEverywhere(t *testing.T) {
	testenv.RequireTool(t, "e2fsck")
	testenv.RequireTool(t, "debugfs")
	for _, c := range writerCases {
		t.Run(c.name, func(t *testing.T) {
			// The smallest journal mke2fs makes: 1024 blocks.
			jsize := fmt.Sprint(c.bs * 1024 >> 20)
			extra := append([]string{"-J", "size=" + jsize, "-E", "lazy_itable_init=0,lazy_journal_init=0"}, c.mkfs...)
			img := mkfs(t, "ext4", c.bs, "", "32M", extra...)
			log, sb := imageJournal(t, img)
			dev := openFileDev(t, img, c.bs)
			setJournalFeatures(t, dev, log, c.compat, c.incompat)
			j, err := jbd2.Open(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			region := sb.BlocksCount - 64
			rounds := int(log.Len())/4 + 5 // about 8 log blocks each: wraps at least once
			want, label, wraps := writerWorkload(t, j, dev, region, rounds)
			if wraps == 0 {
				t.Fatalf("the log did not wrap in %d transactions", rounds)
			}
			patchSuper(t, img, func(b []byte) { b[0x60] |= byte(IncompatRecover) }) // as a mounted volume has it
			checkLogdump(t, img, c.incompat)

			byFsck := copyFile(t, img)
			if out, err := testenv.Output("e2fsck", "-fy", byFsck); err != nil && !strings.Contains(err.Error(), "exit status 1") {
				t.Fatalf("e2fsck -fy: %v\n%s", err, out)
			}
			checkRegion(t, "e2fsck", byFsck, c.bs, want, label)

			ours := copyFile(t, img)
			v, tx, _ := replayOpen(t, ours)
			if tx == 0 {
				t.Fatal("our recovery replayed nothing")
			}
			v.Close()
			checkRegion(t, "fs/ext", ours, c.bs, want, label)
			fsckClean(t, ours)

			t.Run("kernel", func(t *testing.T) {
				byKernel := copyFile(t, img)
				_, done := mountRO(t, byKernel, "ext4")
				done()
				checkRegion(t, "kernel", byKernel, c.bs, want, label)
			})
		})
	}
}

// checkLogdump runs debugfs logdump on img and checks that it walks the
// whole log our writer left: no checksum complaints, and the log ends
// where a log ends.
func checkLogdump(t *testing.T, img string, incompat uint32) {
	t.Helper()
	out, err := testenv.Output("debugfs", "-R", "logdump", img)
	if err != nil {
		t.Fatalf("logdump: %v\n%s", err, out)
	}
	commits := len(regexp.MustCompile(`type 2 \(commit block\)`).FindAllString(out, -1))
	if commits == 0 {
		t.Fatalf("logdump found no commit block:\n%s", out)
	}
	for _, bad := range []string{"checksum", "bad", "invalid", "corrupt"} {
		if strings.Contains(strings.ToLower(out), bad) && !strings.Contains(out, "(checksum)") {
			t.Errorf("logdump says %q:\n%s", bad, out)
		}
	}
	if incompat&jbd2.IncompatRevoke != 0 && !strings.Contains(out, "revoke table") {
		t.Errorf("logdump shows no revoke block:\n%s", out)
	}
	t.Logf("logdump: %d commit blocks", commits)
}

// TestJournalDebugfsCrafted: journals written by debugfs's own journal
// writer (jo/jw/jc), with revokes, an uncommitted last transaction, and
// checksum v3 or none, 32- and 64-bit: our replay writes what e2fsck -fy
// writes, the revoked block stays as it was and the uncommitted one too.
func TestJournalDebugfsCrafted(t *testing.T) {
	testenv.RequireTool(t, "debugfs")
	testenv.RequireTool(t, "e2fsck")
	for _, c := range []struct {
		name string
		bs   int
		mkfs []string
		jo   string
		feat string // expected in dumpe2fs's journal features
	}{
		{"plain-32bit-1k", 1024, []string{"-O", "^64bit,^metadata_csum"}, "jo", "journal_incompat_revoke"},
		{"csum-v3-64bit-4k", 4096, []string{"-O", "64bit,metadata_csum"}, "jo -c", "journal_checksum_v3"},
		{"csum-v3-32bit-1k", 1024, []string{"-O", "^64bit,metadata_csum"}, "jo -c", "journal_checksum_v3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, "ext4", c.bs, "", "32M", c.mkfs...)
			_, sb := imageJournal(t, img)
			base := sb.BlocksCount - 32
			dir := t.TempDir()
			data := randBytes(7, 4*c.bs)
			binary.BigEndian.PutUint32(data[c.bs:], jbd2.Magic) // the second block gets escaped
			file := dir + "/data"
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			cmds := fmt.Sprintf("%s\njw -b %d,%d,%d %s\njw -r %d\njw -b %d %s\njw -b %d -c %s\njc\n",
				c.jo, base, base+1, base+2, file, base, base+3, file, base+4, file)
			cmdFile := dir + "/cmds"
			if err := os.WriteFile(cmdFile, []byte(cmds), 0o644); err != nil {
				t.Fatal(err)
			}
			out := testenv.Run(t, "debugfs", "-w", "-f", cmdFile, img)
			hdr := dumpe2fsHeader(t, img)
			if !strings.Contains(headerField(hdr, "Journal features"), c.feat) || headerField(hdr, "Journal start") == "0" {
				t.Fatalf("debugfs did not leave a %s journal with transactions:\n%s\n%s", c.feat, out, hdr)
			}
			byFsck := copyFile(t, img)
			testenv.Output("e2fsck", "-fy", byFsck) // exit status 1: fixed (replayed)
			ours := copyFile(t, img)
			v, tx, blocks := replayOpen(t, ours)
			v.Close()
			if tx != 3 || blocks != 3 {
				t.Errorf("replayed %d transactions and %d blocks, want 3 and 3 (revoked and uncommitted ones skipped)", tx, blocks)
			}
			zero := make([]byte, c.bs)
			want := map[uint64][]byte{
				base: zero, base + 1: data[c.bs : 2*c.bs], base + 2: data[2*c.bs : 3*c.bs], base + 3: data[:c.bs], base + 4: zero,
			}
			fsckDev, ourDev := openFileDev(t, byFsck, c.bs), openFileDev(t, ours, c.bs)
			for h, w := range want {
				if got := ourDev.block(h); !bytes.Equal(got, w) {
					t.Errorf("block %d: ours differs from the model", h)
				}
				if got := fsckDev.block(h); !bytes.Equal(got, w) {
					t.Errorf("block %d: e2fsck's differs from the model", h)
				}
			}
			fsckClean(t, ours)
		})
	}
}
