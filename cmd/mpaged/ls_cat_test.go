package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// testImage builds a small ext4 image with mke2fs -d.
func testImage(t *testing.T, typ string, extra ...string) (img string, files map[string][]byte) {
	t.Helper()
	testenv.RequireTool(t, "mke2fs")
	src := t.TempDir()
	files = map[string][]byte{
		"hello.txt":       []byte("hello, world\n"),
		"dir/big.bin":     bytes.Repeat([]byte("0123456789abcdef"), 40000),
		"dir/empty":       {},
		"dir/sub/deep":    []byte("deep\n"),
		"zz last":         []byte("spaces are fine\n"),
		"dir/sparse.bin":  nil, // filled below
		"dir/Upper-first": []byte("sorted bytewise\n"),
	}
	for name, b := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sparse := make([]byte, 3<<20)
	copy(sparse[2<<20:], "data after a hole")
	f, _ := os.OpenFile(filepath.Join(src, "dir/sparse.bin"), os.O_RDWR, 0)
	f.WriteAt([]byte("data after a hole"), 2<<20)
	f.Truncate(3 << 20)
	f.Close()
	files["dir/sparse.bin"] = sparse
	if err := os.Symlink("dir/sub/deep", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(t.TempDir(), "vol.img")
	args := append([]string{"-q", "-F", "-t", typ, "-b", "1024"}, extra...)
	testenv.Run(t, "mke2fs", append(args, "-d", src, img, "16M")...)
	return img, files
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestLs(t *testing.T) {
	for _, typ := range []string{"ext2", "ext4"} {
		t.Run(typ, func(t *testing.T) {
			img, _ := testImage(t, typ)
			code, out, errs := runCmd("ls", "--volume", img, "--ring", "sync", "/")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			want := "" +
				"d         1024 dir\n" +
				"-           13 hello.txt\n" +
				"l           12 link\n" +
				"d        12288 lost+found\n" +
				"-           16 zz last\n"
			if out != want {
				t.Fatalf("ls /:\n%s\nwant:\n%s", out, want)
			}
			code, out, errs = runCmd("ls", "--volume", img, "--ring", "sync", "/dir/")
			want = "" +
				"-           16 Upper-first\n" +
				"-       640000 big.bin\n" +
				"-            0 empty\n" +
				"-      3145728 sparse.bin\n" +
				"d         1024 sub\n"
			if code != 0 || out != want {
				t.Fatalf("ls /dir: exit %d, %s\n%s\nwant:\n%s", code, errs, out, want)
			}
			// Flags after the path; a file lists itself; a link is listed
			// as a link.
			code, out, errs = runCmd("ls", "/link", "--volume", img)
			if code != 0 || out != "l           12 link\n" {
				t.Fatalf("ls /link: exit %d, %q, %s", code, out, errs)
			}
		})
	}
}

func TestCat(t *testing.T) {
	img, files := testImage(t, "ext4")
	for _, name := range []string{"hello.txt", "dir/big.bin", "dir/empty", "dir/sparse.bin", "zz last"} {
		code, out, errs := runCmd("cat", "--volume", img, "/"+name)
		if code != 0 || out != string(files[name]) {
			t.Fatalf("cat /%s: exit %d, %d bytes (want %d), %s", name, code, len(out), len(files[name]), errs)
		}
	}
	code, out, _ := runCmd("cat", "--volume", img, "/link", "/hello.txt")
	if code != 0 || out != "deep\nhello, world\n" {
		t.Fatalf("cat two files: %d %q", code, out)
	}
	// Like coreutils cat: the files that can be printed are, each one
	// that cannot is named on stderr, and the exit status is 1.
	code, out, errs := runCmd("cat", "--volume", img, "/hello.txt", "/nope", "/dir", "/link")
	if code != 1 || out != "hello, world\ndeep\n" || !strings.Contains(errs, "/nope") || !strings.Contains(errs, "/dir") ||
		strings.Count(errs, "\n") != 2 {
		t.Fatalf("cat with two bad files among good ones: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, _, errs = runCmd("cat", "--volume", img, "--stats", "/dir/big.bin")
	if code != 0 {
		t.Fatal(errs)
	}
	for _, want := range []string{"stats: read  bios", "pages per bio", "confused pages", "SQEs", "enters", "bytes read"} {
		if !strings.Contains(errs, want) {
			t.Errorf("--stats output lacks %q:\n%s", want, errs)
		}
	}
}

// TestBadInput: bad paths and bad volumes give one clear line on stderr
// and a non-zero exit; usage errors exit 2.
func TestBadInput(t *testing.T) {
	img, _ := testImage(t, "ext4")
	zero := filepath.Join(t.TempDir(), "zero.img")
	os.WriteFile(zero, make([]byte, 1<<20), 0o644)
	corrupt := filepath.Join(t.TempDir(), "corrupt.img")
	b, _ := os.ReadFile(img)
	b[1024+0x78] ^= 0xFF // inside the checksummed superblock
	os.WriteFile(corrupt, b, 0o644)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"cat", "--volume", img, "/nope"}, 1, "no such file or directory"},
		{[]string{"cat", "--volume", img, "/dir"}, 1, "is a directory"},
		{[]string{"cat", "--volume", img, "/hello.txt/x"}, 1, "not a directory"},
		{[]string{"cat", "--volume", img, "/a/../hello.txt"}, 1, "invalid path"},
		{[]string{"ls", "--volume", img, "/nope"}, 1, "no such file or directory"},
		{[]string{"ls", "--volume", img, "relative"}, 1, "not absolute"},
		{[]string{"ls", "--volume", zero, "/"}, 1, "bad magic"},
		{[]string{"cat", "--volume", corrupt, "/hello.txt"}, 1, "superblock: checksum"},
		{[]string{"ls", "--volume", filepath.Join(t.TempDir(), "missing.img"), "/"}, 1, "no such file"},
		{[]string{"ls", "--volume", t.TempDir(), "/"}, 1, "is a directory"},
		{[]string{"ls", "/"}, 2, "--volume is required"},
		{[]string{"cat", "--volume", img}, 2, "path"},
		{[]string{"ls", "--volume", img, "/a", "/b"}, 2, "one path"},
		{[]string{"ls", "--volume", img, "--ring", "bogus", "/"}, 2, "bogus"}, // a bad flag value is a usage error
	} {
		code, out, errs := runCmd(c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, errs, c.code, c.msg)
		}
		if lines := strings.Count(strings.TrimSpace(errs), "\n") + 1; code == 1 && lines != 1 {
			t.Errorf("%v: %d lines on stderr:\n%s", c.args, lines, errs)
		}
		if out != "" {
			t.Errorf("%v: stdout %q", c.args, out)
		}
	}
}
