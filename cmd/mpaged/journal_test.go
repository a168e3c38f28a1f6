package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// TestServeReplaysJournal: `mpaged serve` on an ext4 image whose journal
// holds a committed transaction (written by debugfs's journal writer over
// a file's first data block, needs_recovery set) replays it before
// serving, says so in its log, and serves the file as the journal left it.
func TestServeReplaysJournal(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "debugfs")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	old := bytes.Repeat([]byte("old "), 2048) // two 4 KiB blocks
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hello"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "journaled.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, img, "32M")
	out := testenv.Run(t, "debugfs", "-R", "blocks /hello", img)
	fields := strings.Fields(out[strings.LastIndex(out, ")")+1:])
	if len(fields) != 2 {
		t.Fatalf("debugfs blocks /hello: %q", out)
	}
	newBlock := bytes.Repeat([]byte("new!"), 1024)
	data := filepath.Join(dir, "new")
	if err := os.WriteFile(data, newBlock, 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := filepath.Join(dir, "cmds")
	if err := os.WriteFile(cmds, []byte("jo\njw -b "+fields[0]+" "+data+"\njc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "debugfs", "-w", "-f", cmds, img)

	d := testenv.StartDaemon(t, dir, "--volume", img, "--cache", "16MiB")
	want := append(append([]byte(nil), newBlock...), old[4096:]...)
	if got := d.Must(200, "GET", "/v1/files/hello", nil); !bytes.Equal(got, want) {
		t.Fatalf("GET /hello: %d bytes, first 8 %q; want the journaled first block", len(got), got[:min(8, len(got))])
	}
	logs := d.Stdout.String() + d.Stderr.String()
	if !strings.Contains(logs, "journal replayed: 1 transactions") {
		t.Fatalf("no replay line in the daemon's log:\n%s", logs)
	}
}

// TestServeJournaled: `mpaged serve` writes a plain `mke2fs -t ext4`
// volume (with its journal) through the journal. After an fsync the image
// says needs_recovery and its log holds well-formed transactions (debugfs
// logdump of a copy); after SIGKILL a restart replays the log and serves
// every synced byte; after SIGTERM the volume is clean with an empty log,
// e2fsck -fn finds nothing, and the kernel's driver reads the same bytes.
func TestServeJournaled(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	testenv.RequireTool(t, "debugfs")
	testenv.RequireTool(t, "dumpe2fs")
	dir := t.TempDir()
	img := filepath.Join(dir, "journaled.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", img, "64M")
	files := map[string][]byte{}
	put := func(d *testenv.Daemon, name string, n int, query string) {
		b := make([]byte, n)
		rand.NewChaCha8([32]byte{byte(len(files))}).Read(b)
		d.Must(201, "PUT", "/v1/files/"+name+query, bytes.NewReader(b))
		files[name] = b
	}
	d := testenv.StartDaemon(t, dir, "--volume", img, "--cache", "16MiB")
	d.Must(201, "POST", "/v1/mkdir/a/b?parents=1", nil)
	for i := range 20 {
		put(d, fmt.Sprintf("a/b/f%d", i), 1000*i+1, "")
	}
	put(d, "a/big", 5<<20+7, "")
	d.Must(201, "PUT", "/v1/files/a/gone", strings.NewReader("temporary"))
	d.Must(204, "DELETE", "/v1/files/a/gone", nil)
	d.Must(200, "POST", "/v1/sync", nil)
	put(d, "a/after-sync", 70000, "")
	d.Must(200, "POST", "/v1/fsync/a/after-sync", nil)

	mid := filepath.Join(dir, "mid.img")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mid, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if hdr := testenv.Run(t, "dumpe2fs", "-h", mid); !strings.Contains(hdr, "needs_recovery") {
		t.Fatalf("after an fsync the volume does not say needs_recovery:\n%s", hdr)
	}
	logdump := testenv.Run(t, "debugfs", "-R", "logdump", mid)
	if !strings.Contains(logdump, "commit block") || strings.Contains(strings.ToLower(logdump), "bad") {
		t.Fatalf("logdump of the live log:\n%s", logdump)
	}

	put(d, "a/synced-put", 12345, "?sync=1")
	d.Stop(syscall.SIGKILL)
	d = testenv.StartDaemon(t, dir, "--volume", img, "--cache", "16MiB")
	if logs := d.Stdout.String() + d.Stderr.String(); !strings.Contains(logs, "journal replayed") {
		t.Fatalf("no replay after SIGKILL:\n%s", logs)
	}
	for name, want := range files {
		if got := d.Must(200, "GET", "/v1/files/"+name, nil); !bytes.Equal(got, want) {
			t.Fatalf("after SIGKILL and replay: %s: %d bytes, want %d", name, len(got), len(want))
		}
	}
	put(d, "a/last", 3000, "")
	if code := d.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.Stderr.String())
	}
	if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck -fn after shutdown: %v\n%s", err, out)
	}
	hdr := testenv.Run(t, "dumpe2fs", "-h", img)
	if strings.Contains(hdr, "needs_recovery") || !strings.Contains(hdr, "Journal start:            0") {
		t.Fatalf("after SIGTERM: needs_recovery set or the log not empty:\n%s", hdr)
	}
	if os.Geteuid() != 0 {
		return
	}
	testenv.RequireTool(t, "mount")
	dev := testenv.AttachLoop(t, img)
	mnt := t.TempDir()
	testenv.Run(t, "mount", "-o", "ro", "-t", "ext4", dev, mnt)
	t.Cleanup(func() { testenv.Unmount(mnt) })
	for name, want := range files {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the kernel reads %s: %d bytes (%v), want %d", name, len(got), err, len(want))
		}
	}
}

