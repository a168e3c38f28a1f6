package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
)

// TestPrometheusScrapesDaemon: a real Prometheus scrapes the daemon, and a
// PromQL query through its HTTP API sees mpaged_bios_submitted_total
// {op="read"} rise while clients read; promtool finds the exposition
// clean.
func TestPrometheusScrapesDaemon(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	prom := testenv.RequireTool(t, "prometheus")
	promtool := testenv.RequireTool(t, "promtool")
	dir := t.TempDir()
	d := startDaemon(t, dir, "--cache", "8MiB")
	data := bytes.Repeat([]byte("scrape me "), 3<<20) // 30 MiB: more than the cache
	d.must(201, "PUT", "/v1/files/data?sync=1", bytes.NewReader(data))

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(d.must(200, "GET", "/metrics", nil))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	promURL := startPrometheus(t, prom, strings.TrimPrefix(d.url, "http://"))
	before := waitForSample(t, promURL, `mpaged_bios_submitted_total{op="read"}`, func(float64) bool { return true })
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a read load: the file does not fit the cache, so reads reach the device
		for {
			select {
			case <-stop:
				return
			default:
			}
			if resp, err := http.Get(d.url + "/v1/files/data"); err == nil {
				resp.Body.Close()
			}
		}
	}()
	after := waitForSample(t, promURL, `mpaged_bios_submitted_total{op="read"}`, func(v float64) bool { return v > before })
	t.Logf("mpaged_bios_submitted_total{op=\"read\"}: %v -> %v", before, after)
	up := waitForSample(t, promURL, `up{job="mpaged"}`, func(v float64) bool { return v == 1 })
	if up != 1 {
		t.Errorf("up = %v", up)
	}
	d.stop(syscall.SIGTERM)
}

// startPrometheus runs Prometheus scraping target every second and returns
// its base URL; it is stopped when the test ends.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mpaged\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus:\n%s", logs.String())
		}
	})
	return "http://" + addr
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitForSample queries Prometheus until query has a sample that ok
// accepts, and returns it.
func waitForSample(t *testing.T, promURL, query string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		v, err := queryProm(promURL, query)
		if err == nil && ok(v) {
			return v
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprint(v)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("prometheus: %s: gave up; last: %s", query, last)
	return 0
}

func queryProm(promURL, query string) (float64, error) {
	resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" || len(r.Data.Result) == 0 {
		return 0, fmt.Errorf("status %q, %d series", r.Status, len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}
