package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe to write from the process's pipe
// copier while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Daemon is a running `mpaged serve`.
type Daemon struct {
	t      testing.TB
	Cmd    *exec.Cmd
	URL    string // http://host:port
	Stdout *SyncBuffer
	Stderr *SyncBuffer
	done   chan struct{}
	err    error
}

var servingRE = regexp.MustCompile(`serving .* on (http://\S+)`)

// StartDaemon runs `mpaged serve args...` in dir and waits until it
// serves (or exits). It is killed when the test ends if still running.
func StartDaemon(t testing.TB, dir string, args ...string) *Daemon {
	t.Helper()
	return StartDaemonCommand(t, dir, append([]string{MpagedBinary(t), "serve", "--listen", "127.0.0.1:0"}, args...))
}

// StartDaemonCommand is StartDaemon for a whole command line, argv[0] the
// program: the daemon run through setpriv or prlimit, as a service manager
// would run it. The program must exec mpaged serve (so that Stop signals
// the daemon itself) with --listen 127.0.0.1:0.
func StartDaemonCommand(t testing.TB, dir string, argv []string) *Daemon {
	t.Helper()
	d := &Daemon{t: t, Stdout: new(SyncBuffer), Stderr: new(SyncBuffer), done: make(chan struct{})}
	d.Cmd = exec.Command(argv[0], argv[1:]...)
	d.Cmd.Dir = dir
	pr, pw := io.Pipe()
	d.Cmd.Stdout = io.MultiWriter(d.Stdout, pw)
	d.Cmd.Stderr = d.Stderr
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.Cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.Cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", d.Stderr.String())
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case d.URL = <-found:
	case <-d.done:
		t.Fatalf("mpaged serve exited before serving: %v\n%s", d.err, d.Stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("mpaged serve did not start in 60s:\n%s", d.Stderr.String())
	}
	return d
}

// Stop sends sig and waits for the exit; it returns the exit code.
func (d *Daemon) Stop(sig syscall.Signal) int {
	d.t.Helper()
	d.Cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(120 * time.Second):
		d.t.Fatalf("mpaged serve did not exit after %v:\n%s", sig, d.Stderr.String())
	}
	return d.Cmd.ProcessState.ExitCode()
}

// RSS is the daemon's resident set size.
func (d *Daemon) RSS() int64 {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid))
	if err != nil {
		d.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	d.t.Fatal("no VmRSS")
	return 0
}

// Call sends a request to the daemon and returns the status and body.
func (d *Daemon) Call(method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.URL+path, body)
	if err != nil {
		d.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// Must wants status from a call.
func (d *Daemon) Must(status int, method, path string, body io.Reader, hdr ...string) []byte {
	d.t.Helper()
	resp, b := d.Call(method, path, body, hdr...)
	if resp.StatusCode != status {
		d.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}