// TestLsCatShowRecovered: after a daemon writing a journaled volume is
// killed (SIGKILL) with a synced file in the log only, `mpaged ls` and
// `mpaged cat` (read-only), and `mpaged serve --read-only`, show the file
// as replay would leave it, say
// in one line that the journal was shown and not replayed, and leave the
// image byte for byte as it was (still needing recovery).
func TestLsCatShowRecovered(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "dumpe2fs")
	dir := t.TempDir()
	img := filepath.Join(dir, "journaled.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", img, "64M")
	want := make([]byte, 70001)
	rand.NewChaCha8([32]byte{7}).Read(want)
	d := testenv.StartDaemon(t, dir, "--volume", img, "--cache", "16MiB")
	d.Must(201, "POST", "/v1/mkdir/in-log", nil)
	d.Must(201, "PUT", "/v1/files/in-log/synced?sync=1", bytes.NewReader(want))
	d.Stop(syscall.SIGKILL)
	if hdr := testenv.Run(t, "dumpe2fs", "-h", img); !strings.Contains(hdr, "needs_recovery") {
		t.Fatalf("after SIGKILL the volume does not need recovery:\n%s", hdr)
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("ls", "--volume", img, "--ring", "sync", "/in-log")
	if code != 0 || out != "-        70001 synced\n" {
		t.Fatalf("ls /in-log: exit %d, %q, %s", code, out, errs)
	}
	if !strings.Contains(errs, "transactions shown from the journal (read-only, device not written)") {
		t.Errorf("ls did not say the journal was shown:\n%s", errs)
	}
	code, out, errs = runCmd("cat", "--volume", img, "/in-log/synced")
	if code != 0 || out != string(want) {
		t.Fatalf("cat /in-log/synced: exit %d, %d bytes (want %d), %s", code, len(out), len(want), errs)
	}
	ro := testenv.StartDaemon(t, dir, "--volume", img, "--read-only", "--cache", "16MiB")
	if got := ro.Must(200, "GET", "/v1/files/in-log/synced", nil); !bytes.Equal(got, want) {
		t.Fatalf("serve --read-only: GET: %d bytes, want %d", len(got), len(want))
	}
	if code := ro.Stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve --read-only: SIGTERM: exit %d\n%s", code, ro.Stderr.String())
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("ls, cat or serve --read-only changed the image")
	}
}
