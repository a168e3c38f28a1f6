package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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
