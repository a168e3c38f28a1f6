package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// zramDevices lists the zram devices and their disksize.
func zramDevices(t *testing.T) map[string]string {
	t.Helper()
	names, err := filepath.Glob("/sys/block/zram*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		size, _ := os.ReadFile(filepath.Join(n, "disksize"))
		out[filepath.Base(n)] = strings.TrimSpace(string(size))
	}
	return out
}

func requireZram(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if !zramAvailable() {
		testenv.Unavailable(t, "no %s/hot_add (modprobe zram)", zramControl)
	}
}

// openTestTarget opens a target and closes it when the test ends, pass or
// fail.
func openTestTarget(t *testing.T, cfg TargetConfig) *Target {
	t.Helper()
	tg, err := OpenTarget(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Errorf("target cleanup: %v", err)
		}
	})
	return tg
}

// checkFilled reads the region's first MiB: the harness filled it with
// incompressible data.
func checkFilled(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1<<20)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	var seen [256]bool
	n := 0
	for _, c := range b[:4096] {
		if !seen[c] {
			seen[c] = true
			n++
		}
	}
	if n < 200 {
		t.Fatalf("%s: first block has %d distinct byte values; want incompressible fill", path, n)
	}
}

// A zram target is a device the harness added, filled and removes; the
// devices that were there before are left as they were.
func TestTargetZram(t *testing.T) {
	requireZram(t)
	before := zramDevices(t)
	tg := openTestTarget(t, TargetConfig{Spec: TargetZram, Size: 8 << 20})
	name := filepath.Base(tg.Path)
	if _, existed := before[name]; existed || !strings.HasPrefix(name, "zram") {
		t.Fatalf("target %s: not a new zram device (had %v)", tg.Path, before)
	}
	if tg.Kind != TargetZram || !tg.Created || !tg.Writable || tg.Size != 8<<20 || tg.DeviceSize != 8<<20 || tg.LogicalBlock != 4096 {
		t.Fatalf("target %+v", tg)
	}
	checkFilled(t, tg.Path)
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	after := zramDevices(t)
	if _, still := after[name]; still {
		t.Fatalf("%s still there after Close", name)
	}
	// Other users of the machine may add and remove their own devices
	// meanwhile; what is still there must be as it was.
	for dev, size := range before {
		if now, ok := after[dev]; ok && now != size {
			t.Fatalf("pre-existing %s changed: disksize %q, was %q", dev, now, size)
		}
	}
}

// A loop target is attached with direct I/O to an image in a temporary
// directory; Close detaches it and deletes the image.
func TestTargetLoop(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "losetup")
	dir := t.TempDir()
	tg := openTestTarget(t, TargetConfig{Spec: TargetLoop, Size: 8 << 20, TempDir: dir})
	if tg.Kind != TargetLoop || !strings.HasPrefix(tg.Path, "/dev/loop") || tg.Size != 8<<20 || !tg.Created {
		t.Fatalf("target %+v", tg)
	}
	images, _ := filepath.Glob(filepath.Join(dir, "mpaged-bench-*", "image"))
	if len(images) != 1 {
		t.Fatalf("images %v", images)
	}
	if out := testenv.Run(t, "losetup", "--list", "--noheadings", "--output", "BACK-FILE", tg.Path); !strings.Contains(out, images[0]) {
		t.Fatalf("%s backs onto %q, want %s", tg.Path, out, images[0])
	}
	checkFilled(t, tg.Path)
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if out, _ := testenv.Output("losetup", "--list", "--noheadings", "--output", "BACK-FILE", tg.Path); strings.Contains(out, images[0]) {
		t.Fatalf("%s still attached to the image", tg.Path)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "mpaged-bench-*")); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// A path the user names is used as it is: never filled, and written only
// with DestroyData.
func TestTargetPath(t *testing.T) {
	img := testenv.SparseFile(t, 5<<20+4096)
	if _, err := OpenTarget(context.Background(), TargetConfig{Spec: img, Size: 1 << 30, Write: true}); !errors.Is(err, ErrDestroyData) {
		t.Fatalf("writes without DestroyData: %v, want ErrDestroyData", err)
	}
	tg := openTestTarget(t, TargetConfig{Spec: img, Size: 1 << 30})
	if tg.Kind != TargetPath || tg.Created || tg.Writable || tg.Size != 5<<20 || tg.DeviceSize != 5<<20+4096 {
		t.Fatalf("target %+v", tg)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(data, func(c byte) bool { return c != 0 }) {
		t.Fatal("a named target was written")
	}
	tg2 := openTestTarget(t, TargetConfig{Spec: img, Size: 1 << 30, Write: true, DestroyData: true})
	if !tg2.Writable {
		t.Fatal("DestroyData did not make the target writable")
	}
	for _, bad := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		if _, err := OpenTarget(context.Background(), TargetConfig{Spec: bad, Size: 1 << 20}); !errors.Is(err, ErrConfig) {
			t.Errorf("target %s: %v, want ErrConfig", bad, err)
		}
	}
}

// A run cancelled while the target is being made leaves nothing behind.
func TestTargetCancelledCleansUp(t *testing.T) {
	requireZram(t)
	// A size nobody else uses tells our device from other users'.
	const size = 9<<20 + 3*4096
	before := zramDevices(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if tg, err := OpenTarget(ctx, TargetConfig{Spec: TargetZram, Size: size}); !errors.Is(err, context.Canceled) {
		if tg != nil {
			tg.Close()
		}
		t.Fatalf("OpenTarget = %v, want context.Canceled", err)
	}
	for dev, s := range zramDevices(t) {
		if _, old := before[dev]; !old && s == strconv.Itoa(size) {
			t.Fatalf("%s (disksize %s) left behind", dev, s)
		}
	}
}
