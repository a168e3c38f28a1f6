package testenv

import (
	"errors"
	"os/exec"
	"regexp"
	"strings"
)

// summaryFix is what e2fsck says of the superblock's free counts, which
// lag the group descriptors on a journaled volume between syncs (as the
// kernel's do): not an inconsistency.
var summaryFix = regexp.MustCompile(`^Free (blocks|inodes) count wrong \(\d+, counted=\d+\)\.$`)

// answered is every question e2fsck -y answered, wherever its prompt
// sits: on a line of its own ("Fix? yes"), after the problem on the same
// line ("... should be 1.  Fix? yes"), or in other words ("Connect to
// /lost+found? yes", "Clear? yes").
var answered = regexp.MustCompile(`\? yes\s*$`)

// OnlySummaryFixed reports whether e2fsck -fy, which returned err and
// printed out, exited 1 (errors fixed) having fixed only the superblock's
// free counts: what a journal replay (or an orphan list released) leaves
// for it on a volume the journal kept consistent. Every question it
// answered must be a "Fix?" on the line after a free-count message.
func OnlySummaryFixed(err error, out string) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		return false
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !answered.MatchString(l) {
			continue
		}
		if strings.TrimSpace(l) != "Fix? yes" || i == 0 || !summaryFix.MatchString(lines[i-1]) {
			return false
		}
	}
	return true
}
