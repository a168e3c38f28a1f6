// Package deploy holds the files operators install (systemd, Prometheus,
// Grafana, Kubernetes) and, here, the tests that check each of them with
// the tool that reads it. The Kubernetes manifests are checked by their own
// module under kubernetes/, so k8s.io/api stays out of this one.
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpaged/mpaged/internal/testenv"
)

func TestMain(m *testing.M) {
	execIfAsked() // the test binary as a seccomp wrapper (seccomp_test.go)
	code := m.Run()
	testenv.RemoveBuilt()
	os.Exit(code)
}

// The files under test, relative to this directory.
const (
	unitFile      = "systemd/mpaged.service"
	dropInExample = "systemd/mpaged.service.d/volume.conf.example"
	promConfig    = "prometheus/prometheus.yml"
	alertRules    = "prometheus/alerts.yml"
	alertTests    = "prometheus/alerts_test.yml"
	dashboardFile = "grafana/mpaged.json"
	readme        = "../README.md"
	installedBin  = "/usr/local/bin/mpaged"
)

// TestSystemdUnitVerifies runs systemd-analyze verify on the unit with the
// drop-in example installed beside it. verify wants ExecStart's binary to
// exist, so the copies point at the freshly built one. It reports unknown
// keys and bad values as warnings with exit code 0: any output fails.
func TestSystemdUnitVerifies(t *testing.T) {
	tool := testenv.RequireTool(t, "systemd-analyze")
	bin := testenv.MpagedBinary(t)
	dir := t.TempDir()
	copyWithBinary(t, unitFile, filepath.Join(dir, "mpaged.service"), bin)
	if err := os.Mkdir(filepath.Join(dir, "mpaged.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyWithBinary(t, dropInExample, filepath.Join(dir, "mpaged.service.d", "volume.conf"), bin)
	out, err := exec.Command(tool, "verify", filepath.Join(dir, "mpaged.service")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// copyWithBinary copies a unit file, pointing its ExecStart at bin.
func copyWithBinary(t *testing.T, from, to, bin string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(installedBin)) {
		t.Fatalf("%s: no ExecStart of %s", from, installedBin)
	}
	if err := os.WriteFile(to, bytes.ReplaceAll(b, []byte(installedBin), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSystemdFlagsExist: every flag the unit and the drop-in pass to
// mpaged serve is one serve has.
func TestSystemdFlagsExist(t *testing.T) {
	flags := serveFlags(t)
	for _, f := range []string{unitFile, dropInExample} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			cmd, ok := strings.CutPrefix(line, "ExecStart="+installedBin+" serve ")
			if !ok {
				continue
			}
			n++
			for _, word := range strings.Fields(cmd) {
				name, isFlag := strings.CutPrefix(word, "--")
				name, _, _ = strings.Cut(name, "=")
				if isFlag && !flags[name] {
					t.Errorf("%s: ExecStart passes --%s, which mpaged serve does not have", f, name)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no ExecStart running mpaged serve", f)
		}
	}
}

// serveFlags lists the flags `mpaged serve --help` prints.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(testenv.MpagedBinary(t), "serve", "--help").Output()
	if err != nil {
		t.Fatalf("mpaged serve --help: %v", err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-(\S+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["volume"] || !flags["cache"] {
		t.Fatalf("mpaged serve --help lists no --volume or --cache:\n%s", out)
	}
	return flags
}

// TestPrometheusFiles checks the scrape config, the rules and the rules'
// unit tests with promtool.
func TestPrometheusFiles(t *testing.T) {
	promtool := testenv.RequireTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", promConfig},
		{"check", "rules", alertRules},
		{"test", "rules", alertTests},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestAlertRunbooksExist: every alert names a runbook, and it is a section
// of README.md.
func TestAlertRunbooksExist(t *testing.T) {
	rules, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	anchors := readmeAnchors(t)
	alerts := regexp.MustCompile(`(?m)^\s+- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1)
	runbooks := regexp.MustCompile(`runbook_url: "https://github.com/mpaged/mpaged/blob/main/README.md#([^"]+)"`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) == 0 || len(alerts) != len(runbooks) {
		t.Fatalf("%d alerts, %d runbook_urls into README.md", len(alerts), len(runbooks))
	}
	for i, rb := range runbooks {
		if !anchors[rb[1]] {
			t.Errorf("alert %s: runbook anchor #%s is no heading of README.md", alerts[i][1], rb[1])
		}
		if want := strings.ToLower(alerts[i][1]); rb[1] != want {
			t.Errorf("alert %s: runbook anchor #%s, want #%s", alerts[i][1], rb[1], want)
		}
	}
}

// readmeAnchors are the anchors GitHub gives README.md's headings.
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			h = strings.TrimSpace(strings.TrimLeft(h, "#"))
			anchors[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
		}
	}
	return anchors
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Templating struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
			Definition string
		}
	}
	Panels []panel
}

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource *struct{ Type, UID string }
	Targets    []struct {
		RefID      string
		Expr       string
		Datasource *struct{ Type, UID string }
	}
	Panels []panel // a collapsed row's
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// TestDashboardShape: a Prometheus datasource variable that every query
// panel and target uses, unique panel ids, and a query in every target.
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	hasDS := slices.ContainsFunc(d.Templating.List, func(v struct {
		Name, Type string
		Query      json.RawMessage
		Definition string
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"`
	})
	if !hasDS {
		t.Fatal("no datasource variable of type prometheus")
	}
	ids := map[int]string{}
	targets := 0
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			targets++
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" || tg.Expr == "" {
				t.Errorf("panel %q target %s: datasource %+v, expr %q", p.Title, tg.RefID, tg.Datasource, tg.Expr)
			}
		}
	}
	if targets < 20 {
		t.Errorf("%d queries: the dashboard lost its panels", targets)
	}
}

