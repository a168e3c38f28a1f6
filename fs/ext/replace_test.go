package ext

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/testenv"
)

// failingReader yields n bytes of data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestReplaceFile: the target shows the old bytes until the whole new
// content is durable, and nothing of a failed replacement remains.
func TestReplaceFile(t *testing.T) {
	img := mkfs(t, "ext2", 1024, "", "8M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	old := randBytes(1, 5000)
	if _, existed, err := v.ReplaceFile("/f", bytes.NewReader(old), 0o600, nil); err != nil || existed {
		t.Fatalf("new file: existed %v, %v", existed, err)
	}
	for _, tc := range []struct {
		name string
		r    io.Reader
		want error
	}{
		{"reader cut short", &failingReader{data: randBytes(2, 600<<10), err: io.ErrUnexpectedEOF}, io.ErrUnexpectedEOF},
		{"device full", bytes.NewReader(make([]byte, 12<<20)), syscall.ENOSPC},
	} {
		_, existed, err := v.ReplaceFile("/f", tc.r, 0o644, nil)
		if !errors.Is(err, tc.want) || existed {
			t.Errorf("%s: existed %v (nothing was replaced), %v; want %v", tc.name, existed, err, tc.want)
		}
		if got := readAll(t, v, "/f"); !bytes.Equal(got, old) {
			t.Errorf("%s: the target changed (%d bytes)", tc.name, len(got))
		}
	}
	fi, existed, err := v.ReplaceFile("/f", strings.NewReader("new"), 0o644, nil)
	if err != nil || !existed || fi.Size != 3 || fi.Mode.Perm() != 0o600 {
		t.Fatalf("replace: %+v existed %v %v (the permission bits must stay 0600)", fi, existed, err)
	}
	if _, _, err := v.ReplaceFile("/", strings.NewReader("x"), 0o644, nil); !errors.Is(err, ErrIsDir) {
		t.Errorf("a directory as target: %v", err)
	}
	ents, err := v.ReadDir(StagingDir)
	if err != nil || len(ents) != 0 {
		t.Errorf("staged files left: %v %v", ents, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
}

func readAll(t *testing.T, v *testVolume, p string) []byte {
	t.Helper()
	f, err := v.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplaceCrashWindow: between ReplaceFile's link over the old file and
// the sync that makes it durable, background writeback may write the
// metadata before the directory. The replaced inode keeps its links
// meanwhile, so a crash there (the image as the metadata-first write
// leaves it) still shows the old content under the name after e2fsck -p,
// never nothing.
func TestReplaceCrashWindow(t *testing.T) {
	img := mkfs(t, "ext2", 1024, "", "8M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	old := randBytes(7, 3000)
	if _, _, err := v.ReplaceFile("/f", bytes.NewReader(old), 0o644, nil); err != nil {
		t.Fatal(err)
	}
	rep := &replacement{}
	if err := v.digGrave(rep, []string{"f"}); err != nil {
		t.Fatal(err)
	}
	tmp, err := v.stage(strings.NewReader("new content"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	existed, err := v.linkOver(rep, tmp, []string{"f"}, nil)
	if err != nil || !existed || len(rep.graves) != 1 {
		t.Fatalf("linkOver: %+v existed %v %v", rep, existed, err)
	}
	// The worst order: every metadata block reaches the device, the
	// directory block does not.
	if err := v.MetaMapping().WriteAndWait(0, -1); err != nil {
		t.Fatal(err)
	}
	if err := v.cfg.Device.Flush(); err != nil {
		t.Fatal(err)
	}
	crash := copyFile(t, img)
	if err := v.finishReplace(rep, true); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, "/f"); string(got) != "new content" {
		t.Errorf("/f after the replacement: %q", got)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img) // the old inode is freed: nothing unattached
	testenv.RequireTool(t, "e2fsck")
	out, ferr := testenv.Output("e2fsck", "-p", crash)
	var ee *exec.ExitError
	if ferr != nil && (!errors.As(ferr, &ee) || ee.ExitCode()&^3 != 0) {
		t.Fatalf("e2fsck -p on the crashed image: %v\n%s", ferr, out)
	}
	c := mustOpenImage(t, crash, openOpts{})
	if got := readAll(t, c, "/f"); !bytes.Equal(got, old) {
		t.Errorf("after the crash /f holds %d bytes, want the old %d", len(got), len(old))
	}
}
