package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func testBenchFile(size int64) *benchFile {
	f := &benchFile{Name: httpFileName, Size: size, Seed: 42}
	f.CRC = f.checksum()
	return f
}

// The content is a function of the offset: any piece read at any offset
// is that piece of the whole stream, and it is incompressible.
func TestBenchFileContent(t *testing.T) {
	f := testBenchFile(3*contentBlock + 1000)
	whole := make([]byte, f.Size)
	if n, err := f.ReadAt(whole, 0); n != len(whole) || err != nil {
		t.Fatalf("ReadAt whole: %d %v", n, err)
	}
	if crc := crc32.Checksum(whole, castagnoli); crc != f.CRC {
		t.Fatalf("checksum %08x, CRC of the bytes %08x", f.CRC, crc)
	}
	for _, tc := range []struct {
		off  int64
		size int
		n    int
		err  error
	}{
		{0, 10, 10, nil},
		{contentBlock - 3, 10, 10, nil},                        // spans two blocks
		{100, 2*contentBlock + 500, 2*contentBlock + 500, nil}, // spans three
		{f.Size - 5, 10, 5, io.EOF},                            // short at the end
		{f.Size, 1, 0, io.EOF},
	} {
		b := make([]byte, tc.size)
		n, err := f.ReadAt(b, tc.off)
		if n != tc.n || !errors.Is(err, tc.err) && !(err == nil && tc.err == nil) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d, %v", tc.size, tc.off, n, err, tc.n, tc.err)
			continue
		}
		if !bytes.Equal(b[:n], whole[tc.off:tc.off+int64(n)]) {
			t.Errorf("ReadAt(%d bytes at %d): not the stream's bytes there", tc.size, tc.off)
		}
	}
	var seen [256]bool
	distinct := 0
	for _, c := range whole[:contentBlock] {
		if !seen[c] {
			seen[c] = true
			distinct++
		}
	}
	if distinct < 200 || bytes.Equal(whole[:64], whole[contentBlock:contentBlock+64]) {
		t.Errorf("content is not incompressible: %d distinct byte values, blocks 0 and 1 start alike: %v",
			distinct, bytes.Equal(whole[:64], whole[contentBlock:contentBlock+64]))
	}
	other := &benchFile{Size: f.Size, Seed: 43}
	if other.checksum() == f.CRC {
		t.Error("another seed gives the same content")
	}
}

// fileServer serves f at /v1/files/NAME through http.ServeContent (what
// the daemon uses), with an optional fault applied to each response, and
// counts the connections it accepted.
type fileServer struct {
	*httptest.Server
	mu    sync.Mutex
	conns int
}

type responseFault func(w http.ResponseWriter, r *http.Request, f *benchFile) bool

func newFileServer(t *testing.T, f *benchFile, fault responseFault) *fileServer {
	t.Helper()
	fs := &fileServer{}
	fs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/files"+f.Name {
			http.NotFound(w, r)
			return
		}
		if fault != nil && r.Method == http.MethodGet && fault(w, r, f) {
			return
		}
		http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(f, 0, f.Size))
	}))
	fs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			fs.mu.Lock()
			fs.conns++
			fs.mu.Unlock()
		}
	}
	fs.Start()
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) connections() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.conns
}

func rangeWorkload(conc int, d time.Duration) Workload {
	return Workload{Name: "http-range", Pattern: Random, ReadPercent: 100, Duration: d, Seed: 7,
		HTTP: &HTTPWorkload{Mode: RangeGet, Concurrency: conc, RangeSize: httpRangeSize}}
}

