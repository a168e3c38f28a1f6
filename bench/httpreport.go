package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// HTTPRow is the HTTP figures of a summary row: medians over the
// repetitions.
type HTTPRow struct {
	// CPUMicrosPerRequest is the server's CPU time per request.
	CPUMicrosPerRequest float64 `json:"cpu_us_per_request"`
	// DeviceReadPerByte is the bytes the device read per byte served
	// (1: every byte from the device once; 0: all from a cache; above 1:
	// readahead past what was asked); nil when the device has no counters.
	DeviceReadPerByte *float64 `json:"device_read_per_byte,omitempty"`
	// CacheHitRatio is the daemon's page cache hits over lookups: every
	// lookup, metadata (inode, directory, extent blocks) included, and a
	// page readahead brought in counts as a hit when the reader finds it;
	// DeviceReadPerByte is the cleaner measure of what came from the
	// device.
	CacheHitRatio *float64 `json:"cache_hit_ratio,omitempty"`
	// CacheBytes is the daemon's (or cli-cat's) cache; 0 for nginx.
	CacheBytes int64 `json:"cache_bytes,omitempty"`
	// StartupSeconds is cli-cat's process start and volume open.
	StartupSeconds *float64 `json:"startup_seconds,omitempty"`
}

// httpRowOf summarises the HTTP figures of one runner's runs of a
// workload; nil for block workloads.
func httpRowOf(runs []Result) *HTTPRow {
	if len(runs) == 0 || runs[0].HTTP == nil {
		return nil
	}
	col := func(f func(Result) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return median(v)
	}
	row := &HTTPRow{
		CPUMicrosPerRequest: col(func(r Result) float64 { return safeDiv(r.CPUSeconds*1e6, float64(r.HTTP.Requests)) }),
		CacheBytes:          runs[0].HTTP.CacheBytes,
	}
	if runs[0].HTTP.DeviceReadBytes >= 0 {
		v := col(func(r Result) float64 { return safeDiv(float64(r.HTTP.DeviceReadBytes), float64(r.Bytes())) })
		row.DeviceReadPerByte = &v
	}
	if e := runs[0].Engine; e != nil && e.CacheHits+e.CacheMisses > 0 {
		v := col(func(r Result) float64 {
			return safeDiv(float64(r.Engine.CacheHits), float64(r.Engine.CacheHits+r.Engine.CacheMisses))
		})
		row.CacheHitRatio = &v
	}
	if runs[0].HTTP.StartupSeconds > 0 {
		v := col(func(r Result) float64 { return r.HTTP.StartupSeconds })
		row.StartupSeconds = &v
	}
	return row
}

// hasBlockRows reports whether the report has rows of block workloads.
func (r *Report) hasBlockRows() bool {
	for _, row := range r.Rows {
		if row.HTTP == nil {
			return true
		}
	}
	return false
}

// WriteHTTPTable writes the HTTP rows, if any: their own columns, ratios
// to nginx, the daemon against mpaged cat, and what the figures count.
func (r *Report) WriteHTTPTable(w io.Writer) error {
	var rows []Row
	for _, row := range r.Rows {
		if row.HTTP != nil {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\trunner\tMiB/s\tmin..max\treq/s\tp50\tp99\tp99.9\tCPU s/GiB\tCPU µs/req\tdev/served\tSQE/MiB\tpages/Bio\tallocs/req\tvs "+httpBaselineRunner+"\t")
	for _, row := range rows {
		ratio := "-"
		if row.Ratio != nil {
			ratio = fmt.Sprintf("%.2f/%.2f/%.2f", row.Ratio.Min, row.Ratio.Median, row.Ratio.Max)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f..%.0f\t%.0f\t%s\t%s\t%s\t%.3f\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n",
			row.Workload, row.Runner, row.MiBps.Median, row.MiBps.Min, row.MiBps.Max, row.IOPS,
			usString(row.P50), usString(row.P99), usString(row.P999), row.CPUPerGiB, row.HTTP.CPUMicrosPerRequest,
			optString(row.HTTP.DeviceReadPerByte, "%.2f"),
			optString(row.SQEsPerMiB, "%.2f"), optString(row.PagesPerBio, "%.1f"), optString(row.AllocsPerOp, "%.0f"), ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	r.writeHTTPNotes(w)
	return nil
}

// writeHTTPNotes says what the HTTP columns count and gives the daemon
// against mpaged cat.
func (r *Report) writeHTTPNotes(w io.Writer) {
	if s, ok := r.daemonVsCat(); ok {
		fmt.Fprintf(w, "daemon GET vs mpaged cat (http-get-cold, same repetition): %.2f/%.2f/%.2f (min/median/max)\n", s.Min, s.Median, s.Max)
	}
	for _, row := range r.Rows {
		if row.Runner == runnerCLICat && row.HTTP != nil && row.HTTP.StartupSeconds != nil {
			fmt.Fprintf(w, "cli-cat: its time is the process's whole life; an mpaged cat of an empty file took %.1f ms (median)\n", *row.HTTP.StartupSeconds*1e3)
		}
		if row.Workload == "http-range" && row.Runner == runnerHTTPMpaged && row.HTTP.CacheBytes > 0 {
			fmt.Fprintf(w, "http-range: the daemon's cache is %s, nginx's the kernel's page cache (unbounded); both start without the file's pages, so most ranges miss (dev/served)\n",
				sizeString(row.HTTP.CacheBytes))
		}
	}
	if most, n := r.cachedAtStart(); n > 0 {
		fmt.Fprintf(w, "nginx cold: runs where posix_fadvise(DONTNEED) could not drop all of the file: %d, at most %s left in the page cache (pages the kernel still held)\n",
			n, sizeString(most))
	}
	fmt.Fprintln(w, "server CPU: the daemon process (all threads, /proc/PID/stat), nginx's master and workers; the load generator's is not counted")
}

// cachedAtStart is the most of the file any cold nginx run started with
// in the page cache, and how many runs started with some.
func (r *Report) cachedAtStart() (most int64, runs int) {
	for _, res := range r.Results {
		if res.HTTP != nil && res.HTTP.CachedAtStartBytes > 0 {
			most = max(most, res.HTTP.CachedAtStartBytes)
			runs++
		}
	}
	return most, runs
}

// daemonVsCat is the daemon's cold GET throughput over mpaged cat's, per
// repetition.
func (r *Report) daemonVsCat() (Spread, bool) {
	var ratios []float64
	for _, d := range r.results("http-get-cold", runnerHTTPMpaged) {
		for _, c := range r.results("http-get-cold", runnerCLICat) {
			if c.Rep == d.Rep && c.MiBps() > 0 {
				ratios = append(ratios, d.MiBps()/c.MiBps())
			}
		}
	}
	if len(ratios) == 0 {
		return Spread{}, false
	}
	return spreadOf(ratios), true
}
