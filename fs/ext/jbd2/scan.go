package jbd2

import (
	"fmt"
	"slices"
)

// Replay is what Recover would write home, found without writing: for
// each home block, the last committed copy of it in the log.
type Replay struct {
	// Stats are the ones Recover would return: Blocks counts every copy
	// replay writes (a home block logged in three transactions counts
	// three times), Homes below has each home block once.
	Stats Stats
	// BlockSize is the size of every Data.
	BlockSize int
	// Homes, sorted by Home with no duplicates.
	Homes []HomeBlock
}

// HomeBlock is one home block's content after replay.
type HomeBlock struct {
	Home uint64 // device block replay writes
	Log  uint32 // journal block holding the copy that wins
	Data []byte // the copy, as replay writes it (escape undone)
}

// Bytes is the memory the copies take.
func (r *Replay) Bytes() int64 { return int64(len(r.Homes)) * int64(r.BlockSize) }

// Scan walks the log as Recover does (the same passes, checks and end of
// log: see Recover) and returns what replay would write, writing nothing.
// Copies are read into memory as the walk meets them; a log whose distinct
// home blocks would take more than maxBytes fails with ErrScanLimit
// before more is read. A committed copy with a bad tag checksum is left
// out, as Recover leaves it, and Scan then returns the Replay of the rest
// with ErrChecksum (Recover fails there too, after replaying the rest).
func Scan(dev Device, log Log, maxBytes int64) (*Replay, error) {
	w, st, revoked, err := walkCommitted(dev, log)
	r := &Replay{Stats: st, BlockSize: dev.BlockSize()}
	if err != nil || w == nil {
		return r, err
	}
	index := make(map[uint64]int) // home block -> its position in r.Homes
	err = w.eachCopy(&r.Stats, revoked, func(home uint64, lblk uint32, data []byte) error {
		if i, ok := index[home]; ok {
			r.Homes[i].Log = lblk
			copy(r.Homes[i].Data, data)
			return nil
		}
		if need := int64(len(r.Homes)+1) * int64(r.BlockSize); need > maxBytes {
			return fmt.Errorf("%w: the log's committed blocks take more than %d bytes", ErrScanLimit, maxBytes)
		}
		index[home] = len(r.Homes)
		r.Homes = append(r.Homes, HomeBlock{Home: home, Log: lblk, Data: slices.Clone(data)})
		return nil
	})
	slices.SortFunc(r.Homes, func(a, b HomeBlock) int {
		switch {
		case a.Home < b.Home:
			return -1
		case a.Home > b.Home:
			return 1
		}
		return 0
	})
	return r, err
}
