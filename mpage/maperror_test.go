package mpage_test

import (
	"errors"
	"sync"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// TestMapErrorTravelsWithPage: a read that fails because the mapper failed
// reports the mapper's error, wrapped in a MapError naming the block, to
// that page's readers; a read of another page that fails for another
// reason (the device) never reports it, however the two interleave. Before
// mapper errors travelled with the page, the engine reported a bare EIO and
// the file system kept one "last mapper error" per file, which a reader of
// either page could pick up.
func TestMapErrorTravelsWithPage(t *testing.T) {
	e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, Size: 8 * mpage.PageSize,
		Script: "map 0-7 at 100\nfail 2 enospc"})
	e.Mapping.SetReadahead(0)
	e.Ring.FailAt(uring.OpReadv, 105*4096, syscall.EIO) // page 5: the device fails
	buf := make([]byte, mpage.PageSize)
	check := func(page int, err error) {
		var merr *mpage.MapError
		switch page {
		case 2:
			if !errors.Is(err, syscall.EIO) || !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &merr) || merr.Block != 2 || merr.Create {
				t.Errorf("read of page 2 (mapper fails): %v; want EIO wrapping the mapper's ENOSPC for block 2", err)
			}
		case 5:
			if !errors.Is(err, syscall.EIO) || errors.As(err, &merr) {
				t.Errorf("read of page 5 (device fails): %v; want EIO and no mapper error", err)
			}
		}
	}
	// In turn, then at once: each reader sees its own page's failure.
	for _, page := range []int{2, 5, 2} {
		_, err := e.Mapping.ReadAt(buf, int64(page)*mpage.PageSize)
		check(page, err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		page := []int{2, 5}[g%2]
		wg.Go(func() {
			b := make([]byte, mpage.PageSize)
			for range 20 {
				_, err := e.Mapping.ReadAt(b, int64(page)*mpage.PageSize)
				check(page, err)
			}
		})
	}
	wg.Wait()
	// The mapper recovers: the page reads, and its error is gone.
	if err := e.Mapper.Load("map 0-7 at 100"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Mapping.ReadAt(buf, 2*mpage.PageSize); err != nil {
		t.Fatalf("read after the mapper recovered: %v", err)
	}
}

// unmappedMapper answers every allocating call without Mapped and without
// an error: a broken file system.
type unmappedMapper struct{}

func (unmappedMapper) MapBlocks(bm *mpage.BlockMap) error {
	bm.Flags, bm.Len = 0, 1
	return nil
}

// TestMapErrorOnWrite: a mapper failure on the write path is reported by
// WritePages and, until the page is written, by Err and WriteAndWait, as a
// MapError naming the block, with the mapper's error (or ErrUnmapped for a
// mapper that left the block unmapped) visible through it. Before, the
// unmapped answer was an anonymous error, and the run's was built and
// dropped.
func TestMapErrorOnWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   mpagetest.EnvConfig
		want  error
		block uint64 // the file block whose allocation fails first
	}{
		{"unmapped", mpagetest.EnvConfig{Mapper: unmappedMapper{}}, mpage.ErrUnmapped, 0},
		{"enospc", mpagetest.EnvConfig{Script: "map 0 at 100\nalloc at 200 max 0"}, syscall.ENOSPC, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := mpagetest.NewEnvWith(t, tc.cfg)
			mustWrite(t, e.Mapping, make([]byte, 2*mpage.PageSize), 0)
			wbc := mpage.WritebackControl{SyncMode: mpage.SyncAll}
			werr := e.Mapping.WritePages(&wbc)
			e.Drain()
			for what, err := range map[string]error{"WritePages": werr, "Err": e.Mapping.Err(), "WriteAndWait": e.Mapping.WriteAndWait(0, -1)} {
				var merr *mpage.MapError
				if !errors.Is(err, tc.want) || !errors.As(err, &merr) || !merr.Create || merr.Block != tc.block || merr.Mapping != "file" {
					t.Errorf("%s: %v; want a MapError for allocating block %d wrapping %v", what, err, tc.block, tc.want)
				}
			}
		})
	}
}
