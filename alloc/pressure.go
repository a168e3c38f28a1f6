package alloc

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// SystemPSIPath is the system-wide memory pressure file (kernel 4.20+,
// CONFIG_PSI, not disabled with psi=0).
const SystemPSIPath = "/proc/pressure/memory"

// PSILine is one line of a PSI file: the share of wall time (percent, 0 to
// 100) in which tasks stalled on the resource, averaged over 10 s, 60 s and
// 300 s, and the total stall time in microseconds.
type PSILine struct {
	Avg10, Avg60, Avg300 float64
	Total                uint64 // microseconds
}

// PSI is a parsed pressure file. "some" means at least one task stalled;
// "full" means all non-idle tasks stalled at once. Memory files always have
// both lines; HasFull is false for files without a full line (the system
// cpu file before kernel 5.13).
type PSI struct {
	Some    PSILine
	Full    PSILine
	HasFull bool
}

// String formats p the way the kernel does.
func (p PSI) String() string {
	var b []byte
	b = appendPSILine(b, "some", p.Some)
	if p.HasFull {
		b = appendPSILine(b, "full", p.Full)
	}
	return string(b)
}

func appendPSILine(b []byte, kind string, l PSILine) []byte {
	return fmt.Appendf(b, "%s avg10=%.2f avg60=%.2f avg300=%.2f total=%d\n", kind, l.Avg10, l.Avg60, l.Avg300, l.Total)
}

var psiKeys = [...]string{"avg10=", "avg60=", "avg300=", "total="}

// ParsePSI parses the text of /proc/pressure/memory or a cgroup v2
// memory.pressure file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//
// It is strict: fields single-space separated in the kernel's order,
// averages as plain decimals in [0, 100], total an unsigned integer, a
// "some" line required, "full" optional, no line twice, nothing else but
// one final newline. Any deviation is an error wrapping ErrBadPSI that
// names the line and field; it never panics.
func ParsePSI(data []byte) (PSI, error) {
	var p PSI
	if len(data) == 0 {
		return p, fmt.Errorf("%w: empty", ErrBadPSI)
	}
	text := bytes.TrimSuffix(data, []byte("\n"))
	hasSome := false
	for lineNo := 1; ; lineNo++ {
		line, rest, more := bytes.Cut(text, []byte("\n"))
		var dst *PSILine
		kind, fields, _ := bytes.Cut(line, []byte(" "))
		switch string(kind) {
		case "some":
			if hasSome {
				return PSI{}, fmt.Errorf("%w: line %d: second \"some\" line", ErrBadPSI, lineNo)
			}
			hasSome, dst = true, &p.Some
		case "full":
			if p.HasFull {
				return PSI{}, fmt.Errorf("%w: line %d: second \"full\" line", ErrBadPSI, lineNo)
			}
			p.HasFull, dst = true, &p.Full
		default:
			return PSI{}, fmt.Errorf("%w: line %d: want \"some\" or \"full\", got %s", ErrBadPSI, lineNo, quote(kind))
		}
		if err := parsePSIFields(fields, dst); err != nil {
			return PSI{}, fmt.Errorf("%w: line %d (%s): %v", ErrBadPSI, lineNo, kind, err)
		}
		if !more {
			break
		}
		text = rest
	}
	if !hasSome {
		return PSI{}, fmt.Errorf("%w: no \"some\" line", ErrBadPSI)
	}
	return p, nil
}

