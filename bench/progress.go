package bench

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress is a bar on a terminal, or nothing.
type progress struct{ bar *progressbar.ProgressBar }

// minProgress is the planned length under which no bar is drawn.
const minProgress = 3 * time.Second

// newProgress draws a bar of n steps on w when w is a terminal and the run
// is planned to take at least minProgress.
func newProgress(w io.Writer, n int, planned time.Duration) *progress {
	if w == nil || !isTerminal(w) || planned < minProgress {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions(n,
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
	)}
}

func (p *progress) describe(s string) {
	if p.bar != nil {
		p.bar.Describe(s)
	}
}

func (p *progress) step() {
	if p.bar != nil {
		_ = p.bar.Add(1)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
