package jbd2

import (
	"errors"
	"testing"
)

// recoverLikeScan scans dev's journal, then recovers it, and fails t
// unless the two agree: the same Stats and error, Scan wrote nothing, and
// the Replay laid over the device as it was before shows every block
// exactly as Recover left it (the journal superblock aside, which only
// Recover rewrites). It returns Recover's result.
func recoverLikeScan(t *testing.T, dev *memDev, log Log) (Stats, error) {
	t.Helper()
	before := dev.clone()
	scanned := dev.clone()
	r, scanErr := Scan(scanned, log, 1<<40)
	st, err := Recover(dev, log)
	if len(scanned.ops) != 0 {
		t.Fatalf("Scan wrote to the device: %v", scanned.ops)
	}
	if !sameError(scanErr, err) {
		t.Fatalf("Scan: %v; Recover: %v", scanErr, err)
	}
	if r.Stats != st {
		t.Fatalf("Scan's stats %+v\nRecover's   %+v", r.Stats, st)
	}
	if err != nil && !errors.Is(err, ErrChecksum) {
		return st, err // Recover wrote nothing either (a refusal before replay)
	}
	overlaid := overlay(t, before, r)
	jsb, _ := log.Map(0)
	for _, blk := range blockUnion(overlaid, dev) {
		if blk != jsb && !overlaid.same(dev, blk) {
			t.Fatalf("block %d: the scan's overlay differs from what Recover wrote", blk)
		}
	}
	return st, err
}

// sameError reports whether a and b are both nil or wrap the same
// sentinel of this package (or are the same message otherwise).
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	for _, s := range []error{ErrNotJournal, ErrCorrupt, ErrChecksum, ErrUnsupported} {
		if errors.Is(a, s) != errors.Is(b, s) {
			return false
		}
	}
	return true
}

// overlay is dev with r's copies laid over it, as a read through the
// overlay ring sees it; it checks the Replay's shape on the way.
func overlay(t *testing.T, dev *memDev, r *Replay) *memDev {
	t.Helper()
	o := dev.clone()
	for i, h := range r.Homes {
		if i > 0 && r.Homes[i-1].Home >= h.Home {
			t.Fatalf("Homes not sorted and distinct at %d: %d then %d", i, r.Homes[i-1].Home, h.Home)
		}
		if len(h.Data) != r.BlockSize {
			t.Fatalf("home block %d: %d bytes of data, want %d", h.Home, len(h.Data), r.BlockSize)
		}
		copy(o.block(h.Home), h.Data)
	}
	return o
}

// blockUnion lists every block either device holds.
func blockUnion(a, b *memDev) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, d := range []*memDev{a, b} {
		for blk := range d.blocks {
			if !seen[blk] {
				seen[blk] = true
				out = append(out, blk)
			}
		}
	}
	return out
}

// TestScanMatchesRecover: on the round-trip, wrap and corrupt-commit
// workloads of the recovery tests, under every journal layout, Scan's
// overlay is byte for byte what Recover writes.
func TestScanMatchesRecover(t *testing.T) {
	for _, spec := range specs {
		t.Run(spec.name, func(t *testing.T) {
			for _, tc := range []struct {
				name    string
				jlen    uint64
				rounds  int
				corrupt bool
			}{
				{"round-trip", testJLength, 12, false},
				{"wrapped", 24, 30, false},
				{"corrupt-last-commit", testJLength, 4, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					dev := newMemDev(t, testBS, testVolume)
					log := makeJournal(t, dev, journalSpec{compat: spec.compat, incompat: spec.incompat, version: spec.version,
						start: testJStart, len: tc.jlen})
					j, err := Open(dev, log)
					if err != nil {
						t.Fatal(err)
					}
					for v := range tc.rounds {
						commitRound(t, j, v, model{}, j.sb.HasIncompat(IncompatRevoke))
					}
					if tc.corrupt {
						// A bad commit checksum (v2/v3) or a bad copy under
						// checksum v1 ends the log before the last
						// transaction; without checksums nothing notices.
						commitPos := uint64(j.Head()) - 1
						cb, _ := log.Map(commitPos)
						dev.block(cb)[commitCsumOff] ^= 0xFF
						copyBlk, _ := log.Map(commitPos - 1)
						dev.block(copyBlk)[100] ^= 0xFF
					}
					st, err := recoverLikeScan(t, dev, log)
					if tc.corrupt && j.l.CsumV2or3 && !st.ChecksumEnd {
						t.Errorf("the corrupt commit did not end the log: %+v", st)
					}
					if err != nil && !(tc.corrupt && errors.Is(err, ErrChecksum)) {
						t.Fatal(err)
					}
					if st.Transactions == 0 {
						t.Fatal("nothing to replay: the comparison proved nothing")
					}
				})
			}
		})
	}
}

// TestScanBadTagChecksum: a committed copy whose tag checksum fails is
// left out by both, and both report ErrChecksum.
func TestScanBadTagChecksum(t *testing.T) {
	dev := newMemDev(t, testBS, testVolume)
	log := makeJournal(t, dev, journalSpec{incompat: IncompatRevoke | IncompatCsumV3, start: testJStart, len: testJLength})
	j, err := Open(dev, log)
	if err != nil {
		t.Fatal(err)
	}
	commitRound(t, j, 0, model{}, true)
	head := j.Head()
	commitRound(t, j, 1, model{}, false) // no revoke block: the descriptor is at head
	commitRound(t, j, 2, model{}, true)
	// The second transaction's first copy follows its descriptor.
	copyBlk, _ := log.Map(uint64(head) + 1)
	dev.block(copyBlk)[7] ^= 0x55
	st, err := recoverLikeScan(t, dev, log)
	if !errors.Is(err, ErrChecksum) || st.BadBlocks != 1 {
		t.Fatalf("Recover: bad blocks %d, %v; want 1 and ErrChecksum", st.BadBlocks, err)
	}
}

// TestScanLimit: a log whose distinct blocks exceed the limit is refused
// by name; one within it is not.
func TestScanLimit(t *testing.T) {
	dev := newMemDev(t, testBS, testVolume)
	log := makeJournal(t, dev, journalSpec{incompat: IncompatRevoke | IncompatCsumV3, start: testJStart, len: testJLength})
	j, err := Open(dev, log)
	if err != nil {
		t.Fatal(err)
	}
	for v := range 6 {
		commitRound(t, j, v, model{}, false)
	}
	ops := len(dev.ops)
	defer func() {
		if len(dev.ops) != ops {
			t.Errorf("Scan wrote: %v", dev.ops[ops:])
		}
	}()
	r, err := Scan(dev, log, 1<<30)
	if err != nil || len(r.Homes) < 2 {
		t.Fatalf("Scan: %d home blocks, %v", len(r.Homes), err)
	}
	if r.Bytes() != int64(len(r.Homes))*testBS {
		t.Errorf("Bytes %d for %d blocks of %d", r.Bytes(), len(r.Homes), testBS)
	}
	if _, err := Scan(dev, log, r.Bytes()-1); !errors.Is(err, ErrScanLimit) {
		t.Errorf("Scan with one byte too few: %v, want ErrScanLimit", err)
	}
	if _, err := Scan(dev, log, r.Bytes()); err != nil {
		t.Errorf("Scan with exactly enough: %v", err)
	}
}
