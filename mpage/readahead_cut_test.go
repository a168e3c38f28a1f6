package mpage_test

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/mpage/mpagetest"
)

// TestReadaheadFollowsLayoutCuts reads a file laid out like a big ext2
// file: 1024-block data runs separated on the device by one metadata
// block, Boundary at the end of each run. Readahead windows that ignored
// the layout would straddle every run end and go out as two Bios each; the
// windows line up with the first cut instead, so each 1 MiB window stays one
// Bio.
func TestReadaheadFollowsLayoutCuts(t *testing.T) {
	// Like ext2 with 4 KiB blocks: 12 direct blocks, then 1024-block runs,
	// each followed on the device by the indirect block of the next run.
	const runs, runPages, direct = 8, 1024, 12
	starts := []int{0}
	for i := range runs {
		starts = append(starts, direct+i*runPages)
	}
	var script strings.Builder
	dev := func(page int) int { // device block of file page
		run := 0
		for run+1 < len(starts) && page >= starts[run+1] {
			run++
		}
		return 16 + page + run // one metadata block before each run after the first
	}
	for i, s := range starts {
		end := direct - 1
		if i > 0 {
			end = s + runPages - 1
		}
		fmt.Fprintf(&script, "map %d-%d at %d boundary\n", s, end, dev(s))
	}
	pages := direct + runs*runPages
	size := int64(pages) * 4096
	env := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, DiskBytes: size + 1<<20, CacheBytes: 16 << 20,
		Size: size, Script: script.String()})
	// 64 KiB reads, as a streaming reader makes: readahead ramps its
	// window up (16, 32, 64, 128 pages) before it reaches 256, so without
	// lining up, its full windows would straddle every run end.
	buf := make([]byte, 64<<10)
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := env.Mapping.ReadAt(buf, off)
		if err == io.EOF && n == 0 {
			break
		}
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		page := int(off / 4096)
		if want := mpagetest.Pattern(int64(dev(page))*4096, 4096); buf[0] != want {
			t.Fatalf("page %d holds device block byte %#x, want %#x", page, buf[0], want)
		}
	}
	reads := 0
	for _, r := range env.Ring.Records() {
		if r.Op.IsRead() {
			reads++
		}
	}
	mib := (pages + 255) / 256
	// One Bio per MiB, plus the ramp-up windows, the direct blocks' run
	// and the window shortened to line up.
	if limit := mib + 6; reads > limit {
		t.Fatalf("%d read Bios for %d pages in %d runs, want at most %d", reads, pages, len(starts), limit)
	}
	t.Logf("%d read Bios for %d pages (%d MiB)", reads, pages, mib)

}