// grafanaVars stands in for what Grafana substitutes before it sends a
// query to Prometheus: the instance variable set to All, and the
// intervals for a Prometheus scraping every second.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "10s",
	"$__interval", "2s",
	"$__range", "1m",
	"$instance", ".*",
)

// TestDashboardAndAlertsOnLiveDaemon runs every query of the dashboard
// through a real Prometheus scraping a real daemon that served some reads
// and writes: each must succeed and return series, and every metric it
// names must be on the daemon's /metrics. The same Prometheus loads
// alerts.yml: every rule must load and evaluate without an error, and the
// metrics the rules name must exist too.
func TestDashboardAndAlertsOnLiveDaemon(t *testing.T) {
	promBin := testenv.RequireTool(t, "prometheus")
	rules, err := filepath.Abs(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	d := testenv.StartDaemon(t, t.TempDir(), "--create-size", "64MiB", "--cache", "16MiB", "--log-level", "warn")
	target := strings.TrimPrefix(d.URL, "http://")
	prom := testenv.StartPrometheus(t, promBin, target, rules)
	generateLoad(t, d)
	exposed := exposedNames(t, d.URL)
	// Wait until Prometheus has the load's scrapes.
	testenv.WaitForSample(t, prom, `mpaged_ring_bytes_total{op="write"}`, func(v float64) bool { return v > 0 })
	time.Sleep(3 * time.Second) // a few more scrapes, so rates have two samples

	t.Run("instance variable", func(t *testing.T) {
		values := promLabelValues(t, prom, "instance", `mpaged_up{job="mpaged"}`)
		if !slices.Contains(values, target) {
			t.Errorf("label_values(mpaged_up{job=\"mpaged\"}, instance) = %v, want %s among them", values, target)
		}
	})
	for _, p := range loadDashboard(t).allPanels() {
		for _, tg := range p.Targets {
			t.Run(p.Title+"/"+tg.RefID, func(t *testing.T) {
				expr := grafanaVars.Replace(tg.Expr)
				if strings.Contains(expr, "$") {
					t.Fatalf("a variable the test does not substitute: %s", expr)
				}
				checkNamesExposed(t, expr, exposed)
				if n := promQueryRange(t, prom, expr); n == 0 {
					t.Errorf("no series: %s", expr)
				}
			})
		}
	}
	t.Run("alert rules", func(t *testing.T) {
		for _, q := range waitForRulesEvaluated(t, prom, countAlerts(t)) {
			checkNamesExposed(t, q, exposed)
		}
	})
}

// generateLoad writes, reads back, misses and syncs a few files.
func generateLoad(t *testing.T, d *testenv.Daemon) {
	t.Helper()
	body := bytes.Repeat([]byte("mpaged deploy check "), 100_000) // 2 MB
	d.Must(http.StatusCreated, http.MethodPost, "/v1/mkdir/load", nil)
	for i := range 4 {
		path := fmt.Sprintf("/v1/files/load/f%d", i)
		d.Must(http.StatusCreated, http.MethodPut, path, bytes.NewReader(body))
		if got := d.Must(http.StatusOK, http.MethodGet, path, nil); !bytes.Equal(got, body) {
			t.Fatalf("GET %s: %d bytes, not what was written", path, len(got))
		}
		d.Must(http.StatusNoContent, http.MethodPut, path+"?offset=4096", strings.NewReader("overwritten in place"))
	}
	d.Must(http.StatusNotFound, http.MethodGet, "/v1/files/load/missing", nil)
	d.Must(http.StatusOK, http.MethodPost, "/v1/sync", nil)
}

func countAlerts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	return len(regexp.MustCompile(`(?m)^\s+- alert: `).FindAll(b, -1))
}

