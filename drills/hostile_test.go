package drills

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/internal/voltest"
)

// hostileCase is one request a hostile client sends, raw, and the
// statuses it may be answered with.
type hostileCase struct {
	name string
	raw  string // the whole request; Host and Connection: close are added
	want []int
	// json: the answer must be the API's JSON error (false when net/http
	// refuses the request before any handler runs: its answers are text).
	json bool
}

func rawGET(target string, hdr ...string) string {
	return "GET " + target + " HTTP/1.1\r\n" + strings.Join(hdr, "\r\n") + endHeaders(hdr)
}

func endHeaders(hdr []string) string {
	if len(hdr) == 0 {
		return ""
	}
	return "\r\n"
}

func rawPUT(target string, body string, hdr ...string) string {
	if !slices.ContainsFunc(hdr, func(h string) bool { return strings.HasPrefix(strings.ToLower(h), "content-length:") }) {
		hdr = append(hdr, fmt.Sprintf("Content-Length: %d", len(body)))
	}
	return "PUT " + target + " HTTP/1.1\r\n" + strings.Join(hdr, "\r\n") + "\r\n" + "\r\nBODY" + body
}

// hostileCases are the path, Range and body attacks. The volume holds
// /f (fileSize bytes) and /d/x.
func hostileCases(fileSize int) []hostileCase {
	long := strings.Repeat("a", 256)
	deep := strings.Repeat("d/", 2100) + "f" // past ext's 4096-byte path limit
	var many strings.Builder
	many.WriteString("bytes=")
	for i := range 4000 {
		fmt.Fprintf(&many, "%d-%d,", i*2, i*2)
	}
	huge := "/v1/files/" + strings.Repeat("x", 100<<10) // past the 64 KiB header limit
	bad, nf, ok := http.StatusBadRequest, http.StatusNotFound, http.StatusOK
	part, unsat := http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable
	return []hostileCase{
		{"dot-dot", rawGET("/v1/files/../../etc/passwd"), []int{bad}, true},
		{"dot-dot inside", rawGET("/v1/files/d/../../../etc/passwd"), []int{bad}, true},
		{"encoded dot-dot", rawGET("/v1/files/%2e%2e/%2e%2e/etc/passwd"), []int{bad}, true},
		{"encoded dot-dot and slash", rawGET("/v1/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd"), []int{bad}, true},
		{"mixed-case encoding", rawGET("/v1/files/%2E%2E/etc/passwd"), []int{bad}, true},
		{"encoded slash", rawGET("/v1/files/d%2fx"), []int{ok}, true}, // names /d/x: a slash is a slash
		{"encoded slash to nowhere", rawGET("/v1/files/nope%2fx"), []int{nf}, true},
		{"double slash", rawGET("/v1/files//etc/passwd"), []int{bad}, true},
		{"NUL", rawGET("/v1/files/f%00.txt"), []int{bad}, true},
		{"NUL in a PUT", rawPUT("/v1/files/a%00b", "x"), []int{bad}, true},
		{"dot-dot PUT", rawPUT("/v1/files/..%2f..%2fescaped", "x"), []int{bad}, true},
		{"component of 256 bytes", rawGET("/v1/files/" + long), []int{bad}, true},
		{"PUT component of 256 bytes", rawPUT("/v1/files/"+long, "x"), []int{bad}, true},
		{"PUT component of 255 bytes", rawPUT("/v1/files/"+long[:255], "x"), []int{http.StatusCreated}, true},
		{"path over 4096 bytes", rawGET("/v1/files/" + deep), []int{bad}, true},
		{"URL over the header limit", rawGET(huge), []int{http.StatusRequestHeaderFieldsTooLarge}, false},
		{"backslashes", rawGET(`/v1/files/..\..\etc\passwd`), []int{nf, bad}, false},
		{"4000 ranges", rawGET("/v1/files/f", "Range: "+many.String()), []int{ok, part, unsat}, true},
		{"overlapping ranges", rawGET("/v1/files/f", "Range: bytes=0-100,50-150,0-"), []int{ok, part}, true},
		{"negative range", rawGET("/v1/files/f", "Range: bytes=-5-10"), []int{unsat}, true},
		{"reversed range", rawGET("/v1/files/f", "Range: bytes=100-5"), []int{unsat}, true},
		// net/http serves a zero-length suffix as an empty 206 (RFC 9110
		// calls it unsatisfiable): no bytes, no harm; recorded as is.
		{"zero suffix", rawGET("/v1/files/f", "Range: bytes=-0"), []int{unsat, part}, true},
		{"range past int64", rawGET("/v1/files/f", "Range: bytes=0-99999999999999999999"), []int{unsat}, true},
		{"start at max int64", rawGET("/v1/files/f", "Range: bytes=9223372036854775807-"), []int{unsat}, true},
		{"suffix past int64", rawGET("/v1/files/f", "Range: bytes=-99999999999999999999"), []int{unsat, ok, part}, true},
		{"not bytes", rawGET("/v1/files/f", "Range: pages=0-1"), []int{unsat, ok}, true},
		{"garbage range", rawGET("/v1/files/f", "Range: bytes=abc"), []int{unsat}, true},
		{"empty range", rawGET("/v1/files/f", "Range: bytes="), []int{unsat, ok}, true},
		{"body over --max-body", rawPUT("/v1/files/big", strings.Repeat("b", 2<<20)), []int{http.StatusRequestEntityTooLarge}, true},
		{"length over --max-body", rawPUT("/v1/files/big", "", "Content-Length: 1099511627776"), []int{http.StatusRequestEntityTooLarge}, true},
		{"negative length", rawPUT("/v1/files/big", "", "Content-Length: -1"), []int{bad}, false},
		{"two lengths", rawPUT("/v1/files/big", "xx", "Content-Length: 2", "Content-Length: 3"), []int{bad}, false},
		{"length past int64", rawPUT("/v1/files/big", "", "Content-Length: 99999999999999999999"), []int{bad}, false},
		{"length shorter than the body", rawPUT("/v1/files/short", "0123456789", "Content-Length: 4"), []int{http.StatusCreated}, true},
		{"chunked over --max-body", "PUT /v1/files/big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nBODY" + chunked(3<<20), []int{http.StatusRequestEntityTooLarge}, true},
		{"unknown method", "BREW /v1/files/f HTTP/1.1\r\n", []int{http.StatusMethodNotAllowed}, true},
		{"method with a space", "G ET /v1/files/f HTTP/1.1\r\n", []int{bad}, false},
	}
}

