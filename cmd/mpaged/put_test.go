package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// putCmd runs put with data on stdin.
func putCmd(data []byte, args ...string) (code int, stdout, stderr string) {
	old := stdin
	stdin = bytes.NewReader(data)
	defer func() { stdin = old }()
	return runCmd(append([]string{"put"}, args...)...)
}

func ext2Image(t *testing.T, size string) string {
	t.Helper()
	testenv.RequireTool(t, "mke2fs")
	img := filepath.Join(t.TempDir(), "vol.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", img, size)
	return img
}

func fsck(t *testing.T, img string) {
	t.Helper()
	testenv.RequireTool(t, "e2fsck")
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

func TestPut(t *testing.T) {
	img := ext2Image(t, "16M")
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 3<<20+123)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	for _, c := range []struct {
		path string
		data []byte
	}{
		{"/hello.txt", []byte("hello, world\n")},
		{"/empty", nil},
		{"/big.bin", big},
		{"/hello.txt", []byte("replaced\n")}, // replace: truncated first
	} {
		code, out, errs := putCmd(c.data, "--volume", img, "--ring", "sync", c.path)
		if code != 0 || out != "" {
			t.Fatalf("put %s: exit %d, %q, %s", c.path, code, out, errs)
		}
		code, out, errs = runCmd("cat", "--volume", img, c.path)
		if code != 0 || out != string(c.data) {
			t.Fatalf("cat %s after put: exit %d, %d bytes (want %d), %s", c.path, code, len(out), len(c.data), errs)
		}
	}
	fsck(t, img)
	out := filepath.Join(t.TempDir(), "out")
	testenv.Run(t, "debugfs", "-R", "dump /big.bin "+out, img)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, big) {
		t.Fatal("debugfs reads different bytes")
	}
	// The default ring and --stats.
	code, _, errs := putCmd(big[:200000], "--volume", img, "--stats", "/stats.bin")
	if code != 0 {
		t.Fatal(errs)
	}
	for _, want := range []string{"stats: write bios", "bytes read", "written"} {
		if !strings.Contains(errs, want) {
			t.Errorf("--stats output lacks %q:\n%s", want, errs)
		}
	}
	fsck(t, img)
}

func TestMkdirRm(t *testing.T) {
	img := ext2Image(t, "8M")
	for _, args := range [][]string{
		{"mkdir", "--volume", img, "/a", "/a/b"},
	} {
		if code, _, errs := runCmd(args...); code != 0 {
			t.Fatalf("%v: %s", args, errs)
		}
	}
	if code, _, errs := putCmd([]byte("x"), "--volume", img, "/a/b/f"); code != 0 {
		t.Fatal(errs)
	}
	code, out, errs := runCmd("ls", "--volume", img, "/a")
	if code != 0 || out != "d         1024 b\n" {
		t.Fatalf("ls /a: %d %q %s", code, out, errs)
	}
	code, _, errs = runCmd("rm", "--volume", img, "/a/b")
	if code != 1 || !strings.Contains(errs, "not empty") {
		t.Fatalf("rm of a non-empty directory: exit %d, %s", code, errs)
	}
	if code, _, errs := runCmd("rm", "--volume", img, "/a/b/f", "/a/b", "/a"); code != 0 {
		t.Fatal(errs)
	}
	code, out, _ = runCmd("ls", "--volume", img, "/")
	if code != 0 || out != "d        12288 lost+found\n" {
		t.Fatalf("ls / after rm: %q", out)
	}
	fsck(t, img)
}

// TestPutErrors: one clear line and a non-zero exit for each way put can
// fail; the volume stays consistent.
func TestPutErrors(t *testing.T) {
	img := ext2Image(t, "2M")
	testenv.RequireTool(t, "mke2fs")
	// fast_commit is a journal feature the writer does not write.
	fastCommit := filepath.Join(t.TempDir(), "ext4.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "fast_commit", fastCommit, "16M")
	for _, c := range []struct {
		args []string
		data []byte
		code int
		msg  string
	}{
		{[]string{"--volume", img, "/missing/file"}, []byte("x"), 1, "no such file or directory"},
		{[]string{"--volume", img, "/lost+found"}, []byte("x"), 1, "is a directory"},
		{[]string{"--volume", img, "/a/../b"}, []byte("x"), 1, "invalid path"},
		{[]string{"--volume", img, "/" + strings.Repeat("n", 256)}, []byte("x"), 1, "invalid path"},
		{[]string{"--volume", fastCommit, "/x"}, []byte("x"), 1, "fast_commit"},
		{[]string{"--volume", img, "/too-big"}, make([]byte, 3<<20), 1, "no space left on device"},
		{[]string{"--volume", img}, nil, 2, "one path"},
		{[]string{"/x"}, nil, 2, "--volume is required"},
	} {
		code, out, errs := putCmd(c.data, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("put %v: exit %d, stderr %q; want exit %d and %q", c.args, code, errs, c.code, c.msg)
		}
		if lines := strings.Count(strings.TrimSpace(errs), "\n") + 1; code == 1 && lines != 1 {
			t.Errorf("put %v: %d lines on stderr:\n%s", c.args, lines, errs)
		}
		if out != "" {
			t.Errorf("put %v: stdout %q", c.args, out)
		}
	}
	fsck(t, img)
	fsck(t, fastCommit)
}

// TestPutJournaled: put, mkdir and rm write a plain mke2fs -t ext4 volume
// (with its journal) through the journal; it stays consistent (e2fsck -fn)
// and cat reads back what was put.
func TestPutJournaled(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	img := filepath.Join(t.TempDir(), "ext4.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", img, "16M")
	data := bytes.Repeat([]byte("journaled "), 5000)
	if code, _, errs := runCmd("mkdir", "--volume", img, "/d"); code != 0 {
		t.Fatal(errs)
	}
	if code, _, errs := putCmd(data, "--volume", img, "/d/f"); code != 0 {
		t.Fatalf("put: exit %d: %s", code, errs)
	}
	if code, _, errs := putCmd([]byte("gone"), "--volume", img, "/d/g"); code != 0 {
		t.Fatalf("put: exit %d: %s", code, errs)
	}
	if code, _, errs := runCmd("rm", "--volume", img, "/d/g"); code != 0 {
		t.Fatal(errs)
	}
	fsck(t, img)
	if code, out, errs := runCmd("cat", "--volume", img, "/d/f"); code != 0 || out != string(data) {
		t.Fatalf("cat: exit %d, %d bytes (%s)", code, len(out), errs)
	}
}
