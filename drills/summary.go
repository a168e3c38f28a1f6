package drills

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
)

// Row is one drill's figures. Counts a drill has no use for stay zero and
// print as "-" only when the drill says they do not apply (NA).
type Row struct {
	Drill        string
	Rounds       int64 // rounds, cuts or requests
	Faults       int64 // faults injected (errors, cuts, kills, hostile inputs)
	Acknowledged int64 // writes the system said were durable (or requests answered)
	Verified     int64 // of those, checked byte for byte afterwards
	Lost         int64 // acknowledged and then missing or wrong: must be 0
	Crashes      int64 // panics or unexpected exits: must be 0
	Hangs        int64 // operations that outlived their timeout: must be 0
	Note         string
}

// Summary collects rows from drills running in parallel.
type Summary struct {
	mu   sync.Mutex
	rows []Row
}

// Add records r, replacing an earlier row of the same drill.
func (s *Summary) Add(r Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.IndexFunc(s.rows, func(o Row) bool { return o.Drill == r.Drill }); i >= 0 {
		s.rows[i] = r
		return
	}
	s.rows = append(s.rows, r)
}

// Rows returns the rows sorted by drill name.
func (s *Summary) Rows() []Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := slices.Clone(s.rows)
	slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.Drill, b.Drill) })
	return rows
}

// WriteTable prints the rows as one aligned table.
func (s *Summary) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "drill\trounds\tfaults\tacknowledged\tverified\tlost\tcrashes\thangs\t\tnote")
	for _, r := range s.Rows() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\t%s\n",
			r.Drill, r.Rounds, r.Faults, r.Acknowledged, r.Verified, r.Lost, r.Crashes, r.Hangs, r.Note)
	}
	return tw.Flush()
}
