package ext

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestJournaledStaleTail: bytes past a file's end in its last block must
// read as zeroes once the file grows over them, whatever the device holds
// there. A crash can leave others: an extension not committed whose data
// was written already (ordered mode writes data first) is taken back by
// the replay, its bytes staying on the device past the restored size.
// Here: 100 bytes committed, 500 more written to the device but not
// committed, a cut, our replay; then the file grows to 3003 bytes by a
// write at 3000, or to 3000 by Truncate, and bytes [100, 3000) must be
// zeroes. Written before the fix: both failed with the 500 bytes showing
// at 100, the kill drill's "lost" bytes (a settled file, the right size,
// other bytes from a write's start to the end of its block).
func TestJournaledStaleTail(t *testing.T) {
	setCommitInterval(t, time.Hour) // the test commits by hand
	for _, bs := range []int{1024, 4096} {
		for _, grow := range []string{"write", "truncate"} {
			t.Run(fmt.Sprintf("%d/%s", bs, grow), func(t *testing.T) { staleTail(t, bs, grow) })
		}
	}
}

func staleTail(t *testing.T, bs int, grow string) {
	img := mkfs(t, "ext4", bs, "", "16M")
	v := mustOpenImage(t, img, openOpts{rw: true})
	f, err := v.Create("/f", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	head := bytes.Repeat([]byte{'a'}, 100)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{'b'}, 500), 100); err != nil {
		t.Fatal(err)
	}
	if err := f.n.m.WriteAndWait(0, -1); err != nil { // the data, not the commit
		t.Fatal(err)
	}
	cut := copyFile(t, img)
	f.Close()

	cv := mustOpenImage(t, cut, openOpts{rw: true})
	g, err := cv.OpenWrite("/f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Size() != 100 {
		t.Fatalf("size %d after the replay, want the committed 100", g.Size())
	}
	want := append(head, make([]byte, 2900)...)
	if grow == "write" {
		want = append(want, "end"...)
		_, err = g.WriteAt([]byte("end"), 3000)
	} else {
		err = g.Truncate(3000)
	}
	if err == nil {
		err = g.Sync()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cv.Close(); err != nil {
		t.Fatal(err)
	}
	// Read back from the device, as a restarted daemon would.
	rv := mustOpenImage(t, cut, openOpts{readOnly: true})
	if got := readAll(t, rv, "/f"); !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Errorf("%d bytes, first difference at %d: %q", len(got), i, got[i:min(i+8, len(got))])
	}
	fsckClean(t, cut)
}
