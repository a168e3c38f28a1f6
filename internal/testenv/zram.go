package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// zramControl is where the zram module adds and removes devices.
const zramControl = "/sys/class/zram-control"

// NewZram creates a zram block device of size bytes (compressed RAM; its
// logical blocks are 4 KiB, like a 4Kn disk) and returns its path,
// /dev/zramN. The device is new: hot_add never hands out an existing one,
// so the machine's own zram devices are never touched. It is removed when
// the test ends, pass or fail. Without root or the zram module the test
// is skipped (failed under CI=true).
func NewZram(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t)
	// Reading hot_add creates a device and says its number.
	b, err := os.ReadFile(filepath.Join(zramControl, "hot_add"))
	if err != nil {
		Unavailable(t, "no zram devices (modprobe zram): %v", err)
	}
	id := strings.TrimSpace(string(b))
	if _, err := strconv.Atoi(id); err != nil {
		t.Fatalf("zram hot_add said %q", id)
	}
	dev := "/dev/zram" + id
	t.Cleanup(func() {
		if err := removeZram(id); err != nil {
			t.Errorf("remove %s: %v", dev, err)
		}
	})
	sys := filepath.Join("/sys/block", "zram"+id)
	if err := os.WriteFile(filepath.Join(sys, "disksize"), []byte(strconv.FormatInt(size, 10)), 0); err != nil {
		t.Fatalf("%s: set disksize %d: %v", dev, size, err)
	}
	// devtmpfs makes the node asynchronously.
	for i := 0; ; i++ {
		if _, err := os.Stat(dev); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("%s did not appear: %v", dev, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return dev
}

// removeZram removes zram device id, retrying while something (a udev
// probe of the new device, a file just closed) still holds it open.
func removeZram(id string) error {
	var err error
	for i := range 50 {
		err = os.WriteFile(filepath.Join(zramControl, "hot_remove"), []byte(id), 0)
		if !errors.Is(err, syscall.EBUSY) {
			return err
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
	return err
}

// LogicalBlockSize is a block device's logical block size (BLKSSZGET):
// the alignment O_DIRECT I/O on it needs.
func LogicalBlockSize(t testing.TB, dev string) int {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		t.Fatalf("%s: BLKSSZGET: %v", dev, err)
	}
	return n
}
