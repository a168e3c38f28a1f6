package alloc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	psiIdle = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
	psiBusy = "some avg10=12.50 avg60=3.07 avg300=0.71 total=123456789\nfull avg10=6.25 avg60=1.00 avg300=0.10 total=98765\n"
)

func TestParsePSI(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    PSI
		wantErr string // substring; "" means success
	}{
		{name: "idle", in: psiIdle, want: PSI{HasFull: true}},
		{name: "busy", in: psiBusy, want: PSI{
			Some:    PSILine{Avg10: 12.5, Avg60: 3.07, Avg300: 0.71, Total: 123456789},
			Full:    PSILine{Avg10: 6.25, Avg60: 1, Avg300: 0.1, Total: 98765},
			HasFull: true,
		}},
		{name: "no final newline", in: strings.TrimSuffix(psiIdle, "\n"), want: PSI{HasFull: true}},
		{name: "some only", in: "some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n",
			want: PSI{Some: PSILine{1, 2, 3, 4}}},
		{name: "full first", in: "full avg10=0.00 avg60=0.00 avg300=0.00 total=7\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
			want: PSI{Some: PSILine{Total: 9}, Full: PSILine{Total: 7}, HasFull: true}},
		{name: "100 percent", in: "some avg10=100.00 avg60=100 avg300=99.99 total=18446744073709551615\n",
			want: PSI{Some: PSILine{100, 100, 99.99, 18446744073709551615}}},

		{name: "empty", in: "", wantErr: "empty"},
		{name: "just newline", in: "\n", wantErr: `got ""`},
		{name: "two newlines", in: psiIdle + "\n", wantErr: "line 3"},
		{name: "full only", in: "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", wantErr: `no "some"`},
		{name: "duplicate some", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", wantErr: "second"},
		{name: "duplicate full", in: psiIdle + "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", wantErr: "second"},
		{name: "unknown line", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nmost avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", wantErr: `"most"`},
		{name: "missing total", in: "some avg10=0.00 avg60=0.00 avg300=0.00\n", wantErr: `missing field "total="`},
		{name: "bare kind", in: "some\n", wantErr: `missing field "avg10="`},
		{name: "fields out of order", in: "some avg60=0.00 avg10=0.00 avg300=0.00 total=0\n", wantErr: `want "avg10="`},
		{name: "trailing field", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0 extra=1\n", wantErr: "trailing"},
		{name: "trailing space", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0 \n", wantErr: "trailing"},
		{name: "double space", in: "some  avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", wantErr: "field 1"},
		{name: "CRLF", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\r\n", wantErr: "unsigned integer"},
		{name: "over 100", in: "some avg10=100.01 avg60=0.00 avg300=0.00 total=0\n", wantErr: "[0, 100]"},
		{name: "negative", in: "some avg10=-1.00 avg60=0.00 avg300=0.00 total=0\n", wantErr: "decimal"},
		{name: "NaN", in: "some avg10=NaN avg60=0.00 avg300=0.00 total=0\n", wantErr: "decimal"},
		{name: "exponent", in: "some avg10=1e1 avg60=0.00 avg300=0.00 total=0\n", wantErr: "decimal"},
		{name: "empty value", in: "some avg10= avg60=0.00 avg300=0.00 total=0\n", wantErr: "decimal"},
		{name: "lone dot", in: "some avg10=1. avg60=0.00 avg300=0.00 total=0\n", wantErr: "decimal"},
		{name: "signed total", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=+5\n", wantErr: "unsigned integer"},
		{name: "total overflow", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=18446744073709551616\n", wantErr: "out of range"},
		{name: "binary garbage", in: "\x00\xff\xfe some", wantErr: "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePSI([]byte(tc.in))
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBadPSI) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrBadPSI mentioning %q", err, tc.wantErr)
				}
				if got != (PSI{}) {
					t.Fatalf("error with a partial result %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestPSIStringRoundTrip(t *testing.T) {
	p, err := ParsePSI([]byte(psiBusy))
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != psiBusy {
		t.Fatalf("String() = %q, want %q", p.String(), psiBusy)
	}
}

func FuzzParsePSI(f *testing.F) {
	f.Add([]byte(psiIdle))
	f.Add([]byte(psiBusy))
	f.Add([]byte("some avg10=1.00 avg60=2.00 avg300=3.00 total=4"))
	f.Add([]byte("some avg10=100.00 avg60=0 avg300=0.5 total=18446744073709551615\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePSI(data)
		if err != nil {
			if !errors.Is(err, ErrBadPSI) {
				t.Fatalf("error not wrapping ErrBadPSI: %v", err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message of %d bytes", len(err.Error()))
			}
			return
		}
		for _, l := range []PSILine{p.Some, p.Full} {
			for _, v := range []float64{l.Avg10, l.Avg60, l.Avg300} {
				if !(v >= 0 && v <= 100) {
					t.Fatalf("average %v outside [0, 100] from %q", v, data)
				}
			}
		}
		if !p.HasFull && p.Full != (PSILine{}) {
			t.Fatalf("full line values without HasFull")
		}
		// What we print, we parse back to the same text.
		s := p.String()
		q, err := ParsePSI([]byte(s))
		if err != nil {
			t.Fatalf("cannot parse own output %q: %v", s, err)
		}
		if q.String() != s || q.Some.Total != p.Some.Total || q.Full.Total != p.Full.Total || q.HasFull != p.HasFull {
			t.Fatalf("round trip %q -> %q", s, q.String())
		}
	})
}

func TestThresholdsLevel(t *testing.T) {
	line := func(avg10 float64) PSILine { return PSILine{Avg10: avg10} }
	for _, tc := range []struct {
		name string
		th   Thresholds
		p    PSI
		want Level
	}{
		{"idle", Thresholds{}, PSI{HasFull: true}, LevelNone},
		{"some below", Thresholds{}, PSI{Some: line(9.99), HasFull: true}, LevelNone},
		{"some at", Thresholds{}, PSI{Some: line(10), HasFull: true}, LevelSome},
		{"full at", Thresholds{}, PSI{Some: line(1), Full: line(5), HasFull: true}, LevelFull},
		{"critical", Thresholds{}, PSI{Some: line(50), Full: line(20), HasFull: true}, LevelCritical},
		{"full ignored without HasFull", Thresholds{}, PSI{Some: line(1), Full: line(50)}, LevelNone},
		{"custom", Thresholds{Some: 1, Full: 2, Critical: 3}, PSI{Some: line(1.5), Full: line(2.5), HasFull: true}, LevelFull},
	} {
		if got := tc.th.Level(tc.p); got != tc.want {
			t.Errorf("%s: Level = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		l    Level
		want int64
	}{{LevelNone, 1024}, {LevelSome, 512}, {LevelFull, 256}, {LevelCritical, 256}} {
		if got := tc.l.scale(1024); got != tc.want {
			t.Errorf("%v.scale(1024) = %d, want %d", tc.l, got, tc.want)
		}
	}
	if s := Level(9).String(); s != "level(9)" {
		t.Errorf("String of unknown level = %q", s)
	}
}

// writeAtomic replaces path so a concurrent poll never sees a half file.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitLevel(t *testing.T, m *PressureMonitor, want Level) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.Level() != want {
		if time.Now().After(deadline) {
			_, err := m.Last()
			t.Fatalf("level %v, want %v (last error %v)", m.Level(), want, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPressureMonitorPolls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "memory.pressure")
	writeAtomic(t, path, psiIdle)
	m, err := NewPressureMonitor(path, 5*time.Millisecond, Thresholds{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Level() != LevelNone {
		t.Fatalf("initial level %v", m.Level())
	}
	writeAtomic(t, path, psiBusy)
	if m.Level() != LevelNone {
		t.Fatal("level changed before Start")
	}
	m.Start()
	m.Start() // idempotent
	waitLevel(t, m, LevelFull)
	if p, err := m.Last(); err != nil || p.Some.Total != 123456789 {
		t.Fatalf("Last = %+v, %v", p, err)
	}
	// Garbage drops the level to none and keeps the error.
	writeAtomic(t, path, "garbage")
	waitLevel(t, m, LevelNone)
	if _, err := m.Last(); !errors.Is(err, ErrBadPSI) {
		t.Fatalf("Last error = %v, want ErrBadPSI", err)
	}
	writeAtomic(t, path, "some avg10=30.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=25.00 avg60=0.00 avg300=0.00 total=0\n")
	waitLevel(t, m, LevelCritical)
	// A vanished file (cgroup removed) also means none.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitLevel(t, m, LevelNone)
	if _, err := m.Last(); !errors.Is(err, ErrPSIUnavailable) {
		t.Fatalf("Last error = %v, want ErrPSIUnavailable", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m.SetLevel(LevelSome) // no poller left to overwrite it
	time.Sleep(20 * time.Millisecond)
	if m.Level() != LevelSome {
		t.Fatal("poller still running after Close")
	}
	m.Start() // no-op after Close
}

func TestPressureMonitorUnavailable(t *testing.T) {
	_, err := NewPressureMonitor(filepath.Join(t.TempDir(), "nope"), 0, Thresholds{})
	if !errors.Is(err, ErrPSIUnavailable) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrPSIUnavailable wrapping ErrNotExist", err)
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, []byte(strings.Repeat(psiIdle, 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPressureMonitor(big, 0, Thresholds{}); !errors.Is(err, ErrBadPSI) {
		t.Fatalf("oversized file: err = %v", err)
	}
}

func TestPressureMonitorManual(t *testing.T) {
	var m PressureMonitor
	m.Start() // nothing to poll
	if m.Level() != LevelNone {
		t.Fatal("zero monitor not at LevelNone")
	}
	m.SetLevel(LevelFull)
	if m.Level() != LevelFull {
		t.Fatal("SetLevel ignored")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPressureMonitorSystem(t *testing.T) {
	m, err := NewPressureMonitor("", 0, Thresholds{})
	if errors.Is(err, ErrPSIUnavailable) {
		t.Skipf("no system PSI here: %v", err)
	}
	if err != nil {
		t.Fatalf("the kernel's own %s does not parse: %v", SystemPSIPath, err)
	}
	defer m.Close()
	p, _ := m.Last()
	t.Logf("%s: %+v, level %v", SystemPSIPath, p, m.Level())
	t.Logf("CgroupPSIPath() = %s", CgroupPSIPath())
}

func TestCgroupV2Path(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"0::/system.slice/mpaged.service\n", "/sys/fs/cgroup/system.slice/mpaged.service/memory.pressure", true},
		{"0::/\n", "/sys/fs/cgroup/memory.pressure", true},
		{"12:memory:/docker/abc\n1:name=systemd:/x\n0::/kubepods/pod1\n", "/sys/fs/cgroup/kubepods/pod1/memory.pressure", true},
		{"12:memory:/docker/abc\n", "", false},
		{"", "", false},
		{"0::\n", "", false},
	} {
		got, ok := cgroupV2Path([]byte(tc.in), "/sys/fs/cgroup")
		if got != tc.want || ok != tc.ok {
			t.Errorf("cgroupV2Path(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
