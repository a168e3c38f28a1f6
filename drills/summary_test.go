package drills

import (
	"strings"
	"testing"
)

func TestSummaryTable(t *testing.T) {
	var s Summary
	s.Add(Row{Drill: "kill", Rounds: 3, Lost: 1})
	s.Add(Row{Drill: "crash", Rounds: 20, Faults: 20, Acknowledged: 7, Verified: 7})
	s.Add(Row{Drill: "kill", Rounds: 5, Acknowledged: 9, Verified: 9})
	var b strings.Builder
	if err := s.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows, got:\n%s", b.String())
	}
	if !strings.HasPrefix(strings.TrimSpace(lines[1]), "crash") || !strings.HasPrefix(strings.TrimSpace(lines[2]), "kill") {
		t.Errorf("rows not sorted by drill:\n%s", b.String())
	}
	if f := strings.Fields(lines[2]); len(f) < 8 || f[1] != "5" || f[3] != "9" || f[5] != "0" {
		t.Errorf("the later kill row should replace the first: %q", lines[2])
	}
}
