package jbd2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// memDev is a Device in memory (sparse: blocks never written read as
// zeroes) that records what reaches it: every write and flush in order,
// and writes outside the volume as test failures.
type memDev struct {
	t      testing.TB
	bs     int
	n      uint64
	blocks map[uint64][]byte
	ops    []string // "w<blk>" and "flush", in order
	// writesLeft > 0: that many more writes succeed, then every write
	// fails (a device that died); 0: no limit.
	writesLeft int
	dead       bool
}

func newMemDev(t testing.TB, bs int, n uint64) *memDev {
	return &memDev{t: t, bs: bs, n: n, blocks: map[uint64][]byte{}}
}

// block returns block blk's bytes, allocating them on first use.
func (d *memDev) block(blk uint64) []byte {
	b, ok := d.blocks[blk]
	if !ok {
		b = make([]byte, d.bs)
		d.blocks[blk] = b
	}
	return b
}

func (d *memDev) ReadBlock(blk uint64, b []byte) error {
	if blk >= d.n {
		return fmt.Errorf("read of block %d past %d", blk, d.n)
	}
	if src, ok := d.blocks[blk]; ok {
		copy(b, src)
	} else {
		clear(b)
	}
	return nil
}

func (d *memDev) WriteBlock(blk uint64, b []byte) error {
	if blk >= d.n {
		d.t.Errorf("write of block %d outside the %d-block volume", blk, d.n)
		return fmt.Errorf("write past the end")
	}
	if d.dead {
		return errDeviceDead
	}
	if d.writesLeft > 0 {
		d.writesLeft--
		d.dead = d.writesLeft == 0
	}
	copy(d.block(blk), b)
	d.ops = append(d.ops, fmt.Sprintf("w%d", blk))
	return nil
}

var errDeviceDead = errors.New("device died")

func (d *memDev) Flush() error   { d.ops = append(d.ops, "flush"); return nil }
func (d *memDev) Blocks() uint64 { return d.n }
func (d *memDev) BlockSize() int { return d.bs }

func (d *memDev) clone() *memDev {
	c := newMemDev(d.t, d.bs, d.n)
	for i, b := range d.blocks {
		c.blocks[i] = bytes.Clone(b)
	}
	return c
}

// same reports whether block blk holds the same bytes on d and o.
func (d *memDev) same(o *memDev, blk uint64) bool {
	a, b := make([]byte, d.bs), make([]byte, d.bs)
	d.ReadBlock(blk, a)
	o.ReadBlock(blk, b)
	return bytes.Equal(a, b)
}

// journalSpec is a journal made in memory: its features and where its
// blocks are.
type journalSpec struct {
	name               string
	compat, incompat   uint32
	version            int
	start, len, volume uint64 // journal at device blocks start..start+len; volume blocks
}

