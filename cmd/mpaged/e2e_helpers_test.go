package main

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

	"github.com/mpaged/mpaged/internal/testenv"
)

// TestMain removes the binary the end-to-end tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilt()
	os.Exit(code)
}

// mpagedBinary is the real binary, built once, that the end-to-end tests
// run as users do.
func mpagedBinary(t *testing.T) string { return testenv.MpagedBinary(t) }

// syncBuffer is a bytes.Buffer safe to write from the process's pipe
// copier while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonProc is a running `mpaged serve`.
type daemonProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

var servingRE = regexp.MustCompile(`serving .* on (http://\S+)`)

// startDaemon runs `mpaged serve args...` in dir and waits until it
// serves (or exits). It is killed when the test ends if still running.
func startDaemon(t *testing.T, dir string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{t: t, stdout: new(syncBuffer), stderr: new(syncBuffer), done: make(chan struct{})}
	d.cmd = exec.Command(mpagedBinary(t), append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	d.cmd.Dir = dir
	pr, pw := io.Pipe()
	d.cmd.Stdout = io.MultiWriter(d.stdout, pw)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", d.stderr.String())
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
	case d.url = <-found:
	case <-d.done:
		t.Fatalf("mpaged serve exited before serving: %v\n%s", d.err, d.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("mpaged serve did not start in 60s:\n%s", d.stderr.String())
	}
	return d
}

// stop sends sig and waits for the exit; it returns the exit code.
func (d *daemonProc) stop(sig syscall.Signal) int {
	d.t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(120 * time.Second):
		d.t.Fatalf("mpaged serve did not exit after %v:\n%s", sig, d.stderr.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

// rss is the daemon's resident set size.
func (d *daemonProc) rss() int64 {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
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

// call sends a request to the daemon and returns the status and body.
func (d *daemonProc) call(method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.url+path, body)
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

// must wants status from a call.
func (d *daemonProc) must(status int, method, path string, body io.Reader, hdr ...string) []byte {
	d.t.Helper()
	resp, b := d.call(method, path, body, hdr...)
	if resp.StatusCode != status {
		d.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}
