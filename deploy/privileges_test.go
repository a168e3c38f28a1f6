package deploy

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/internal/testenv"
)

// firstDynamicUID is where systemd's DynamicUser range starts. Each case
// runs as a uid of its own, as DynamicUser does: the kernel charges
// registered buffers to the user, and a daemon that just exited is still
// charged until its ring is torn down, asynchronously.
const firstDynamicUID = 61184

// TestServicePrivileges runs the daemon on a block device the way the
// systemd unit does, to show that the unit gives it what it needs and
// nothing more: an unprivileged user with no capabilities at all and no
// new privileges, group disk for the device (a loop device with the mode
// udev gives disks, root:disk 0660), and the unit's LimitMEMLOCK. The
// other cases show why each is there: with a smaller memlock limit the
// frames cannot be registered (the daemon serves, slower), and without
// group disk the device does not open. The last two run it as the
// DaemonSet's securityContext does: uid 0 with IPC_LOCK alone.
func TestServicePrivileges(t *testing.T) {
	testenv.RequireRoot(t)
	setpriv := testenv.RequireTool(t, "setpriv")
	prlimit := testenv.RequireTool(t, "prlimit")
	testenv.RequireTool(t, "mke2fs")
	disk, err := user.LookupGroup("disk")
	if err != nil {
		testenv.Unavailable(t, "no group disk: %v", err)
	}
	dev, _ := testenv.LoopDevice(t, 64<<20)
	testenv.Run(t, "mke2fs", "-q", "-t", "ext4", "-O", "^has_journal", dev)
	giveToGroup(t, dev, disk.Gid)
	dir, bin := publicCopy(t)
	enough := memlockForFrames(t)

	for i, tc := range []struct {
		name       string
		memlock    string   // prlimit's value
		identity   []string // setpriv's user and groups
		bounding   string   // setpriv's capability bounding set
		wantServe  bool
		wantFixed  bool
		wantStderr string
	}{
		{name: "as the unit runs it", memlock: enough, identity: []string{"--groups=" + disk.Gid}, bounding: "-all", wantServe: true, wantFixed: true},
		// Room for the ring, not for an arena: registration fails with
		// ENOMEM, and the daemon serves from unregistered frames.
		{name: "with a memlock below an arena", memlock: "1048576", identity: []string{"--groups=" + disk.Gid}, bounding: "-all", wantServe: true, wantStderr: "OnArena failed"},
		{name: "without group disk", memlock: enough, identity: []string{"--clear-groups"}, bounding: "-all", wantStderr: "permission denied"},
		// The DaemonSet's securityContext: uid 0 (the device's owner
		// here) with IPC_LOCK alone, under a memlock limit below an
		// arena, as a container runtime may give: IPC_LOCK lifts the
		// limit off the frames, and without it they go unregistered.
		{name: "as the DaemonSet runs it", memlock: "1048576", identity: []string{"--reuid=0", "--regid=0", "--clear-groups"}, bounding: "-all,+ipc_lock", wantServe: true, wantFixed: true},
		{name: "as the DaemonSet runs it without IPC_LOCK", memlock: "1048576", identity: []string{"--reuid=0", "--regid=0", "--clear-groups"}, bounding: "-all", wantServe: true, wantStderr: "OnArena failed"},
	} {
		uid := strconv.Itoa(firstDynamicUID + i)
		t.Run(tc.name, func(t *testing.T) {
			argv := []string{prlimit, "--memlock=" + tc.memlock, setpriv}
			if !strings.HasPrefix(tc.identity[0], "--reuid") {
				argv = append(argv, "--reuid="+uid, "--regid="+uid)
			}
			argv = append(argv, tc.identity...)
			argv = append(argv, "--inh-caps=-all", "--bounding-set="+tc.bounding, "--no-new-privs",
				bin, "serve", "--listen", "127.0.0.1:0", "--volume", dev, "--ring", "native", "--cache", "16MiB")
			if !tc.wantServe {
				out := runToExit(t, dir, argv)
				if !strings.Contains(strings.ToLower(out), tc.wantStderr) {
					t.Fatalf("the daemon's output does not say %q:\n%s", tc.wantStderr, out)
				}
				return
			}
			d := testenv.StartDaemonCommand(t, dir, argv)
			path := "/v1/files/written-as-" + uid
			d.Must(http.StatusCreated, http.MethodPut, path, bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20)))
			d.Must(http.StatusOK, http.MethodGet, path, nil)
			fixed := metricValue(t, d, "mpaged_ring_fixed_buffer_ios_total")
			if got := fixed > 0; got != tc.wantFixed {
				t.Errorf("mpaged_ring_fixed_buffer_ios_total = %v: registered buffers used %v, want %v", fixed, got, tc.wantFixed)
			}
			if code := d.Stop(syscall.SIGTERM); code != 0 {
				t.Errorf("exit code %d after SIGTERM, want 0:\n%s", code, d.Stderr.String())
			}
			if !strings.Contains(d.Stderr.String(), tc.wantStderr) {
				t.Errorf("the daemon's log does not say %q:\n%s", tc.wantStderr, d.Stderr.String())
			}
		})
	}
}

// memlockForFrames is the unit's LimitMEMLOCK=infinity where this host
// lets the test raise the limit that far, else the hard limit, which must
// hold the one arena a 16 MiB cache maps for the test's file (4 MiB; an
// unprivileged process's limit is charged for the ring too).
func memlockForFrames(t *testing.T) string {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max == unix.RLIM_INFINITY {
		return "unlimited"
	}
	if lim.Max < 8<<20 {
		testenv.Unavailable(t, "RLIMIT_MEMLOCK hard limit %d bytes: too small for the frames the test registers", lim.Max)
	}
	return strconv.FormatUint(lim.Max, 10)
}

// giveToGroup gives dev the owner and mode udev gives a disk, root:group
// 0660, and puts back what it had when the test ends.
func giveToGroup(t *testing.T, dev, gid string) {
	t.Helper()
	st, err := os.Stat(dev)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	g, err := strconv.Atoi(gid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dev, 0, g); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dev, 0o660); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Chown(dev, int(sys.Uid), int(sys.Gid))
		os.Chmod(dev, st.Mode().Perm())
	})
}

// publicCopy copies the daemon's binary into a directory every user may
// enter (the test binary's own directories are root's, 0700) and returns
// both.
func publicCopy(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mpaged-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(testenv.MpagedBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "mpaged")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// runToExit runs a daemon that must not start and returns its output.
func runToExit(t *testing.T, dir string, argv []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("the daemon did not fail to start: %v\n%s", err, out)
	}
	return string(out)
}

// metricValue reads one unlabelled sample from the daemon's /metrics.
func metricValue(t *testing.T, d *testenv.Daemon, name string) float64 {
	t.Helper()
	body := d.Must(http.StatusOK, http.MethodGet, "/metrics", nil)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no %s on /metrics", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
