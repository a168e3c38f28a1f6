package jbd2

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzSuperblock: any bytes parse or are refused without a panic, and a
// parsed superblock survives Encode and a second parse unchanged.
func FuzzSuperblock(f *testing.F) {
	dev := newMemDev(f, testBS, 64)
	for _, s := range specs {
		log := makeJournal(f, dev, journalSpec{compat: s.compat, incompat: s.incompat, version: s.version, start: 8, len: 32})
		p, _ := log.Map(0)
		f.Add(bytes.Clone(dev.block(p)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseSuperblock(b)
		if err != nil {
			return
		}
		again, err := ParseSuperblock(sb.Encode())
		if err != nil {
			t.Fatalf("re-parse of an encoded superblock: %v", err)
		}
		again.Raw, sb.Raw = [SuperblockSize]byte{}, [SuperblockSize]byte{}
		if *again != *sb {
			t.Fatalf("encode changed the superblock:\n%+v\n%+v", sb, again)
		}
	})
}

// FuzzLogBlock: a log block under any feature set decodes without a
// panic, tags stay inside the block, revoke records inside their count,
// and a block the writer makes verifies.
func FuzzLogBlock(f *testing.F) {
	for _, s := range specs {
		b := make([]byte, testBS)
		l := LayoutOf(&Superblock{BlockSize: testBS, Compat: s.compat, Incompat: s.incompat})
		l.fillRevoke(b, 7, []uint64{1, 2, 3})
		f.Add(b, s.compat, s.incompat)
		c := make([]byte, testBS)
		l.fillCommit(c, 7, 1, 2, 3)
		f.Add(c, s.compat, s.incompat)
	}
	f.Fuzz(func(t *testing.T, b []byte, compat, incompat uint32) {
		if len(b) < headerLen {
			return
		}
		sb := &Superblock{BlockSize: uint32(len(b)), Compat: compat, Incompat: incompat & knownIncompat}
		l := LayoutOf(sb)
		tags := l.ParseTags(b)
		if max := (len(b) - headerLen) / l.TagBytes; len(tags) > max {
			t.Fatalf("%d tags in a %d-byte block of %d-byte tags", len(tags), len(b), l.TagBytes)
		}
		if len(b) >= revokeHeaderLen+l.tailSize() {
			recs, err := l.ParseRevoke(b)
			if err == nil && len(recs)*l.recordBytes() > int(binary.BigEndian.Uint32(b[12:])) {
				t.Fatalf("%d records past r_count %d", len(recs), binary.BigEndian.Uint32(b[12:]))
			}
		}
		if len(b) >= commitNsecOff+4 {
			_ = l.VerifyCommit(b, 0)
			_ = ParseCommit(b)
		}
		if len(b) >= tailLen {
			l.VerifyTail(b)
		}
	})
}

// fuzzVolume is the volume FuzzRecover replays into: 64 Ki blocks of 1
// KiB (room for the home blocks of the kernel's logs in the seeds, from a
// 32 MiB file system), the journal's 64 blocks in two extents at its end.
const (
	fuzzVolume  = 1 << 16
	fuzzJStart  = fuzzVolume - 80
	fuzzJLength = 64
)

// fuzzHeader is FuzzRecover's input header: compat, incompat, s_start,
// s_sequence (4 bytes each) and the UUID (16).
const fuzzHeader = 32

// FuzzRecover: a journal superblock made from the input's header over a
// log made of the rest (1 KiB per block) recovers or fails without a
// panic, a hang, or a write outside the volume. The seeds include logs the
// kernel wrote (testdata/fuzz).
func FuzzRecover(f *testing.F) {
	for _, s := range specs {
		dev := newMemDev(f, testBS, fuzzVolume)
		log := makeJournal(f, dev, journalSpec{compat: s.compat, incompat: s.incompat, version: s.version, start: fuzzJStart, len: fuzzJLength})
		j, err := Open(dev, log)
		if err != nil {
			f.Fatal(err)
		}
		for v := range 3 {
			tx := Transaction{Blocks: []Block{{Home: uint64(10 + v), Data: blockOf(uint64(10+v), v)}, {Home: 20, Data: blockOf(20, v)}}}
			if v == 2 && j.sb.HasIncompat(IncompatRevoke) {
				tx.Revoked = []uint64{10}
			}
			if _, err := j.Commit(&tx); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(fuzzInput(dev, log, j.sb))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// Errors are fine; panics, hangs and stray writes are not.
		replayInput(t, in)
	})
}

// replayInput builds FuzzRecover's journal from in and recovers it (and
// checks that Scan agrees: recoverLikeScan).
func replayInput(t *testing.T, in []byte) (Stats, error) {
	if len(in) < fuzzHeader {
		return Stats{}, nil
	}
	be := binary.BigEndian
	dev := newMemDev(t, testBS, fuzzVolume)
	log := makeJournal(t, dev, journalSpec{compat: be.Uint32(in), incompat: be.Uint32(in[4:]) & knownIncompat,
		start: fuzzJStart, len: fuzzJLength})
	p, _ := log.Map(0)
	jsb := dev.block(p)
	be.PutUint32(jsb[sbStartOff:], be.Uint32(in[8:])%fuzzJLength)
	be.PutUint32(jsb[sbSequenceOff:], be.Uint32(in[12:]))
	copy(jsb[sbUUIDOff:sbUUIDOff+16], in[16:32])
	if be.Uint32(in[4:])&(IncompatCsumV2|IncompatCsumV3) != 0 {
		be.PutUint32(jsb[sbChecksumOff:], superblockCsum(jsb))
	}
	rest := in[fuzzHeader:]
	for lblk := uint64(1); lblk < fuzzJLength && len(rest) > 0; lblk++ {
		p, _ := log.Map(lblk)
		n := copy(dev.block(p), rest)
		rest = rest[n:]
	}
	return recoverLikeScan(t, dev, log)
}

// TestRecoverKernelSeeds: the kernel-written logs of the fuzz corpus
// (checksum v1, v3 with 64-bit tags, none) replay offline: whole
// transactions with their revokes, every checksum good.
func TestRecoverKernelSeeds(t *testing.T) {
	paths, _ := filepath.Glob("testdata/fuzz/FuzzRecover/kernel-*")
	if len(paths) == 0 {
		t.Fatal("no kernel seeds in testdata/fuzz/FuzzRecover")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			in := readCorpusBytes(t, p)
			st, err := replayInput(t, in)
			if err != nil {
				t.Fatal(err)
			}
			if st.Transactions == 0 || st.Blocks == 0 || st.RevokeRecords == 0 || st.ChecksumEnd {
				t.Fatalf("replayed %+v: want transactions, blocks and revoke records, and no checksum failure", st)
			}
		})
	}
}

// readCorpusBytes decodes a one-[]byte fuzz corpus file.
func readCorpusBytes(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("%s: not a []byte corpus file", p)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return []byte(s)
}

// fuzzInput encodes a journal as FuzzRecover's input.
func fuzzInput(dev *memDev, log *ExtentLog, sb *Superblock) []byte {
	in := make([]byte, fuzzHeader)
	be := binary.BigEndian
	be.PutUint32(in, sb.Compat)
	be.PutUint32(in[4:], sb.Incompat)
	be.PutUint32(in[8:], sb.Start)
	be.PutUint32(in[12:], sb.Sequence)
	copy(in[16:], sb.UUID[:])
	last := uint64(1)
	for lblk := uint64(1); lblk < log.Len(); lblk++ {
		p, _ := log.Map(lblk)
		for _, c := range dev.block(p) {
			if c != 0 {
				last = lblk + 1
				break
			}
		}
	}
	for lblk := uint64(1); lblk < last; lblk++ {
		p, _ := log.Map(lblk)
		in = append(in, dev.block(p)...)
	}
	return in
}
