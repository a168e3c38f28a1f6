package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// serverProc is a server the bench started: in its own process group, so
// a Ctrl-C at the terminal reaches the bench alone and the bench stops the
// servers in order (nginx before its mount is unmounted); stop signals
// the group, so no worker outlives its master.
type serverProc struct {
	name   string
	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{}
	err    error // the exit, once done is closed
}

// startServer starts bin with args; stdout goes to stdout (nil: nowhere).
func startServer(name, bin string, args []string, stdout io.Writer) (*serverProc, error) {
	p := &serverProc{name: name, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRunner, name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *serverProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *serverProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended, with the tail of its stderr.
func (p *serverProc) exitError() error {
	return fmt.Errorf("%w: %s exited: %v: %s", ErrRunner, p.name, p.err, tail(p.stderr.String()))
}

// stop sends sig to the process and waits up to grace for it to exit,
// then kills its whole process group and waits until the group is gone.
// It returns the process's exit error when it did not exit cleanly on sig.
func (p *serverProc) stop(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return killGroup(p.pid())
	}
	_ = p.cmd.Process.Signal(sig)
	var err error
	select {
	case <-p.done:
		if p.err != nil {
			err = p.exitError()
		}
	case <-time.After(grace):
		err = fmt.Errorf("%w: %s did not exit within %v of %v; killed", ErrRunner, p.name, grace, sig)
	}
	return errors.Join(err, killGroup(p.pid()))
}

// killGroup kills what is left of process group pgid and waits for it to
// be gone (the members are the bench's children or their children, which
// init reaps).
func killGroup(pgid int) error {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	for range 500 {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%w: process group %d still alive after SIGKILL", ErrRunner, pgid)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go runs on (the kernel converts to it for user space
// whatever its own HZ).
const clockTicks = 100

// procStat is what the bench reads from /proc/PID/stat.
type procStat struct {
	ppid int
	// cpu is user+system time of every thread of the process, those that
	// exited included (io_uring's io-wq workers are threads of the
	// process too), in clock ticks.
	cpu int64
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

// parseProcStat reads ppid (field 4), utime and stime (fields 14 and 15)
// of a /proc/PID/stat line; the command name (field 2) is in parentheses
// and may hold spaces and parentheses itself, so fields count from the
// last ')'.
func parseProcStat(line string) (procStat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("proc stat %.40q: no command name", line)
	}
	f := strings.Fields(line[i+1:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("proc stat %.40q: %d fields after the name", line, len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("proc stat %.40q: %w", line, err)
	}
	return procStat{ppid: ppid, cpu: utime + stime}, nil
}

// treeCPU is the CPU time, in clock ticks, of root and each of its
// children (nginx's master and workers; the daemon alone has none).
func treeCPU(root int) (map[int]int64, error) {
	st, err := readProcStat(root)
	if err != nil {
		return nil, fmt.Errorf("%w: process %d: %v", ErrRunner, root, err)
	}
	out := map[int]int64{root: st.cpu}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.ppid == root {
			out[pid] = st.cpu
		}
	}
	return out, nil
}

// serverCPU measures a server's processes over an interval.
type serverCPU struct {
	root   int
	before map[int]int64
}

func startServerCPU(root int) (serverCPU, error) {
	m, err := treeCPU(root)
	return serverCPU{root: root, before: m}, err
}

// done returns the CPU seconds the processes used since start and how many
// processes that is. The set must not have changed: a worker that died
// and was replaced took time nobody can account for.
func (s serverCPU) done() (float64, int, error) {
	after, err := treeCPU(s.root)
	if err != nil {
		return 0, 0, err
	}
	if len(after) != len(s.before) {
		return 0, 0, fmt.Errorf("%w: server processes changed during the run: %d before, %d after", ErrRunner, len(s.before), len(after))
	}
	var ticks int64
	for pid, a := range after {
		b, ok := s.before[pid]
		if !ok {
			return 0, 0, fmt.Errorf("%w: server process %d appeared during the run", ErrRunner, pid)
		}
		ticks += a - b
	}
	return float64(ticks) / clockTicks, len(after), nil
}

// freePort returns a loopback TCP port that was free a moment ago (for a
// server that cannot listen on port 0 and say which it got: nginx).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