func parsePSIFields(fields []byte, l *PSILine) error {
	avgs := [...]*float64{&l.Avg10, &l.Avg60, &l.Avg300}
	rest, exhausted := fields, false
	for i, key := range psiKeys {
		var f []byte
		var more bool
		if !exhausted {
			f, rest, more = bytes.Cut(rest, []byte(" "))
			exhausted = !more
		}
		if len(f) == 0 && exhausted {
			return fmt.Errorf("missing field %q", key)
		}
		val, ok := bytes.CutPrefix(f, []byte(key))
		if !ok {
			return fmt.Errorf("field %d: want %q, got %s", i+1, key, quote(f))
		}
		if i < len(avgs) {
			v, err := parsePercent(val)
			if err != nil {
				return fmt.Errorf("%s %w", key, err)
			}
			*avgs[i] = v
			continue
		}
		if !allDigits(val) {
			return fmt.Errorf("%s want an unsigned integer, got %s", key, quote(val))
		}
		v, err := strconv.ParseUint(string(val), 10, 64)
		if err != nil {
			return fmt.Errorf("%s out of range: %s", key, quote(val))
		}
		l.Total = v
	}
	if !exhausted {
		return fmt.Errorf("trailing data %s", quote(rest))
	}
	return nil
}

// parsePercent accepts digits[.digits] in [0, 100]; ParseFloat alone would
// also take signs, exponents, hex, "inf" and "NaN".
func parsePercent(val []byte) (float64, error) {
	ip, fp, dot := bytes.Cut(val, []byte("."))
	if !allDigits(ip) || (dot && !allDigits(fp)) {
		return 0, fmt.Errorf("want a decimal like 1.25, got %s", quote(val))
	}
	v, err := strconv.ParseFloat(string(val), 64)
	if err != nil || v > 100 {
		return 0, fmt.Errorf("want a percentage in [0, 100], got %s", quote(val))
	}
	return v, nil
}

func allDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// quote quotes b for an error message, cut to a readable length.
func quote(b []byte) string {
	const max = 32
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// Level is a memory pressure level. The BioSet budget is divided by 1, 2,
// 4 and 4 at LevelNone, LevelSome, LevelFull and LevelCritical.
type Level int32

const (
	LevelNone     Level = iota // no meaningful stall
	LevelSome                  // some tasks stall on memory
	LevelFull                  // at times every task stalls on memory
	LevelCritical              // every task stalls on memory much of the time
)

func (l Level) String() string {
	switch l {
	case LevelNone:
		return "none"
	case LevelSome:
		return "some"
	case LevelFull:
		return "full"
	case LevelCritical:
		return "critical"
	}
	return fmt.Sprintf("level(%d)", int32(l))
}

// scale applies the level to a budget.
func (l Level) scale(budget int64) int64 {
	switch {
	case l <= LevelNone:
		return budget
	case l == LevelSome:
		return budget / 2
	default:
		return budget / 4
	}
}

// Thresholds map PSI to a Level using the 10-second averages (the most
// responsive window; the kernel updates it every 2 s). Zero fields take
// their defaults.
type Thresholds struct {
	Some     float64 // some avg10 >= Some => LevelSome; default 10
	Full     float64 // full avg10 >= Full => LevelFull; default 5
	Critical float64 // full avg10 >= Critical => LevelCritical; default 20
}

func (t Thresholds) withDefaults() Thresholds {
	if t.Some <= 0 {
		t.Some = 10
	}
	if t.Full <= 0 {
		t.Full = 5
	}
	if t.Critical <= 0 {
		t.Critical = 20
	}
	return t
}

// Level returns the level p indicates.
func (t Thresholds) Level(p PSI) Level {
	t = t.withDefaults()
	switch {
	case p.HasFull && p.Full.Avg10 >= t.Critical:
		return LevelCritical
	case p.HasFull && p.Full.Avg10 >= t.Full:
		return LevelFull
	case p.Some.Avg10 >= t.Some:
		return LevelSome
	}
	return LevelNone
}

const defaultPSIInterval = 2 * time.Second

// PressureMonitor tracks a memory pressure level by polling a PSI file.
// Level is one atomic load, cheap enough for every BioSet.Alloc.
//
// The zero value is a manual monitor at LevelNone: SetLevel drives it
// (tests, or callers with their own pressure source). A monitor from
// NewPressureMonitor polls once Start is called, until Close; a poll that
// fails (file gone, garbage) drops the level to LevelNone, because a stale
// high level would throttle I/O for no reason, and keeps the error for Last.
// SetLevel on a polling monitor holds until the next poll.
//
// All methods are safe for concurrent use.
type PressureMonitor struct {
	level atomic.Int32

	path     string
	interval time.Duration
	th       Thresholds

	mu      sync.Mutex
	last    PSI
	lastErr error
	started bool
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

// NewPressureMonitor reads path (SystemPSIPath if empty) once and returns a
// monitor at the level it shows; call Start to keep polling every interval
// (2 s if <= 0). A file that cannot be read is an error wrapping
// ErrPSIUnavailable; callers treat pressure input as optional.
func NewPressureMonitor(path string, interval time.Duration, th Thresholds) (*PressureMonitor, error) {
	if path == "" {
		path = SystemPSIPath
	}
	if interval <= 0 {
		interval = defaultPSIInterval
	}
	m := &PressureMonitor{path: path, interval: interval, th: th.withDefaults()}
	if err := m.poll(); err != nil {
		return nil, err
	}
	return m, nil
}

// Start begins polling in a goroutine. It is a no-op on a manual monitor,
// a started one, or a closed one.
func (m *PressureMonitor) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.path == "" || m.started || m.closed {
		return
	}
	m.started = true
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go m.run(m.stop, m.done)
}

func (m *PressureMonitor) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			_ = m.poll() // recorded for Last
		}
	}
}

