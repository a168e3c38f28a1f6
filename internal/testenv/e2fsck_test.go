package testenv

import (
	"os/exec"
	"testing"
)

// TestOnlySummaryFixed: only free-count fixes pass; any other question
// e2fsck answered, however it phrases or places its prompt, fails.
func TestOnlySummaryFixed(t *testing.T) {
	exit1 := exec.Command("sh", "-c", "exit 1").Run()
	exit4 := exec.Command("sh", "-c", "exit 4").Run()
	const free = "Free blocks count wrong (100, counted=98).\nFix? yes\n\nFree inodes count wrong (20, counted=19).\nFix? yes\n"
	for _, tc := range []struct {
		name string
		err  error
		out  string
		want bool
	}{
		{"free counts", exit1, "Pass 5: Checking group summary information\n" + free + "\n***** FILE SYSTEM WAS MODIFIED *****\n", true},
		{"exit 4", exit4, free, false},
		{"no error", nil, free, false},
		{"prompt on the problem's line", exit1, free + "Inode 12 ref count is 3, should be 1.  Fix? yes\n", false},
		{"other words", exit1, "Unattached inode 13\nConnect to /lost+found? yes\n" + free, false},
		{"clear", exit1, "Entry 'x' in / (2) has deleted/unused inode 14.  Clear? yes\n", false},
		{"fix after another problem", exit1, "Block bitmap differences:  -(1000--1001)\nFix? yes\n" + free, false},
	} {
		if got := OnlySummaryFixed(tc.err, tc.out); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
