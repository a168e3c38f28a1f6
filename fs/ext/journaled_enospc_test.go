package ext

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// fillVolume writes /path in chunks until the volume runs out of space,
// syncs it, and returns how many bytes it holds.
func fillVolume(t *testing.T, v *testVolume, path string) int64 {
	t.Helper()
	f, err := v.Create(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := randBytes(3, 64<<10)
	var size int64
	for {
		k, err := f.WriteAt(chunk, size)
		size += int64(k)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return size
}

// TestJournaledNoSpaceFreedByRunningTxn: on a journaled volume filled to
// its last blocks, a file deleted frees its blocks in the running
// transaction, and they stay busy until it commits. A write as big right
// after must not answer ENOSPC: the allocation that runs out commits the
// transaction and tries again (commitForSpace). Written before the fix;
// it failed with ENOSPC. A volume truly full still answers ErrNoSpace,
// without a commit for space. e2fsck -fn finds the volume clean after
// Close, and the new file holds its bytes.
func TestJournaledNoSpaceFreedByRunningTxn(t *testing.T) {
	setCommitInterval(t, time.Hour) // no commit but the ones under test
	for _, c := range []struct {
		name  string
		write func(v *testVolume, path string, b []byte) error
	}{
		{"WriteAt", func(v *testVolume, path string, b []byte) error {
			f, err := v.Create(path, 0o644)
			if err != nil {
				return err
			}
			if _, err := f.WriteAt(b, 0); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}},
		{"ReplaceFile", func(v *testVolume, path string, b []byte) error {
			_, _, err := v.ReplaceFile(path, bytes.NewReader(b), 0o644, nil)
			return err
		}},
	} {
		// ext2: no journal; its quarantine (blocks freed since the last
		// sync) gives its blocks up when nothing else is free, so the
		// same write succeeds without a commit.
		for _, typ := range []string{"ext4", "ext3", "ext2"} {
			journaled := typ != "ext2"
			t.Run(typ+"/"+c.name, func(t *testing.T) {
				img := mkfs(t, typ, 1024, "", "8M")
				v := mustOpenImage(t, img, openOpts{rw: true})
				size := fillVolume(t, v, "/big")
				if n := v.spaceCommits.Load(); n != 0 {
					t.Fatalf("filling the volume forced %d commits for space (nothing was freed)", n)
				}
				if err := v.Unlink("/big"); err != nil {
					t.Fatal(err)
				}
				// A little under the deleted file's size: the new one's
				// directory entry and tree blocks need not land where
				// the old one's were.
				want := randBytes(5, int(size-32<<10))
				if err := c.write(v, "/new", want); err != nil {
					t.Fatalf("writing %d bytes after deleting %d: %v", len(want), size, err)
				}
				if n := v.spaceCommits.Load(); journaled != (n > 0) {
					t.Errorf("%d commits for space on a %s volume", n, typ)
				}
				if got := readAll(t, v, "/new"); !bytes.Equal(got, want) {
					t.Errorf("/new holds %d bytes unlike the %d written", len(got), len(want))
				}
				forced := v.spaceCommits.Load()
				fillVolume(t, v, "/rest")
				if n := v.spaceCommits.Load(); n != forced {
					t.Errorf("a truly full volume forced %d commits for space", n-forced)
				}
				if err := v.Close(); err != nil {
					t.Fatal(err)
				}
				fsckClean(t, img)
			})
		}
	}
}
