package api_test

import (
	"bytes"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/testenv"
)

// TestPutAfterDeleteOnFullJournaledVolume: on a journaled volume filled to
// its last blocks, a DELETE frees a big file's blocks in the running
// transaction (busy until it commits); a PUT as big right after answers
// 201, not 507: the allocation that runs out commits and tries again. A
// PUT that cannot fit still answers 507. Written before the fix (fs/ext
// commitForSpace); it answered 507. The image passes e2fsck -fn after.
func TestPutAfterDeleteOnFullJournaledVolume(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	img := filepath.Join(t.TempDir(), "journaled.img")
	testenv.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", img, "8M")
	t.Cleanup(func() { // runs after the volume is closed (cleanups run last first)
		if out, err := testenv.Output("e2fsck", "-fn", img); err != nil {
			t.Errorf("e2fsck -fn: %v\n%s", err, out)
		}
	})
	e := apitest.New(t, apitest.Options{Image: img})
	// A first PUT leaves the staging directory: the big PUT's data, not
	// its staging Mkdir, is what finds the space busy.
	resp, b := e.Do(http.MethodPut, "/v1/files/small", bytes.NewReader([]byte("small")))
	e.Want(resp, b, http.StatusCreated, "")
	size := fillWith(t, e.Vol, "/big")
	resp, b = e.Do(http.MethodDelete, "/v1/files/big", nil)
	e.Want(resp, b, http.StatusNoContent, "")
	// A little under the deleted file's size: the new file's tree blocks
	// need not land where the old ones were.
	body := bytes.Repeat([]byte("0123456789abcdef"), int(size-64<<10)/16)
	resp, b = e.Do(http.MethodPut, "/v1/files/new", bytes.NewReader(body))
	e.Want(resp, b, http.StatusCreated, "")
	if got := e.Get("/v1/files/new"); !bytes.Equal(got, body) {
		t.Errorf("GET after the PUT: %d bytes unlike the %d put", len(got), len(body))
	}
	resp, b = e.Do(http.MethodPut, "/v1/files/more", bytes.NewReader(body[:256<<10]))
	e.Want(resp, b, http.StatusInsufficientStorage, "ENOSPC")
}

// fillWith writes path on v in chunks until the volume is full, syncs it
// and returns its size.
func fillWith(t *testing.T, v *ext.Volume, path string) int64 {
	t.Helper()
	f, err := v.Create(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xa5}, 64<<10)
	var size int64
	for {
		k, err := f.WriteAt(chunk, size)
		size += int64(k)
		if errors.Is(err, ext.ErrNoSpace) {
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
