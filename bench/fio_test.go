package bench

import (
	"os"
	"slices"
	"testing"
)

func TestFioArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		job     fioJob
		want    []string
		wantNot []string
	}{
		{"seqread io_uring", fioJob{Workload: testWorkloadTimed("seqread"), Path: "/dev/zram7", IOEngine: "io_uring"},
			[]string{"--rw=read", "--bs=131072", "--iodepth=32", "--ioengine=io_uring", "--direct=1", "--filename=/dev/zram7",
				"--size=67108864", "--offset=0", "--fixedbufs=1", "--registerfiles=1", "--time_based", "--runtime=100ms",
				"--output-format=json", "--lat_percentiles=1", "--percentile_list=50:99:99.9"},
			[]string{"--end_fsync=1", "--rwmixread=70", "--verify=pattern"}},
		{"randread libaio", fioJob{Workload: testWorkloadTimed("randread"), Path: "/dev/loop3", IOEngine: "libaio"},
			[]string{"--rw=randread", "--bs=4096", "--iodepth=128", "--ioengine=libaio"},
			[]string{"--fixedbufs=1", "--end_fsync=1"}},
		{"seqwrite with its own block size", fioJob{Workload: testWorkloadTimed("seqwrite"), Path: "/d", IOEngine: "io_uring", BS: 1 << 20},
			[]string{"--rw=write", "--bs=1048576", "--end_fsync=1"}, nil},
		{"randwrite", fioJob{Workload: testWorkloadTimed("randwrite"), Path: "/d", IOEngine: "io_uring"},
			[]string{"--rw=randwrite", "--iodepth=32", "--end_fsync=1"}, nil},
		{"mix", fioJob{Workload: testWorkloadTimed("mix"), Path: "/d", IOEngine: "io_uring"},
			[]string{"--rw=randrw", "--rwmixread=70", "--end_fsync=1"}, nil},
		{"one pass", fioJob{Workload: testWorkload("seqread"), Path: "/d", IOEngine: "io_uring"},
			nil, []string{"--time_based"}},
		{"fill with a pattern", fioJob{Workload: testWorkload("seqwrite"), Path: "/d", IOEngine: "io_uring", Verify: "0x01020304%o"},
			[]string{"--verify=pattern", "--verify_pattern=0x01020304%o", "--do_verify=0", "--verify_state_save=0"}, []string{"--verify_only=1"}},
		{"verify a pattern", fioJob{Workload: testWorkload("seqread"), Path: "/d", IOEngine: "io_uring", Verify: "0x01020304%o", VerifyOnly: true},
			[]string{"--verify=pattern", "--verify_only=1", "--verify_fatal=1"}, []string{"--do_verify=0"}},
		{"colon in the path", fioJob{Workload: testWorkload("seqread"), Path: "/tmp/a:b", IOEngine: "io_uring"},
			[]string{`--filename=/tmp/a\:b`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.job.args()
			for _, a := range tc.want {
				if !slices.Contains(args, a) {
					t.Errorf("args lack %s: %v", a, args)
				}
			}
			for _, a := range tc.wantNot {
				if slices.Contains(args, a) {
					t.Errorf("args have %s: %v", a, args)
				}
			}
		})
	}
}

func testWorkloadTimed(name string) Workload {
	cfg, err := Config{Quick: true}.normalize()
	if err != nil {
		panic(err)
	}
	for _, w := range cfg.workloads() {
		if w.Name == name {
			return w
		}
	}
	panic(name)
}

// parseFio on real fio 3.33 reports (bench/testdata).
func TestParseFio(t *testing.T) {
	for _, tc := range []struct {
		file, workload                           string
		readOps, writeOps, readBytes, writeBytes int64
		seconds                                  float64
		p50, p99, p999                           int64
		cpu                                      float64
	}{
		{"fio-randrw.json", "mix", 10973, 4720, 44945408, 19333120, 0.2, 88576, 203776, 1433600, 0.475 * 0.2},
		{"fio-read.json", "seqread", 64, 0, 8388608, 0, 0.009, 675840, 4227072, 4227072, 0.11111111 * 0.009},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, err := os.ReadFile("testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			// fio may print notices before the JSON.
			out = append([]byte("fio: note: something\n"), out...)
			r, err := parseFio(out, testWorkload(tc.workload))
			if err != nil {
				t.Fatal(err)
			}
			if r.Workload != tc.workload || r.ReadOps != tc.readOps || r.WriteOps != tc.writeOps || r.ReadBytes != tc.readBytes ||
				r.WriteBytes != tc.writeBytes || r.Seconds != tc.seconds || r.P50 != tc.p50 || r.P99 != tc.p99 || r.P999 != tc.p999 {
				t.Fatalf("parseFio = %+v", r)
			}
			if d := r.CPUSeconds - tc.cpu; d > 1e-6 || d < -1e-6 {
				t.Fatalf("cpu %v, want %v", r.CPUSeconds, tc.cpu)
			}
		})
	}
}

func TestParseFioRefuses(t *testing.T) {
	for name, out := range map[string]string{
		"not json":  "fio: engine io_uring not loadable",
		"no job":    `{"jobs": []}`,
		"job error": `{"jobs": [{"error": 5, "job_runtime": 100, "read": {"io_bytes": 4096, "total_ios": 1}}]}`,
		"no io":     `{"jobs": [{"error": 0, "job_runtime": 100}]}`,
	} {
		if r, err := parseFio([]byte(out), testWorkload("seqread")); err == nil {
			t.Errorf("%s: parseFio = %+v, want an error", name, r)
		}
	}
}

func TestHasEngine(t *testing.T) {
	help := "Available IO engines:\n\tcpuio\n\tmmap\n\tlibaio\n\tio_uring\n\tio_uring_cmd\n"
	for engine, want := range map[string]bool{"io_uring": true, "libaio": true, "uring": false, "posixaio": false} {
		if got := hasEngine(help, engine); got != want {
			t.Errorf("hasEngine(%s) = %v", engine, got)
		}
	}
}

func TestFioRunnerApplies(t *testing.T) {
	all := newFioRunner("fio-io_uring", "io_uring", 0)
	big := newFioRunner("fio-io_uring-1m", "io_uring", 1<<20)
	for _, name := range workloadNames() {
		w := testWorkload(name)
		if !all.Applies(w) {
			t.Errorf("fio-io_uring does not apply to %s", name)
		}
		if got := big.Applies(w); got != (w.Pattern == Sequential) {
			t.Errorf("fio-io_uring-1m applies to %s: %v", name, got)
		}
	}
}
