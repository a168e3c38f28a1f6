package drills

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"strings"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/internal/voltest"
)

// injectBanner is what the daemon logs for every --inject rule.
const injectBanner = "FAULT INJECTION ON"

// bioFigures are what one daemon's /metrics say about its Bios.
type bioFigures struct {
	budget, degraded, failed, reserve float64
	writeBios, writePages             float64
	maxPages                          float64 // the smallest bucket bound holding every write Bio
}

func readBioFigures(t *testing.T, url string) bioFigures {
	t.Helper()
	mf := scrapeMetrics(t, url)
	f := bioFigures{
		budget:   scalarValue(t, mf, "mpaged_alloc_budget_bytes"),
		degraded: scalarValue(t, mf, "mpaged_alloc_degraded_total"),
		failed:   scalarValue(t, mf, "mpaged_alloc_failed_total"),
		reserve:  scalarValue(t, mf, "mpaged_alloc_reserve_used_total"),
	}
	m, ok := findMetric(mf, "mpaged_bio_pages", "op", "write")
	if !ok {
		t.Fatal("no mpaged_bio_pages{op=\"write\"}")
	}
	h := m.GetHistogram()
	f.writeBios, f.writePages = float64(h.GetSampleCount()), h.GetSampleSum()
	f.maxPages = maxBucket(h)
	return f
}

// maxBucket is the smallest upper bound whose cumulative count is the
// whole count: no Bio was larger.
func maxBucket(h *dto.Histogram) float64 {
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() == h.GetSampleCount() {
			return b.GetUpperBound()
		}
	}
	return math.Inf(1)
}

func (f bioFigures) meanPages() float64 {
	if f.writeBios == 0 {
		return 0
	}
	return f.writePages / f.writeBios
}

// TestFaultBioBudget: the real daemon with its Bio allocator squeezed
// (--bio-budget) still completes writeback: a large PUT is acknowledged
// and is on the image after shutdown. With a budget that fits no full Bio
// the pages per Bio halve (mpaged_alloc_degraded_total rises, the
// pages-per-Bio histogram tops out at what fits); with one that fits no
// Bio at all, every write goes block by block on the reserve Bios.
func TestFaultBioBudget(t *testing.T) {
	size := pick(8<<20, 32<<20)
	r := newRand("fault/bio-budget")
	data := randBytes(r, size)
	row := Row{Drill: "fault/bio-budget", Note: seedNote()}
	defer func() { summary.Add(row) }()
	run := func(budget string) bioFigures {
		t.Helper()
		img := voltest.MakeImage(t, "96M", nil)
		args := []string{"--volume", img, "--cache", "64MiB"}
		if budget != "" {
			args = append(args, "--bio-budget", budget)
		}
		d := testenv.StartDaemon(t, t.TempDir(), args...)
		if strings.Contains(d.Stderr.String(), injectBanner) {
			t.Errorf("fault injection announced without --inject:\n%s", d.Stderr.String())
		}
		d.Must(http.StatusCreated, http.MethodPut, "/v1/files/big", bytes.NewReader(data))
		row.Rounds++
		row.Acknowledged++
		f := readBioFigures(t, d.URL)
		if code := d.Stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("--bio-budget %q: exit %d\n%s", budget, code, d.Stderr.String())
		}
		if got := debugfsCat(t, img, "/big"); !bytes.Equal(got, data) {
			row.Lost++
			t.Errorf("--bio-budget %q: the image holds %d bytes, not the %d acknowledged", budget, len(got), len(data))
		} else {
			row.Verified++
		}
		t.Logf("--bio-budget %q: %+v, %.1f pages per write Bio", budget, f, f.meanPages())
		return f
	}
	base := run("")
	halved := run("2KiB") // 256+32n <= 2048: at most 56 vecs, so 16-page Bios (64 cost 2304)
	reserve := run("200") // less than one 1-page Bio (288): the reserve only
	if base.degraded != 0 || base.meanPages() < 32 {
		t.Errorf("default budget: %v degraded, %.1f pages per Bio: the baseline should send large Bios", base.degraded, base.meanPages())
	}
	if halved.budget != 2048 || halved.degraded == 0 || halved.maxPages > 16 || halved.meanPages() > base.meanPages()/2 {
		t.Errorf("2KiB budget: %+v (%.1f pages per Bio, baseline %.1f): want degraded allocations and Bios of at most 16 pages",
			halved, halved.meanPages(), base.meanPages())
	}
	if reserve.reserve == 0 || reserve.failed == 0 || reserve.writeBios != 0 {
		t.Errorf("200-byte budget: %+v: want every write on the reserve (failed allocations, no multipage write Bios)", reserve)
	}
	row.Faults = int64(halved.degraded + reserve.failed)
	row.Note = fmt.Sprintf("pages/write Bio %.0f -> %.1f (2KiB) -> per block on the reserve (200 B, %.0f reserve Bios); %.0f degraded allocs",
		base.meanPages(), halved.meanPages(), reserve.reserve, halved.degraded)
}

// TestFaultInjectFlag: --inject reaches the real daemon's ring, is logged
// loudly, and its faults are answered as errors without losing anything:
// the first PUTs fail with a JSON 500, one after the rule is spent is
// acknowledged and is on the image after shutdown.
func TestFaultInjectFlag(t *testing.T) {
	const failures = 3
	img := voltest.MakeImage(t, "32M", map[string]string{"old": "old content"})
	d := testenv.StartDaemon(t, t.TempDir(), "--volume", img, "--inject", fmt.Sprintf("op=writev|write,errno=EIO,count=%d", failures))
	if !strings.Contains(d.Stderr.String(), injectBanner) {
		t.Fatalf("--inject without the %q warning:\n%s", injectBanner, d.Stderr.String())
	}
	row := Row{Drill: "fault/daemon-inject"}
	defer func() { summary.Add(row) }()
	data := randBytes(newRand("fault/daemon-inject"), 300<<10)
	for try := 1; ; try++ {
		row.Rounds++
		resp, b := d.Call(http.MethodPut, "/v1/files/new", bytes.NewReader(data))
		if resp.StatusCode == http.StatusCreated {
			row.Acknowledged++
			break
		}
		if err := apitest.CheckError(resp, b, "EIO"); err != nil || resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("PUT %d under --inject: %d %s (%v)", try, resp.StatusCode, b, err)
		}
		row.Faults++
		if try > failures+2 {
			t.Fatalf("PUT still failing after %d tries: the rule's count is not honoured", try)
		}
	}
	row.Note = fmt.Sprintf("--inject op=writev|write,errno=EIO,count=%d: %d PUT(s) refused with 500 EIO, then acknowledged", failures, row.Faults)
	if got := d.Must(http.StatusOK, http.MethodGet, "/v1/files/new", nil); !bytes.Equal(got, data) {
		t.Fatal("GET after the faults: wrong bytes")
	}
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, d.Stderr.String())
	}
	for name, want := range map[string][]byte{"/new": data, "/old": []byte("old content")} {
		if got := debugfsCat(t, img, name); !bytes.Equal(got, want) {
			row.Lost++
			t.Errorf("%s on the image: %d bytes, want %d", name, len(got), len(want))
			continue
		}
		row.Verified++
	}
}