// layoutTestJournal places the journal of spec on dev split in two
// extents (so Map is exercised across a seam) and writes its superblock.
func makeJournal(t testing.TB, dev *memDev, spec journalSpec) *ExtentLog {
	t.Helper()
	half := spec.len / 2
	log, err := NewExtentLog([]Extent{
		{Logical: half, Physical: spec.start + half + 7, Len: spec.len - half},
		{Logical: 0, Physical: spec.start, Len: half},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, dev.bs)
	be := binary.BigEndian
	be.PutUint32(b, Magic)
	typ := uint32(BlockSuperV2)
	if spec.version == 1 {
		typ = BlockSuperV1
	}
	be.PutUint32(b[4:], typ)
	be.PutUint32(b[sbBlockSizeOff:], uint32(dev.bs))
	be.PutUint32(b[sbMaxLenOff:], uint32(spec.len))
	be.PutUint32(b[sbFirstOff:], 1)
	be.PutUint32(b[sbSequenceOff:], 100)
	if spec.version != 1 {
		be.PutUint32(b[sbCompatOff:], spec.compat)
		be.PutUint32(b[sbIncompatOff:], spec.incompat)
		for i := range 16 {
			b[sbUUIDOff+i] = byte(0xA0 + i)
		}
		be.PutUint32(b[sbNrUsersOff:], 1)
		if spec.incompat&(IncompatCsumV2|IncompatCsumV3) != 0 {
			b[sbCsumTypeOff] = ChecksumCRC32C
			be.PutUint32(b[sbChecksumOff:], superblockCsum(b))
		}
	}
	pblk, _ := log.Map(0)
	copy(dev.block(pblk), b)
	return log
}

// specs covers every tag size and checksum kind.
var specs = []journalSpec{
	{name: "v1", version: 1},
	{name: "v2-plain", incompat: IncompatRevoke},
	{name: "csum-v1", compat: CompatChecksum, incompat: IncompatRevoke},
	{name: "csum-v2", incompat: IncompatRevoke | IncompatCsumV2},
	{name: "csum-v2-64bit", incompat: IncompatRevoke | IncompatCsumV2 | Incompat64Bit},
	{name: "csum-v3", incompat: IncompatRevoke | IncompatCsumV3},
	{name: "csum-v3-64bit", incompat: IncompatRevoke | IncompatCsumV3 | Incompat64Bit},
	{name: "64bit-async", compat: CompatChecksum, incompat: IncompatRevoke | Incompat64Bit | IncompatAsyncCommit},
	{name: "csum-v3-async", incompat: IncompatRevoke | IncompatCsumV3 | IncompatAsyncCommit},
}

const (
	testBS      = 1024
	testVolume  = 4096
	testJStart  = 2000
	testJLength = 256
)

// blockOf is recognisable content for home block h, version v; every
// fourth one starts with the journal magic so escaping is exercised.
func blockOf(h uint64, v int) []byte {
	b := make([]byte, testBS)
	r := rand.New(rand.NewPCG(h, uint64(v)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if (h+uint64(v))%4 == 0 {
		binary.BigEndian.PutUint32(b, Magic)
	}
	return b
}

// model is what the volume's home blocks should hold after replay.
type model map[uint64][]byte

// commitRound commits transaction number v of a workload: a few blocks,
// some rewritten from earlier rounds, one revoked when the journal has
// the revoke feature.
func commitRound(t *testing.T, j *Journal, v int, want model, revoke bool) {
	t.Helper()
	var tx Transaction
	for k := range 5 {
		h := uint64(50 + (v*3+k*7)%40)
		if v%2 == 1 && k == 0 {
			h = uint64(1) << 32 // past 32 bits: only with 64bit
			if !j.l.Is64Bit || j.io.dev.Blocks() <= h {
				h = uint64(testVolume - 1)
			}
		}
		dup := false
		for _, b := range tx.Blocks {
			dup = dup || b.Home == h
		}
		if dup {
			continue
		}
		tx.Blocks = append(tx.Blocks, Block{Home: h, Data: blockOf(h, v)})
	}
	if revoke && v > 0 {
		r := uint64(50 + ((v-1)*3)%40) // written the round before
		inTx := false
		for _, b := range tx.Blocks {
			inTx = inTx || b.Home == r
		}
		if !inTx {
			tx.Revoked = append(tx.Revoked, r)
		}
	}
	if _, err := j.Commit(&tx); err != nil {
		t.Fatalf("commit %d: %v", v, err)
	}
	for _, r := range tx.Revoked {
		delete(want, r)
	}
	for _, b := range tx.Blocks {
		want[b.Home] = b.Data
	}
}

func TestCommitRecoverRoundTrip(t *testing.T) {
	for _, spec := range specs {
		t.Run(spec.name, func(t *testing.T) {
			dev := newMemDev(t, testBS, testVolume)
			log := makeJournal(t, dev, journalSpec{compat: spec.compat, incompat: spec.incompat, version: spec.version,
				start: testJStart, len: testJLength})
			j, err := Open(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			revoke := j.sb.HasIncompat(IncompatRevoke)
			want := model{}
			const rounds = 12
			for v := range rounds {
				commitRound(t, j, v, want, revoke)
			}
			before := dev.clone()
			st, err := Recover(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			if st.Transactions != rounds || st.End-st.Start != rounds {
				t.Errorf("replayed %d transactions (%d..%d), want %d", st.Transactions, st.Start, st.End, rounds)
			}
			if revoke && (st.RevokeRecords == 0 || st.Revoked == 0) {
				t.Errorf("revoke records %d, revoked copies %d: want both > 0", st.RevokeRecords, st.Revoked)
			}
			for h, b := range want {
				if !bytes.Equal(dev.block(h), b) {
					t.Errorf("block %d not replayed to its last committed bytes", h)
				}
			}
			for h := uint64(0); h < testJStart; h++ {
				if _, ok := want[h]; !ok && !dev.same(before, h) {
					t.Errorf("block %d changed but was never committed (or was revoked)", h)
				}
			}
			sb := mustSuper(t, dev, log)
			if sb.Start != 0 || sb.Sequence != st.End+1 {
				t.Errorf("after recovery s_start %d s_sequence %d, want 0 and %d", sb.Start, sb.Sequence, st.End+1)
			}
			// Idempotent: the log is empty now; nothing more happens.
			st2, err := Recover(dev, log)
			if err != nil || st2.Transactions != 0 {
				t.Errorf("second recovery: %+v, %v", st2, err)
			}
		})
	}
}

func mustSuper(t testing.TB, dev *memDev, log Log) *Superblock {
	t.Helper()
	sb, err := loadSuperblock(newLogIO(dev, log))
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// TestReplayTwice: a crash after replay, before the superblock says the
// log is empty, replays again to the same bytes.
func TestReplayTwice(t *testing.T) {
	dev := newMemDev(t, testBS, testVolume)
	log := makeJournal(t, dev, journalSpec{incompat: IncompatRevoke | IncompatCsumV3, start: testJStart, len: testJLength})
	j, err := Open(dev, log)
	if err != nil {
		t.Fatal(err)
	}
	want := model{}
	for v := range 6 {
		commitRound(t, j, v, want, true)
	}
	first := dev.clone()
	if _, err := Recover(first, log); err != nil {
		t.Fatal(err)
	}
	// The crash: replayed blocks are home, the superblock still says
	// s_start != 0. Recover from that state.
	again := first.clone()
	jsb, _ := log.Map(0)
	copy(again.block(jsb), dev.block(jsb))
	if _, err := Recover(again, log); err != nil {
		t.Fatal(err)
	}
	for i := range uint64(testVolume) {
		if !first.same(again, i) {
			t.Fatalf("block %d differs between one replay and two", i)
		}
	}
}

// TestCommitOrder: the commit block reaches the device after a flush that
// follows every other block of its transaction (no async_commit), and the
// superblock's start is flushed before the first transaction.
func TestCommitOrder(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) {
			inc := IncompatRevoke | IncompatCsumV3
			if async {
				inc |= IncompatAsyncCommit
			}
			dev := newMemDev(t, testBS, testVolume)
			log := makeJournal(t, dev, journalSpec{incompat: inc, start: testJStart, len: testJLength})
			j, err := Open(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			head := j.Head()
			tx := &Transaction{Blocks: []Block{{Home: 10, Data: blockOf(10, 1)}, {Home: 11, Data: blockOf(11, 1)}}}
			if _, err := j.Commit(tx); err != nil {
				t.Fatal(err)
			}
			jsb, _ := log.Map(0)
			commit, _ := log.Map(uint64(head) + 3) // descriptor, 2 copies, commit
			want := []string{fmt.Sprintf("w%d", jsb), "flush"}
			for k := range 3 {
				p, _ := log.Map(uint64(head) + uint64(k))
				want = append(want, fmt.Sprintf("w%d", p))
			}
			if !async {
				want = append(want, "flush")
			}
			want = append(want, fmt.Sprintf("w%d", commit), "flush")
			if fmt.Sprint(dev.ops) != fmt.Sprint(want) {
				t.Errorf("device saw %v\nwant        %v", dev.ops, want)
			}
		})
	}
}

// TestWrapAndCheckpoint: transactions fill a small log many times over;
// each checkpoint writes home what was committed, and a crash at any
// point recovers the last committed state.
func TestWrapAndCheckpoint(t *testing.T) {
	for _, spec := range specs[1:] {
		t.Run(spec.name, func(t *testing.T) {
			dev := newMemDev(t, testBS, testVolume)
			log := makeJournal(t, dev, journalSpec{compat: spec.compat, incompat: spec.incompat, start: testJStart, len: 24})
			j, err := Open(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			want := model{}
			wrapped := false
			for v := range 40 {
				prev := j.Head()
				commitRound(t, j, v, want, j.sb.HasIncompat(IncompatRevoke))
				wrapped = wrapped || j.Head() < prev
				crash := dev.clone()
				if _, err := Recover(crash, log); err != nil {
					t.Fatalf("round %d: %v", v, err)
				}
				for h, b := range want {
					if !bytes.Equal(crash.block(h), b) {
						t.Fatalf("round %d: crash then recovery: block %d not at its last committed bytes", v, h)
					}
				}
			}
			if !wrapped {
				t.Error("the log never wrapped")
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			for h, b := range want {
				if !bytes.Equal(dev.block(h), b) {
					t.Errorf("after Close: block %d not checkpointed", h)
				}
			}
			if sb := mustSuper(t, dev, log); sb.Start != 0 {
				t.Errorf("after Close s_start %d, want 0", sb.Start)
			}
		})
	}
}

// TestCorruptLastCommit: a bad checksum in the last transaction ends the
// log before it; the transactions before are replayed.
func TestCorruptLastCommit(t *testing.T) {
	for _, spec := range specs[2:] { // the checksummed ones
		t.Run(spec.name, func(t *testing.T) {
			dev := newMemDev(t, testBS, testVolume)
			log := makeJournal(t, dev, journalSpec{compat: spec.compat, incompat: spec.incompat, start: testJStart, len: testJLength})
			j, err := Open(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			want := model{}
			for v := range 3 {
				commitRound(t, j, v, want, false)
			}
			good := dev.clone()
			commitRound(t, j, 3, model{}, false)
			// Flip a byte of the last transaction's last copy (checksum
			// v1 and tag checksums cover it) and of its commit block's
			// checksum (v2/v3 cover that).
			commitPos := uint64(j.Head()) - 1
			copyBlk, _ := log.Map(commitPos - 1)
			dev.block(copyBlk)[100] ^= 0xFF
			if j.l.CsumV2or3 {
				cb, _ := log.Map(commitPos)
				dev.block(cb)[commitCsumOff] ^= 0xFF
			}
			st, err := Recover(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			if st.Transactions != 3 {
				t.Errorf("replayed %d transactions, want 3 (%s)", st.Transactions, st.EndReason)
			}
			if _, err := Recover(good, log); err != nil {
				t.Fatal(err)
			}
			for h := uint64(0); h < testJStart; h++ {
				if !dev.same(good, h) {
					t.Errorf("block %d: the corrupt transaction was (partly) replayed", h)
				}
			}
		})
	}
}

// BenchmarkCommit commits transactions of 16 blocks (csum v3, 64-bit) on
// the memory device: the writer's own cost, without device latency.
func BenchmarkCommit(b *testing.B) {
	dev := newMemDev(b, 4096, 1<<20)
	log := makeJournal(b, dev, journalSpec{incompat: IncompatRevoke | IncompatCsumV3 | Incompat64Bit, start: 1 << 19, len: 8192})
	j, err := Open(dev, log)
	if err != nil {
		b.Fatal(err)
	}
	tx := Transaction{}
	for i := range 16 {
		tx.Blocks = append(tx.Blocks, Block{Home: uint64(100 + i), Data: make([]byte, 4096)})
	}
	b.SetBytes(16 * 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.Commit(&tx); err != nil {
			b.Fatal(err)
		}
		dev.ops = dev.ops[:0]
	}
}

// BenchmarkRecover replays a log of 100 transactions of 16 blocks (csum
// v3, 64-bit) on the memory device.
func BenchmarkRecover(b *testing.B) {
	dev := newMemDev(b, 4096, 1<<20)
	log := makeJournal(b, dev, journalSpec{incompat: IncompatRevoke | IncompatCsumV3 | Incompat64Bit, start: 1 << 19, len: 8192})
	j, err := Open(dev, log)
	if err != nil {
		b.Fatal(err)
	}
	for v := range 100 {
		tx := Transaction{}
		for i := range 16 {
			data := make([]byte, 4096)
			binary.BigEndian.PutUint64(data[8:], uint64(v*16+i))
			tx.Blocks = append(tx.Blocks, Block{Home: uint64(100 + i + v%7), Data: data})
		}
		if _, err := j.Commit(&tx); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(100 * 16 * 4096)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		d := dev.clone()
		b.StartTimer()
		if _, err := Recover(d, log); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTornCommit: the device dies at every point of a transaction's
// writes; recovery replays exactly the transactions committed before it,
// and the journal refuses further commits (aborted).
func TestTornCommit(t *testing.T) {
	for _, spec := range specs[1:] {
		t.Run(spec.name, func(t *testing.T) {
			for cut := 1; ; cut++ {
				dev := newMemDev(t, testBS, testVolume)
				log := makeJournal(t, dev, journalSpec{compat: spec.compat, incompat: spec.incompat, start: testJStart, len: testJLength})
				j, err := Open(dev, log)
				if err != nil {
					t.Fatal(err)
				}
				want := model{}
				for v := range 3 {
					commitRound(t, j, v, want, j.sb.HasIncompat(IncompatRevoke))
				}
				dev.writesLeft = cut
				_, err = j.Commit(&Transaction{Blocks: []Block{{Home: 60, Data: blockOf(60, 9)}, {Home: 61, Data: blockOf(61, 9)}}})
				if err == nil {
					// A descriptor, two copies and the commit block: four writes.
					if cut < 4 {
						t.Fatalf("cut after %d writes: the commit succeeded", cut)
					}
					return // the transaction fit before the cut: every cut point was tried
				}
				if _, err := j.Commit(&Transaction{}); !errors.Is(err, ErrAborted) {
					t.Fatalf("cut %d: commit after a failed one: %v, want ErrAborted", cut, err)
				}
				dev.dead = false
				st, err := Recover(dev, log)
				if err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				if st.Transactions != 3 {
					t.Fatalf("cut %d: replayed %d transactions, want 3", cut, st.Transactions)
				}
				for h, b := range want {
					if !bytes.Equal(dev.block(h), b) {
						t.Fatalf("cut %d: block %d not at its last committed bytes", cut, h)
					}
				}
			}
		})
	}
}

// TestCommitRefusals: malformed or oversized transactions are refused
// before anything is written, and the journal stays usable.
func TestCommitRefusals(t *testing.T) {
	const volume = 1 << 33 // past 32-bit block numbers: the journal is not 64-bit
	dev := newMemDev(t, testBS, volume)
	log := makeJournal(t, dev, journalSpec{incompat: IncompatRevoke, start: testJStart, len: 24})
	j, err := Open(dev, log)
	if err != nil {
		t.Fatal(err)
	}
	ok := blockOf(5, 0)
	many := make([]Block, 40)
	for i := range many {
		many[i] = Block{Home: uint64(100 + i), Data: ok}
	}
	for _, c := range []struct {
		name string
		tx   Transaction
		want error
	}{
		{"short block", Transaction{Blocks: []Block{{Home: 5, Data: ok[:100]}}}, ErrTransaction},
		{"outside the volume", Transaction{Blocks: []Block{{Home: volume, Data: ok}}}, ErrTransaction},
		{"past 32 bits", Transaction{Blocks: []Block{{Home: 1 << 32, Data: ok}}}, ErrTransaction},
		{"twice", Transaction{Blocks: []Block{{Home: 5, Data: ok}, {Home: 5, Data: ok}}}, ErrTransaction},
		{"written and revoked", Transaction{Blocks: []Block{{Home: 5, Data: ok}}, Revoked: []uint64{5}}, ErrTransaction},
		{"revoke outside", Transaction{Revoked: []uint64{volume + 1}}, ErrTransaction},
		{"revoke past 32 bits", Transaction{Revoked: []uint64{1 << 32}}, ErrTransaction},
		{"larger than the log", Transaction{Blocks: many}, ErrTooBig},
	} {
		if _, err := j.Commit(&c.tx); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if len(dev.ops) != 0 {
		t.Errorf("refused transactions wrote %v", dev.ops)
	}
	if _, err := j.Commit(&Transaction{Blocks: []Block{{Home: 5, Data: ok}}}); err != nil {
		t.Fatalf("a good transaction after the refusals: %v", err)
	}
}

// TestEnableRevoke: a v2 journal without the revoke feature refuses
// revoke records until EnableRevoke, which sets the feature durably (the
// superblock read back has it, and a flush follows its write); a v1
// journal has no feature words and is refused.
func TestEnableRevoke(t *testing.T) {
	for _, c := range []struct {
		name    string
		spec    journalSpec
		wantErr error
	}{
		{"v2", journalSpec{incompat: IncompatCsumV3}, nil},
		{"v2-already", journalSpec{incompat: IncompatRevoke}, nil},
		{"v1", journalSpec{version: 1}, ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := newMemDev(t, testBS, testVolume)
			c.spec.start, c.spec.len = testJStart, testJLength
			log := makeJournal(t, dev, c.spec)
			j, err := Open(dev, log)
			if err != nil {
				t.Fatal(err)
			}
			tx := &Transaction{Blocks: []Block{{Home: 10, Data: blockOf(10, 1)}}, Revoked: []uint64{11}}
			if c.spec.incompat&IncompatRevoke == 0 {
				if _, err := j.Commit(tx); !errors.Is(err, ErrTransaction) {
					t.Fatalf("revoke before EnableRevoke: %v", err)
				}
			}
			dev.ops = nil
			err = j.EnableRevoke()
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("EnableRevoke: %v, want %v", err, c.wantErr)
			}
			if err != nil {
				return
			}
			if !mustSuper(t, dev, log).HasIncompat(IncompatRevoke) {
				t.Fatal("the superblock on the device has no revoke feature")
			}
			if c.spec.incompat&IncompatRevoke == 0 && (len(dev.ops) == 0 || dev.ops[len(dev.ops)-1] != "flush") {
				t.Fatalf("EnableRevoke's write is not flushed: %v", dev.ops)
			}
			if _, err := j.Commit(tx); err != nil {
				t.Fatalf("revoke after EnableRevoke: %v", err)
			}
		})
	}
}
