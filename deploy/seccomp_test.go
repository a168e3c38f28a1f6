package deploy

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/internal/testenv"
)

// withoutIOURing, as the test binary's first argument, makes it exec the
// command that follows under a seccomp filter that answers the io_uring
// system calls with EPERM, as a container runtime's default profile does
// (containerd 2.0 and later, Docker 25 and later). TestMain calls
// execIfAsked before anything else.
const withoutIOURing = "-deploy.exec-without-io-uring"

// execIfAsked does what withoutIOURing asks, and returns only when it was
// not asked.
func execIfAsked() {
	if len(os.Args) < 3 || os.Args[1] != withoutIOURing {
		return
	}
	argv := os.Args[2:]
	if err := blockIOURing(); err != nil {
		fmt.Fprintln(os.Stderr, "seccomp:", err)
		os.Exit(111)
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(111)
}

// blockIOURing installs, on every thread of the process (and so on what
// it execs), a filter that fails io_uring_setup, io_uring_enter and
// io_uring_register with EPERM and allows everything else.
func blockIOURing() error {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	const nr = 0 // offset of seccomp_data.nr
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: nr},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_IO_URING_SETUP, Jt: 3},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_IO_URING_ENTER, Jt: 2},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_IO_URING_REGISTER, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return errno
	}
	runtime.KeepAlive(filter)
	return nil
}

// TestWithoutIOURing: where the runtime's seccomp profile blocks io_uring
// (what the DaemonSet's RuntimeDefault means on containerd 2.0 and
// later), the daemon falls back to its preadv/pwritev ring, says so, and
// serves. The same daemon without the filter runs the native ring, so the
// filter is what made the difference.
func TestWithoutIOURing(t *testing.T) {
	bin := testenv.MpagedBinary(t)
	args := []string{"serve", "--listen", "127.0.0.1:0", "--create-size", "64MiB", "--cache", "16MiB"}
	for _, tc := range []struct {
		name        string
		argv        []string
		wantBackend string
		wantLog     string
	}{
		{"as is", append([]string{bin}, args...), "native", ""},
		{"io_uring blocked", append([]string{os.Args[0], withoutIOURing, bin}, args...), "sync", "falling back to the sync (preadv/pwritev) ring"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testenv.StartDaemonCommand(t, t.TempDir(), tc.argv)
			body := bytes.Repeat([]byte("y"), 256<<10)
			d.Must(http.StatusCreated, http.MethodPut, "/v1/files/f", bytes.NewReader(body))
			if got := d.Must(http.StatusOK, http.MethodGet, "/v1/files/f", nil); !bytes.Equal(got, body) {
				t.Fatalf("GET: %d bytes, not what was written", len(got))
			}
			m := regexp.MustCompile(`mpaged_build_info\{backend="([^"]+)"`).FindSubmatch(d.Must(http.StatusOK, http.MethodGet, "/metrics", nil))
			if m == nil {
				t.Fatal("no mpaged_build_info on /metrics")
			}
			if string(m[1]) != tc.wantBackend {
				if tc.wantBackend == "native" {
					testenv.Unavailable(t, "the daemon runs the %s ring even without a filter: no io_uring here", m[1])
				}
				t.Errorf("backend %s, want %s", m[1], tc.wantBackend)
			}
			if code := d.Stop(syscall.SIGTERM); code != 0 {
				t.Errorf("exit code %d after SIGTERM", code)
			}
			if !strings.Contains(d.Stderr.String(), tc.wantLog) {
				t.Errorf("the log does not say %q:\n%s", tc.wantLog, d.Stderr.String())
			}
		})
	}
}