// exposedNames are the sample names on the daemon's /metrics (a
// histogram's _bucket, _sum and _count each).
func exposedNames(t *testing.T, base string) map[string]bool {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil || !names["mpaged_up"] {
		t.Fatalf("/metrics: %v, %d names, no mpaged_up", err, len(names))
	}
	return names
}

// metricName matches the names a query can take from the daemon: its own
// and the Go and process collectors'.
var metricName = regexp.MustCompile(`\b(?:mpaged|process|go)_[a-z0-9_]+\b`)

// scrapeHealth is Prometheus's own series of a target's scrapes, the only
// other name a query may use.
var scrapeHealth = regexp.MustCompile(`\bup\{`)

func checkNamesExposed(t *testing.T, expr string, exposed map[string]bool) {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	if len(names) == 0 && !scrapeHealth.MatchString(expr) {
		t.Errorf("names no metric of the daemon: %s", expr)
	}
	for _, n := range names {
		if !exposed[n] {
			t.Errorf("%s is not on the daemon's /metrics (in %s)", n, expr)
		}
	}
}

// promAPI GETs a Prometheus API path and decodes data into out; a status
// other than success fails the test with Prometheus's error.
func promAPI(t *testing.T, prom, path string, q url.Values, out any) {
	t.Helper()
	resp, err := http.Get(prom + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Status, Error, ErrorType string
		Data                     json.RawMessage
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v: %s", path, err, b)
	}
	if r.Status != "success" {
		t.Fatalf("%s %v: %s: %s", path, q, r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatalf("%s: data: %v", path, err)
	}
}

// promQueryRange runs expr over the last minute, as a panel does, and
// returns the number of series.
func promQueryRange(t *testing.T, prom, expr string) int {
	t.Helper()
	now := time.Now()
	var data struct{ Result []json.RawMessage }
	promAPI(t, prom, "/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {fmt.Sprint(now.Add(-time.Minute).Unix())},
		"end":   {fmt.Sprint(now.Unix())},
		"step":  {"2"},
	}, &data)
	return len(data.Result)
}

func promLabelValues(t *testing.T, prom, label, match string) []string {
	t.Helper()
	var values []string
	promAPI(t, prom, "/api/v1/label/"+label+"/values", url.Values{"match[]": {match}}, &values)
	return values
}

// waitForRulesEvaluated waits until Prometheus has evaluated want alerting
// rules, every one healthy, and returns their queries.
func waitForRulesEvaluated(t *testing.T, prom string, want int) []string {
	t.Helper()
	type rule struct {
		Name, Query, Health, LastError, Type string
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var data struct{ Groups []struct{ Rules []rule } }
		promAPI(t, prom, "/api/v1/rules", url.Values{"type": {"alert"}}, &data)
		var queries, bad []string
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				queries = append(queries, r.Query)
				if r.Health != "ok" || r.LastError != "" {
					bad = append(bad, fmt.Sprintf("%s: health %q, error %q", r.Name, r.Health, r.LastError))
				}
			}
		}
		if len(queries) == want && len(bad) == 0 {
			return queries
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus loaded %d alerting rules, want %d; not healthy: %v", len(queries), want, bad)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
