package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// --log-level decides whether requests are logged (warn drops the one
// line per request, as nginx's access_log off does), and --cpuprofile
// writes a profile go tool pprof reads when the daemon shuts down.
func TestServeLogLevelAndCPUProfile(t *testing.T) {
	img, files := testImage(t, "ext4")
	for _, tc := range []struct {
		level        string
		wantRequests bool
	}{
		{"info", true},
		{"warn", false},
	} {
		t.Run(tc.level, func(t *testing.T) {
			dir := t.TempDir()
			profile := filepath.Join(dir, "cpu.pprof")
			d := testenv.StartDaemon(t, dir, "--volume", img, "--read-only", "--log-level", tc.level, "--cpuprofile", profile)
			for range 20 {
				if got := d.Must(200, "GET", "/v1/files/dir/big.bin", nil); !bytes.Equal(got, files["dir/big.bin"]) {
					t.Fatal("GET returned other bytes")
				}
			}
			if _, err := os.Stat(profile); err != nil {
				t.Fatalf("the profile must exist from the start: %v", err)
			}
			if code := d.Stop(syscall.SIGTERM); code != 0 {
				t.Fatalf("exit %d\n%s", code, d.Stderr.String())
			}
			if logged := strings.Contains(d.Stderr.String(), "msg=request"); logged != tc.wantRequests {
				t.Errorf("--log-level %s: request lines logged: %v\n%s", tc.level, logged, d.Stderr.String())
			}
			// A CPU profile is a gzipped protocol buffer with a sample
			// type section naming "cpu".
			f, err := os.Open(profile)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			zr, err := gzip.NewReader(f)
			if err != nil {
				t.Fatalf("profile is not gzip: %v", err)
			}
			raw, err := io.ReadAll(zr)
			if err != nil || !bytes.Contains(raw, []byte("cpu")) || !bytes.Contains(raw, []byte("nanoseconds")) {
				t.Fatalf("profile: %v, %d bytes without the cpu sample type", err, len(raw))
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"serve", "--log-level", "loud"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--log-level") {
		t.Errorf("--log-level loud: exit %d: %s", code, stderr.String())
	}
}
