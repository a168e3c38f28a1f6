package bench

import (
	"fmt"
	"io"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WriteSVG draws one chart per workload, stacked: a bar per runner at its
// median throughput, with an error bar from the slowest to the fastest
// repetition. Each workload has its own scale (4 KiB random I/O and
// 128 KiB streams differ by orders of magnitude).
func (r *Report) WriteSVG(w io.Writer) error {
	var workloads []string
	for _, row := range r.Rows {
		if len(workloads) == 0 || workloads[len(workloads)-1] != row.Workload {
			workloads = append(workloads, row.Workload)
		}
	}
	if len(workloads) == 0 {
		return fmt.Errorf("no results to chart")
	}
	plots := make([][]*plot.Plot, len(workloads))
	for i, wl := range workloads {
		p, err := r.workloadChart(wl)
		if err != nil {
			return err
		}
		plots[i] = []*plot.Plot{p}
	}
	const rowHeight = 2.6 * vg.Inch
	c := vgsvg.New(9*vg.Inch, rowHeight*vg.Length(len(workloads)))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(workloads), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4),
		PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(12)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	_, err := c.WriteTo(w)
	return err
}

// workloadChart is one workload's bars and spreads.
func (r *Report) workloadChart(workload string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: throughput (median, min..max of %d)", workload, r.Config.Repetitions)
	p.Y.Label.Text = "MiB/s"
	p.Y.Min = 0
	var names []string
	var xys plotter.XYs
	var errs plotter.YErrors
	for _, row := range r.Rows {
		if row.Workload != workload {
			continue
		}
		x := float64(len(names))
		names = append(names, row.Runner)
		xys = append(xys, plotter.XY{X: x, Y: row.MiBps.Median})
		errs = append(errs, struct{ Low, High float64 }{row.MiBps.Median - row.MiBps.Min, row.MiBps.Max - row.MiBps.Median})
		// One chart per bar, so each family has its colour: the
		// engine's runners one, the tools it is measured against another.
		bar, err := plotter.NewBarChart(plotter.Values{row.MiBps.Median}, vg.Points(28))
		if err != nil {
			return nil, fmt.Errorf("chart %s: %w", workload, err)
		}
		bar.XMin = x
		bar.Color = plotutil.Color(0)
		if !strings.HasPrefix(row.Runner, "engine") && !isMpagedRunner(row.Runner) {
			bar.Color = plotutil.Color(1)
		}
		bar.LineStyle.Width = 0
		p.Add(bar)
	}
	spread, err := plotter.NewYErrorBars(struct {
		plotter.XYs
		plotter.YErrors
	}{xys, errs})
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", workload, err)
	}
	spread.CapWidth = vg.Points(10)
	spread.LineStyle.Width = vg.Points(1.2)
	p.Add(spread)
	p.NominalX(names...)
	return p, nil
}