// The load generator against a correct server: the whole GET matches the
// checksum, every range body is the file's bytes at its offset, and each
// worker keeps one connection for all its requests.
func TestLoadGenChecksAndKeepsAlive(t *testing.T) {
	f := testBenchFile(1 << 20)
	srv := newFileServer(t, f, nil)
	url := srv.URL + "/v1/files" + f.Name
	var seen bytes.Buffer
	var began, ended bool
	m, err := newLoadGen(url, f).getWhole(context.Background(), Hooks{
		Begin: func() { began = true },
		End:   func() { ended = true },
		Visit: func(off int64, b []byte) {
			if off != int64(seen.Len()) {
				t.Errorf("whole GET visited %d after %d bytes", off, seen.Len())
			}
			seen.Write(b)
		},
	})
	if err != nil || m.ReadBytes != f.Size || m.ReadOps != 1 || !began || !ended || m.ReadLatency.TotalCount() != 1 {
		t.Fatalf("getWhole: %+v, %v (hooks %v %v)", m, err, began, ended)
	}
	if crc32.Checksum(seen.Bytes(), castagnoli) != f.CRC {
		t.Fatal("the visited body is not the file")
	}

	const conc = 8
	before := srv.connections()
	var mu sync.Mutex
	checked := map[int64]bool{}
	g := newLoadGen(url, f)
	m, err = g.getRanges(context.Background(), rangeWorkload(conc, 0), Hooks{Visit: func(off int64, b []byte) {
		want := make([]byte, len(b))
		f.ReadAt(want, off)
		mu.Lock()
		defer mu.Unlock()
		if !bytes.Equal(b, want) || len(b) != httpRangeSize || checked[off] {
			t.Errorf("range at %d: %d bytes, equal %v, seen before %v", off, len(b), bytes.Equal(b, want), checked[off])
		}
		checked[off] = true
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Duration 0: one pass, every block once.
	if blocks := f.Size / httpRangeSize; m.ReadOps != blocks || int64(len(checked)) != blocks || m.ReadBytes != f.Size {
		t.Fatalf("one pass: %d requests, %d distinct offsets, %d bytes; want %d blocks", m.ReadOps, len(checked), m.ReadBytes, blocks)
	}
	if got := g.dials.Load(); got != conc || srv.connections()-before != conc {
		t.Fatalf("%d workers dialled %d connections, the server accepted %d: want one each (keep-alive)", conc, got, srv.connections()-before)
	}
	if m.ReadLatency.TotalCount() != m.ReadOps || m.ReadLatency.ValueAtQuantile(50) <= 0 {
		t.Fatalf("latency histogram: %d samples for %d requests", m.ReadLatency.TotalCount(), m.ReadOps)
	}
}

// The load generator fails a run on any wrong answer.
func TestLoadGenCatchesWrongAnswers(t *testing.T) {
	f := testBenchFile(256 << 10)
	flip := func(w http.ResponseWriter, r *http.Request, f *benchFile) bool {
		// The right headers, one byte wrong.
		rec := httptest.NewRecorder()
		http.ServeContent(rec, r, "", time.Time{}, io.NewSectionReader(f, 0, f.Size))
		body := rec.Body.Bytes()
		body[len(body)/2] ^= 1
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
		return true
	}
	for _, tc := range []struct {
		name  string
		fault responseFault
		whole bool // the whole GET fails too
	}{
		{"flipped byte", flip, true},
		{"range ignored", func(w http.ResponseWriter, r *http.Request, f *benchFile) bool {
			r.Header.Del("Range")
			return false
		}, false},
		{"wrong Content-Range", func(w http.ResponseWriter, r *http.Request, f *benchFile) bool {
			if r.Header.Get("Range") == "" {
				return false
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-4095/%d", f.Size))
			w.WriteHeader(http.StatusPartialContent)
			b := make([]byte, 4096)
			f.ReadAt(b, 0)
			w.Write(b)
			return true
		}, false},
		{"short body", func(w http.ResponseWriter, r *http.Request, f *benchFile) bool {
			w.Header().Set("Content-Length", "10")
			if rg := r.Header.Get("Range"); rg != "" {
				var a, b int64
				fmt.Sscanf(rg, "bytes=%d-%d", &a, &b)
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, f.Size))
				w.WriteHeader(http.StatusPartialContent)
			}
			w.Write(make([]byte, 10))
			return true
		}, true},
		{"server error", func(w http.ResponseWriter, r *http.Request, f *benchFile) bool {
			http.Error(w, "EIO", http.StatusInternalServerError)
			return true
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFileServer(t, f, tc.fault)
			g := newLoadGen(srv.URL+"/v1/files"+f.Name, f)
			if _, err := g.getRanges(context.Background(), rangeWorkload(4, 0), Hooks{}); !errors.Is(err, ErrRunner) {
				t.Errorf("ranges: %v, want ErrRunner", err)
			}
			_, err := g.getWhole(context.Background(), Hooks{})
			if tc.whole != errors.Is(err, ErrRunner) {
				t.Errorf("whole GET: %v; want a failure: %v", err, tc.whole)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		line string
		want procStat
		ok   bool
	}{
		{"1234 (nginx) S 1 1234 1234 0 -1 4194624 100 0 0 0 17 5 0 0 20 0 1 0 100 1000 100", procStat{ppid: 1, cpu: 22}, true},
		{"77 (a (b) c) R 12 77 77 0 -1 0 0 0 0 0 300 200 0 0 20 0 9 0 1 1 1", procStat{ppid: 12, cpu: 500}, true},
		{"77 (nginx) S 1 2", procStat{}, false},
		{"no name at all", procStat{}, false},
	} {
		got, err := parseProcStat(tc.line)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseProcStat(%q) = %+v, %v; want %+v, ok %v", tc.line, got, err, tc.want, tc.ok)
		}
	}
}

// treeCPU finds a process's children, and serverCPU counts the time the
// process spent and refuses a set of processes that changed.
func TestServerCPU(t *testing.T) {
	p, err := startServer("sleep", "sleep", []string{"30"}, nil)
	if err != nil {
		t.Skipf("no sleep: %v", err)
	}
	defer p.stop(9, time.Second)
	// This process is the root: sleep is its child.
	tree, err := treeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tree[p.pid()]; !ok {
		t.Fatalf("treeCPU(self) = %v: misses child %d", tree, p.pid())
	}
	s, err := startServerCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	spin(300 * time.Millisecond)
	secs, n, err := s.done()
	if err != nil || n != len(tree) || secs <= 0 {
		t.Fatalf("after 300ms of spinning: %.3f s over %d processes, %v", secs, n, err)
	}
	s, err = startServerCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	_ = p.stop(9, time.Second) // killed: an unclean exit, as asked
	if _, _, err := s.done(); !errors.Is(err, ErrRunner) {
		t.Fatalf("a child went away during the interval: %v, want ErrRunner", err)
	}
}

func spin(d time.Duration) {
	x := 0
	for start := time.Now(); time.Since(start) < d; {
		x++
	}
	_ = x
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP mpaged_ring_sqes_total SQEs.
# TYPE mpaged_ring_sqes_total counter
mpaged_ring_sqes_total 100
mpaged_bios_submitted_total{op="read"} 10
mpaged_bios_submitted_total{op="write"} 2
mpaged_bio_pages_sum{op="read"} 2560
mpaged_bio_pages_bucket{op="read",le="+Inf"} 10
mpaged_engine_info{backend="native",direct="true"} 1
weird_label{path="a b } c"} 3.5 1700000000
go_memstats_mallocs_total 1e+06
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"mpaged_ring_sqes_total": 100, "mpaged_bios_submitted_total": 12, "mpaged_bio_pages_sum": 2560,
		"weird_label": 3.5, "go_memstats_mallocs_total": 1e6, "mpaged_bio_pages": 0,
	} {
		if got := metricSum(m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if b := metricLabel(m, "mpaged_engine_info", "backend"); b != "native" {
		t.Errorf("backend %q", b)
	}
	after, _ := parseMetrics(strings.NewReader(strings.NewReplacer(
		"mpaged_ring_sqes_total 100", "mpaged_ring_sqes_total 164",
		`mpaged_bio_pages_sum{op="read"} 2560`, `mpaged_bio_pages_sum{op="read"} 4608`,
		`{op="read"} 10`, `{op="read"} 18`,
		"go_memstats_mallocs_total 1e+06", "go_memstats_mallocs_total 1.0005e+06").Replace(text)))
	c := daemonCounters(m, after, 100)
	if c.SQEs != 64 || c.Bios != 8 || c.BioPages != 2048 || c.Mallocs != 400 || c.Backend != "native" {
		t.Errorf("daemonCounters = %+v", c)
	}
	if _, err := parseMetrics(strings.NewReader("x{a=\"b\"} notanumber\n")); err == nil {
		t.Error("a bad value parsed")
	}
}

func TestHTTPWorkloadSelection(t *testing.T) {
	for _, tc := range []struct {
		workloads []string
		depth     int
		want      []string
		conc      int
	}{
		{nil, 0, []string{"seqread", "randread", "seqwrite", "randwrite", "mix", "http-get-cold", "http-get-warm", "http-range"}, httpRangeConcurrency},
		{[]string{"http-get"}, 0, []string{"http-get-cold", "http-get-warm"}, 0},
		{[]string{"http-range", "seqread"}, 16, []string{"seqread", "http-range"}, 16},
		{[]string{"http-get-warm"}, 0, []string{"http-get-warm"}, 0},
	} {
		cfg, err := Config{Quick: true, Workloads: tc.workloads, Depth: tc.depth}.normalize()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, w := range cfg.workloads() {
			names = append(names, w.Name)
			if (w.HTTP != nil) != isHTTPWorkload(w.Name) {
				t.Errorf("%s: HTTP %v", w.Name, w.HTTP)
			}
			if w.Name == "http-range" && (w.HTTP.Concurrency != tc.conc || w.Duration != cfg.Duration || w.HTTP.RangeSize != 4096) {
				t.Errorf("http-range: %+v, duration %v", *w.HTTP, w.Duration)
			}
			if w.HTTP != nil && w.Depth != 0 {
				t.Errorf("%s has depth %d: it would size the engine runners' rings", w.Name, w.Depth)
			}
		}
		if strings.Join(names, ",") != strings.Join(tc.want, ",") {
			t.Errorf("--workloads %v: %v, want %v", tc.workloads, names, tc.want)
		}
	}
	if _, err := (Config{Workloads: []string{"http-put"}}).normalize(); !errors.Is(err, ErrConfig) {
		t.Errorf("unknown HTTP workload: %v", err)
	}
}

// An HTTP runner applies only to HTTP workloads, the others only to block
// workloads, and cli-cat only to the cold whole GET.
func TestHTTPRunnersApply(t *testing.T) {
	cfg, err := Config{Quick: true}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	runners := []Runner{newEngineRunner("engine-native", backendNative, true), newFioRunner("fio-io_uring", "io_uring", 0),
		new(mpagedHTTPRunner), new(nginxRunner), new(catRunner)}
	want := map[string][]string{
		"seqread":       {"engine-native", "fio-io_uring"},
		"randwrite":     {"engine-native", "fio-io_uring"},
		"http-get-cold": {"http-mpaged", "http-nginx", "cli-cat"},
		"http-get-warm": {"http-mpaged", "http-nginx"},
		"http-range":    {"http-mpaged", "http-nginx"},
	}
	for _, w := range cfg.workloads() {
		exp, ok := want[w.Name]
		if !ok {
			continue
		}
		var got []string
		for _, r := range runners {
			if appliesTo(r, w) {
				got = append(got, r.Name())
			}
		}
		if strings.Join(got, ",") != strings.Join(exp, ",") {
			t.Errorf("%s: %v, want %v", w.Name, got, exp)
		}
	}
	if !httpPlanned(cfg, cfg.workloads()) {
		t.Error("the default run plans HTTP workloads")
	}
	cfg.Runners = []string{"engine-native"}
	if httpPlanned(cfg, cfg.workloads()) {
		t.Error("no HTTP runner selected, yet the target would get a file system")
	}
}

func TestDaemonCache(t *testing.T) {
	env := &Env{CacheBytes: 8 << 20}
	f := &benchFile{Size: 64 << 20}
	cold := Workload{HTTP: &HTTPWorkload{Mode: WholeGet}}
	warm := Workload{HTTP: &HTTPWorkload{Mode: WholeGet, Warm: true}}
	if c := daemonCache(cold, env, f); c != env.CacheBytes || c >= f.Size {
		t.Errorf("cold cache %d: want the bench's, smaller than the file", c)
	}
	if c := daemonCache(warm, env, f); c < f.Size+env.CacheBytes {
		t.Errorf("warm cache %d: want room for the %d-byte file and more", c, f.Size)
	}
}

func TestHTTPFileSize(t *testing.T) {
	for _, tc := range []struct {
		size, dev, want int64
		ok              bool
	}{
		{64 << 20, 64<<20 + httpOverhead(64<<20), 64 << 20, true}, // devices the harness made
		{16 << 20, 16<<20 + httpOverhead(16<<20), 16 << 20, true},
		{1 << 30, 1<<30 + httpOverhead(1<<30), 1 << 30, true},
		{1 << 30, 1 << 30, 1<<30 - httpOverhead(1<<30), true}, // a named device, full
		{64 << 20, 8 << 20, 0, false},                         // too small
	} {
		got, err := httpFileSize(&Target{Size: tc.size, DeviceSize: tc.dev})
		if (err == nil) != tc.ok || got != tc.want || got%(1<<20) != 0 {
			t.Errorf("httpFileSize(region %d, device %d) = %d, %v; want %d", tc.size, tc.dev, got, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("error %v is not ErrConfig", err)
		}
	}
}