// Close stops polling and waits for the poller to exit. Level keeps its
// last value. Idempotent.
func (m *PressureMonitor) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	stop, done := m.stop, m.done
	m.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return nil
}

// poll reads and parses the file once and updates the level.
func (m *PressureMonitor) poll() error {
	p, err := readPSI(m.path)
	lvl := LevelNone
	if err == nil {
		lvl = m.th.Level(p)
	}
	m.level.Store(int32(lvl))
	m.mu.Lock()
	m.last, m.lastErr = p, err
	m.mu.Unlock()
	return err
}

// maxPSIBytes bounds a read; a real PSI file is about 100 bytes.
const maxPSIBytes = 4096

func readPSI(path string) (PSI, error) {
	f, err := os.Open(path)
	if err != nil {
		return PSI{}, fmt.Errorf("%w: %w", ErrPSIUnavailable, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPSIBytes+1))
	if err != nil {
		// psi=0 makes the file exist but reads fail with EOPNOTSUPP.
		return PSI{}, fmt.Errorf("%w: read %s: %w", ErrPSIUnavailable, path, err)
	}
	if len(data) > maxPSIBytes {
		return PSI{}, fmt.Errorf("%w: %s: longer than %d bytes", ErrBadPSI, path, maxPSIBytes)
	}
	p, err := ParsePSI(data)
	if err != nil {
		return PSI{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Level returns the current pressure level.
func (m *PressureMonitor) Level() Level { return Level(m.level.Load()) }

// SetLevel sets the level by hand (tests, external pressure sources).
func (m *PressureMonitor) SetLevel(l Level) { m.level.Store(int32(l)) }

// Last returns the last sample read and the error of the last poll (nil if
// it succeeded). A manual monitor returns zero values.
func (m *PressureMonitor) Last() (PSI, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, m.lastErr
}

// CgroupPSIPath returns the memory.pressure file of the calling process's
// cgroup v2 (what matters inside a container or a systemd slice), or
// SystemPSIPath when there is no cgroup v2 file to read.
func CgroupPSIPath() string {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return SystemPSIPath
	}
	if p, ok := cgroupV2Path(data, "/sys/fs/cgroup"); ok {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return SystemPSIPath
}

// cgroupV2Path finds the unified hierarchy entry ("0::/path") in the text
// of /proc/self/cgroup and returns its memory.pressure under root.
func cgroupV2Path(procSelfCgroup []byte, root string) (string, bool) {
	for line := range bytes.SplitSeq(procSelfCgroup, []byte("\n")) {
		if rel, ok := bytes.CutPrefix(line, []byte("0::")); ok && len(rel) > 0 && rel[0] == '/' {
			return filepath.Join(root, string(rel), "memory.pressure"), true
		}
	}
	return "", false
}
