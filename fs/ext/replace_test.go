package ext

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
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
	if _, existed, err := v.ReplaceFile("/f", bytes.NewReader(old), 0o600, false); err != nil || existed {
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
		_, existed, err := v.ReplaceFile("/f", tc.r, 0o644, false)
		if !errors.Is(err, tc.want) || !existed {
			t.Errorf("%s: existed %v, %v; want %v", tc.name, existed, err, tc.want)
		}
		if got := readAll(t, v, "/f"); !bytes.Equal(got, old) {
			t.Errorf("%s: the target changed (%d bytes)", tc.name, len(got))
		}
	}
	fi, existed, err := v.ReplaceFile("/f", strings.NewReader("new"), 0o644, true)
	if err != nil || !existed || fi.Size != 3 || fi.Mode.Perm() != 0o600 {
		t.Fatalf("replace: %+v existed %v %v (the permission bits must stay 0600)", fi, existed, err)
	}
	if _, _, err := v.ReplaceFile("/", strings.NewReader("x"), 0o644, false); !errors.Is(err, ErrIsDir) {
		t.Errorf("a directory as target: %v", err)
	}
	ents, err := v.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name, TempPrefix) {
			t.Errorf("temporary file left: %s", e.Name)
		}
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