func chunked(n int) string {
	var b strings.Builder
	for n > 0 {
		k := min(n, 64<<10)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", k, strings.Repeat("c", k))
		n -= k
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// rawCall sends one raw request (its "\r\nBODY" marker splits headers
// from body) on a fresh connection and reads one answer.
func rawCall(addr, raw string, timeout time.Duration) (*http.Response, []byte, error) {
	head, body, _ := strings.Cut(raw, "\r\nBODY")
	head = strings.TrimSuffix(head, "\r\n")
	line, rest, _ := strings.Cut(head, "\r\n")
	msg := line + "\r\nHost: mpaged\r\nConnection: close\r\n"
	if rest != "" {
		msg += rest + "\r\n"
	}
	msg += "\r\n" + body
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	go io.WriteString(conn, msg) // the server may answer (413) before it reads everything
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestHostileInput: path traversal in every spelling, absurd Range
// headers and bodies that lie or overflow, each answered with its status
// (the API's JSON error where a handler answers), and slow-loris clients
// cut off by the timeouts while other clients are served. The volume
// passes e2fsck -fn afterwards, and nothing was written outside it.
func TestHostileInput(t *testing.T) {
	const fileSize = 10000
	content := strings.Repeat("0123456789", fileSize/10)
	img := voltest.MakeImage(t, "32M", map[string]string{"f": content, "d/x": "x"})
	idle := pick(time.Second, 2*time.Second)
	d := testenv.StartDaemon(t, t.TempDir(), "--volume", img, "--max-body", "1MiB", "--idle-timeout", idle.String())
	addr := strings.TrimPrefix(d.URL, "http://")
	row := Row{Drill: "hostile/requests"}
	defer func() { summary.Add(row) }()
	for _, tc := range hostileCases(fileSize) {
		row.Rounds++
		row.Faults++
		start := time.Now()
		resp, b, err := rawCall(addr, tc.raw, 30*time.Second)
		if err != nil {
			if time.Since(start) >= 30*time.Second {
				row.Hangs++
			}
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !slices.Contains(tc.want, resp.StatusCode) {
			t.Errorf("%s: status %d, want one of %v: %.200s", tc.name, resp.StatusCode, tc.want, b)
			continue
		}
		if tc.json && resp.StatusCode >= 400 {
			if err := apitest.CheckError(resp, b, ""); err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
		}
		row.Acknowledged++
	}
	// The one lying length that was accepted stored what it promised.
	if got := d.Must(http.StatusOK, http.MethodGet, "/v1/files/short", nil); string(got) != "0123" {
		t.Errorf("PUT with Content-Length 4 stored %q", got)
	}
	if got := d.Must(http.StatusOK, http.MethodGet, "/v1/files/f", nil); string(got) != content {
		t.Error("/f changed under hostile requests")
	}
	slow := slowLoris(t, d, addr, idle)
	row.Note = fmt.Sprintf("%d hostile requests answered as expected; %s", row.Acknowledged, slow.Note)
	row.Rounds += slow.Rounds
	row.Faults += slow.Faults
	row.Acknowledged += slow.Acknowledged
	row.Hangs += slow.Hangs
	// Nothing escaped the volume: the root holds what it held and what
	// the accepted PUTs made (the staging directory is not listed).
	var names []string
	for _, line := range strings.Split(string(d.Must(http.StatusOK, http.MethodGet, "/v1/files/", nil)), `"name":"`)[1:] {
		name, _, _ := strings.Cut(line, `"`)
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{strings.Repeat("a", 255), "d", "f", "lost+found", "short"}; !slices.Equal(names, want) {
		t.Errorf("root after the hostile requests: %q, want %q", names, want)
	}
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		row.Crashes++
		t.Fatalf("daemon exit %d:\n%s", code, d.Stderr.String())
	}
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Errorf("e2fsck -fn after the hostile drill: %v\n%s", err, out)
	}
}

// slowLoris opens clients that send their headers, or their body, a byte
// a second, or stop sending a body short of its Content-Length, and checks the daemon cuts each off within its timeouts while
// a well-behaved client keeps being answered.
func slowLoris(t *testing.T, d *testenv.Daemon, addr string, idle time.Duration) Row {
	t.Helper()
	n := pick(8, 32)
	row := Row{}
	// The header limit is idle (under 10 s); a body must move 1 KiB/s
	// over each idle span. Allow twice that and a second for scheduling.
	limit := 2*idle + time.Second
	type result struct {
		kind string
		took time.Duration
		cut  bool
	}
	results := make(chan result, 2*n)
	var wg sync.WaitGroup
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind, msg := "headers", "PUT /v1/files/loris HTTP/1.1\r\nHost: mpaged\r\nX-Slow: "+strings.Repeat("z", 60)
			switch i % 3 {
			case 1:
				kind, msg = "body", strings.Repeat("b", 60)
			case 2:
				kind = "stalled body" // a Content-Length the body never reaches
			}
			took, cut := trickle(addr, kind, msg, 30*time.Second)
			results <- result{kind, took, cut}
		}()
	}
	// Meanwhile, a normal client is served, again and again.
	served := 0
	deadline := time.Now().Add(idle)
	for time.Now().Before(deadline) {
		start := time.Now()
		d.Must(http.StatusOK, http.MethodGet, "/v1/files/d/x", nil)
		if took := time.Since(start); took > time.Second {
			t.Errorf("a normal GET took %v during the slow-loris attack", took)
		}
		served++
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	close(results)
	d.Must(http.StatusNotFound, http.MethodGet, "/v1/files/loris", nil) // no cut-off PUT left a file
	var worst time.Duration
	for r := range results {
		row.Rounds++
		row.Faults++
		worst = max(worst, r.took)
		switch {
		case !r.cut:
			row.Hangs++
			t.Errorf("a slow %s client was not cut off in %v", r.kind, r.took)
		case r.took > limit:
			t.Errorf("a slow %s client was cut off after %v, past %v", r.kind, r.took, limit)
		default:
			row.Acknowledged++
		}
	}
	row.Note = fmt.Sprintf("%d slow-loris clients (headers, bodies, stalled bodies) cut off within %v (--idle-timeout %v), %d normal GETs served meanwhile",
		2*n, worst.Round(100*time.Millisecond), idle, served)
	return row
}

// trickle sends msg a byte a second (after the headers when kind is
// "body") until the server closes the connection or answers; it reports
// how long that took and whether the server cut it off before timeout.
func trickle(addr, kind, msg string, timeout time.Duration) (time.Duration, bool) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, false
	}
	defer conn.Close()
	start := time.Now()
	if kind != "headers" {
		fmt.Fprintf(conn, "PUT /v1/files/loris HTTP/1.1\r\nHost: mpaged\r\nContent-Length: 100000\r\n\r\n")
	}
	if kind == "stalled body" {
		io.WriteString(conn, "ten bytes!") // and then nothing
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		conn.SetReadDeadline(time.Now().Add(timeout))
		io.Copy(io.Discard, conn) // returns when the server closes
	}()
	for i := 0; ; i++ {
		select {
		case <-closed:
			return time.Since(start), time.Since(start) < timeout
		case <-time.After(time.Second):
		}
		if kind == "stalled body" {
			continue
		}
		if _, err := conn.Write([]byte{msg[i%len(msg)]}); err != nil {
			<-closed
			return time.Since(start), true
		}
	}
}
