package main

import (
	"bytes"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"

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
	d := testenv.StartDaemon(t, dir, "--cache", "8MiB")
	data := bytes.Repeat([]byte("scrape me "), 3<<20) // 30 MiB: more than the cache
	d.Must(201, "PUT", "/v1/files/data?sync=1", bytes.NewReader(data))

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(d.Must(200, "GET", "/metrics", nil))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	promURL := testenv.StartPrometheus(t, prom, strings.TrimPrefix(d.URL, "http://"))
	before := testenv.WaitForSample(t, promURL, `mpaged_bios_submitted_total{op="read"}`, func(float64) bool { return true })
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a read load: the file does not fit the cache, so reads reach the device
		for {
			select {
			case <-stop:
				return
			default:
			}
			if resp, err := http.Get(d.URL + "/v1/files/data"); err == nil {
				resp.Body.Close()
			}
		}
	}()
	after := testenv.WaitForSample(t, promURL, `mpaged_bios_submitted_total{op="read"}`, func(v float64) bool { return v > before })
	t.Logf("mpaged_bios_submitted_total{op=\"read\"}: %v -> %v", before, after)
	up := testenv.WaitForSample(t, promURL, `up{job="mpaged"}`, func(v float64) bool { return v == 1 })
	if up != 1 {
		t.Errorf("up = %v", up)
	}
	d.Stop(syscall.SIGTERM)
}
