package drills

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/mpaged/mpaged/internal/testenv"
)

// seedFlag seeds every randomized drill: a failing case is reproduced by
// running that drill again with the seed its failure printed.
var seedFlag = flag.Uint64("drills.seed", 1, "seed of the randomized drills (faults, load, corrupt volumes)")

// newRand is a drill's generator: the run's seed mixed with the drill's
// name, so drills do not share a sequence.
func newRand(drill string) *rand.Rand {
	var h uint64 = 14695981039346656037
	for i := range len(drill) {
		h = (h ^ uint64(drill[i])) * 1099511628211
	}
	return rand.New(rand.NewPCG(*seedFlag, h))
}

// randBytes is n random bytes from r.
func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// debugfsCat reads a file of an ext image with debugfs, not through
// mpaged: what is on the device, as another reader sees it.
func debugfsCat(t testing.TB, img, path string) []byte {
	t.Helper()
	bin := testenv.RequireTool(t, "debugfs")
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "-R", "cat "+path, img)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs cat %s %s: %v\n%s", img, path, err, errb.String())
	}
	if strings.Contains(errb.String(), "not found") {
		t.Fatalf("debugfs cat %s %s: %s", img, path, errb.String())
	}
	return out.Bytes()
}

// scrape reads a /metrics page.
func scrapeMetrics(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mf
}

// metric finds the sample of name whose labels include want (name=value
// pairs); ok is false when there is none.
func findMetric(mf map[string]*dto.MetricFamily, name string, want ...string) (*dto.Metric, bool) {
	fam := mf[name]
	if fam == nil {
		return nil, false
	}
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				match = false
			}
		}
		if match {
			return m, true
		}
	}
	return nil, false
}

// scalarValue is a counter's or gauge's value, or fails t.
func scalarValue(t testing.TB, mf map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m, ok := findMetric(mf, name, labels...)
	if !ok {
		t.Fatalf("no metric %s%v", name, labels)
	}
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// seedNote says how to run a drill again with this run's seed.
func seedNote() string { return fmt.Sprintf("seed %d", *seedFlag) }
