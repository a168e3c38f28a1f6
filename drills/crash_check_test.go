package drills

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/uring"
)

// check writes cut c to an image, repairs it with e2fsck, opens it and
// compares every path with the oracle. A failing cut stops the drill with
// everything found wrong in it, the seed and the cut's number.
func (w *crashWorkload) check(c cutTaken) {
	w.t.Helper()
	n := w.tally.cuts
	w.tally.cuts++
	img := c.path
	defer os.Remove(img)
	fail := func(format string, args ...any) {
		w.t.Helper()
		w.t.Fatalf("seed %d: cut %d (%s, during a request: %v): %s", w.seed, n, c.im, c.mid, fmt.Sprintf(format, args...))
	}
	if *crashKeep != "" {
		keep := filepath.Join(*crashKeep, fmt.Sprintf("cut-%d-%d.img", w.seed, n))
		if out, err := testenv.Output("cp", "--sparse=always", img, keep); err != nil {
			fail("keep the cut: %v: %s", err, out)
		}
	}
	if refused, err := preenRefuses(img); err != nil {
		fail("%v", err)
	} else if refused {
		w.tally.preenRefused++
	}
	repaired, fsckOut, err := fsckCut(img, w.journaled)
	if err != nil {
		w.tally.lost++
		fail("%v", err)
	}
	if repaired {
		w.tally.repaired++
	}
	problems, verified, err := compareCut(img, c.snap)
	w.tally.verified += verified
	if err != nil {
		fail("%v", err)
	}
	if len(problems) > 0 {
		w.tally.lost += int64(len(problems))
		fail("%d paths wrong:\n\t%s\ne2fsck -fy said:\n%s", len(problems), strings.Join(problems, "\n\t"), fsckOut)
	}
}

// fsckCut runs e2fsck -fy on img (0: clean, 1: repaired; more is a
// failure; journaled, a repair beyond the free counts after the replay is
// one too) and then e2fsck -fn, which must find it clean.
func fsckCut(img string, journaled bool) (repaired bool, out string, err error) {
	out, err = testenv.Output("e2fsck", "-fy", img)
	code := exitCode(err)
	if code < 0 || code > 1 {
		return false, out, fmt.Errorf("e2fsck -fy: exit %d (%v):\n%s", code, err, out)
	}
	if journaled && code == 1 && !testenv.OnlySummaryFixed(err, out) {
		return false, out, fmt.Errorf("e2fsck -fy repaired a journaled cut beyond its free counts (the replay must leave it consistent):\n%s", out)
	}
	if out2, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		return false, out, fmt.Errorf("e2fsck -fn after -fy: %v:\n%s\nthe repair said:\n%s", err, out2, out)
	}
	// Exit 1 also covers marking a volume clean that was open for
	// writing; a repair says so.
	return strings.Contains(out, "MODIFIED"), out, nil
}

// preenRefuses runs e2fsck -p on a copy of img, as a daemon's restart
// would, and reports whether it refused to repair it by itself (exit 4:
// "UNEXPECTED INCONSISTENCY"). Counted, not failed: a power cut may tear
// a metadata block, which no preen repairs.
func preenRefuses(img string) (bool, error) {
	cp := img + ".preen"
	defer os.Remove(cp)
	if out, err := testenv.Output("cp", "--sparse=always", img, cp); err != nil {
		return false, fmt.Errorf("copy the cut: %v: %s", err, out)
	}
	_, err := testenv.Output("e2fsck", "-p", cp)
	switch code := exitCode(err); {
	case code == 0 || code == 1:
		return false, nil
	case code >= 4:
		// 4: errors left; 8: preen gave up before checking (a torn
		// superblock it will not replace by a backup by itself).
		return true, nil
	default:
		return false, fmt.Errorf("e2fsck -p: exit %d (%v)", code, err)
	}
}

// exitCode is a command's exit status: 0 for nil, -1 if it did not run.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// compareCut opens img read-only and checks each path of the oracle:
// problems names what is wrong, verified counts the settled files found
// byte for byte.
func compareCut(img string, snap *model) (problems []string, verified int64, err error) {
	eng, err := engine.Open(engine.Config{Path: img, Backend: uring.BackendSync, CacheBytes: 4 << 20})
	if err != nil {
		return nil, 0, err
	}
	defer eng.Close()
	vol, err := ext.Open(ext.Config{Device: eng.Device, Cache: eng.Cache, DeviceSize: eng.Info.Size,
		SectorSize: eng.Info.SectorSize, ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("open the repaired cut: %w", err)
	}
	defer vol.Close()
	fsys := vol.FS()
	for _, p := range slices.Sorted(maps.Keys(snap.files)) {
		h := snap.files[p]
		data, rerr := fs.ReadFile(fsys, p[1:])
		present := rerr == nil
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			problems = append(problems, fmt.Sprintf("%s: %v", p, rerr))
			continue
		}
		switch {
		case h.settled() && !h.acked.matches(present, data):
			problems = append(problems, fmt.Sprintf("%s: acknowledged %s, found %s", p, describe(h.acked), describeFound(present, data)))
		case h.settled():
			if present {
				verified++
			}
		case !h.allowed(present, data):
			problems = append(problems, fmt.Sprintf("%s: found %s, which is neither the acknowledged %s nor any of the %d later states",
				p, describeFound(present, data), describe(h.acked), len(h.since)))
		}
	}
	for _, d := range slices.Sorted(maps.Keys(snap.dirs)) {
		h := snap.dirs[d]
		if !h.settled() || !h.acked.present {
			continue
		}
		if fi, err := fs.Stat(fsys, d[1:]); err != nil || !fi.IsDir() {
			problems = append(problems, fmt.Sprintf("%s: acknowledged directory missing (%v)", d, err))
		}
	}
	return problems, verified, nil
}

func describe(v version) string {
	if !v.present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes", len(v.data))
}

func describeFound(present bool, data []byte) string {
	if !present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes", len(data))
}

// describeDiff says where found bytes differ from wanted ones: the first
// and last differing offsets, and whether the found bytes there are all
// zero (a write that never landed on a new block) or not (old or foreign
// bytes). Empty when either is absent or they are equal.
func describeDiff(want version, present bool, found []byte) string {
	if !want.present || !present {
		return ""
	}
	n := min(len(want.data), len(found))
	first, last := -1, -1
	for i := range n {
		if want.data[i] != found[i] {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return ""
	}
	what := "other bytes"
	if !slices.ContainsFunc(found[first:last+1], func(b byte) bool { return b != 0 }) {
		what = "zeroes"
	}
	return fmt.Sprintf(" (they differ in bytes [%d, %d]: %s found)", first, last, what)
}
