package drills

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"syscall"
	"testing"

	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

var (
	readOps  = faultring.Ops(uring.OpRead, uring.OpReadv)
	writeOps = faultring.Ops(uring.OpWrite, uring.OpWritev)
)

// TestFaultReadEIO: a read the device fails answers 500 with a JSON EIO
// error; nothing of it is cached as valid, so the same GET after the
// fault clears returns the file's bytes (whole and ranged).
func TestFaultReadEIO(t *testing.T) {
	rounds := pick(8, 64)
	r := newRand("fault/read-eio")
	tree := map[string]string{}
	for i := range rounds {
		tree[fmt.Sprintf("f%03d", i)] = string(randBytes(r, 1+r.IntN(200<<10)))
	}
	e := apitest.New(t, apitest.Options{Size: "64M", Tree: tree, Faults: true, FaultSeed: *seedFlag})
	row := Row{Drill: "fault/read-eio", Note: seedNote()}
	defer func() { summary.Add(row) }()
	for i := range rounds {
		name := fmt.Sprintf("f%03d", i)
		want := []byte(tree[name])
		rule := e.Faults.Add(faultring.Rule{Ops: readOps, Fault: faultring.Fault{Errno: syscall.EIO}})
		resp, b := e.Do(http.MethodGet, "/v1/files/"+name, nil)
		e.Faults.Remove(rule)
		row.Rounds++
		row.Faults += rule.Fired()
		e.Want(resp, b, http.StatusInternalServerError, "EIO")
		if got := e.Get("/v1/files/" + name); !bytes.Equal(got, want) {
			row.Lost++
			t.Errorf("%s after the fault cleared: %d bytes, want %d (the failed read was cached?)", name, len(got), len(want))
			continue
		}
		off := r.IntN(len(want))
		end := off + r.IntN(len(want)-off)
		resp, b = e.Do(http.MethodGet, "/v1/files/"+name, nil, "Range", fmt.Sprintf("bytes=%d-%d", off, end))
		e.Want(resp, b, http.StatusPartialContent, "")
		if !bytes.Equal(b, want[off:end+1]) {
			row.Lost++
			t.Errorf("%s bytes %d-%d wrong after the fault cleared", name, off, end)
			continue
		}
		row.Acknowledged++
		row.Verified++
	}
}

// TestFaultWriteback: while write-back fails (EIO, ENOSPC) fsync answers
// 500 or 507 every time, and the written bytes stay readable (dirty, not
// dropped); once the fault clears fsync answers 200 and the device holds
// them, as debugfs reads the image.
func TestFaultWriteback(t *testing.T) {
	for _, tc := range []struct {
		drill  string
		errno  syscall.Errno
		status int
		code   string
	}{
		{"fault/writeback-eio", syscall.EIO, http.StatusInternalServerError, "EIO"},
		{"fault/writeback-enospc", syscall.ENOSPC, http.StatusInsufficientStorage, "ENOSPC"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			const size = 256 << 10
			r := newRand(tc.drill)
			content := randBytes(r, size)
			e := apitest.New(t, apitest.Options{Tree: map[string]string{"f": string(content)}, Faults: true, FaultSeed: *seedFlag})
			row := Row{Drill: tc.drill, Note: seedNote()}
			defer func() { summary.Add(row) }()
			for range pick(6, 40) {
				row.Rounds++
				off, n := r.IntN(size), 1+r.IntN(64<<10)
				data := randBytes(r, n)
				resp, b := e.Do(http.MethodPut, fmt.Sprintf("/v1/files/f?offset=%d", off), bytes.NewReader(data))
				e.Want(resp, b, http.StatusNoContent, "")
				if end := off + n; end > len(content) {
					content = append(content, make([]byte, end-len(content))...)
				}
				copy(content[off:], data)
				rule := e.Faults.Add(faultring.Rule{Ops: writeOps, Fault: faultring.Fault{Errno: tc.errno}})
				for range 2 {
					resp, b = e.Do(http.MethodPost, "/v1/fsync/f", nil)
					e.Want(resp, b, tc.status, tc.code)
				}
				if got := e.Get("/v1/files/f"); !bytes.Equal(got, content) {
					t.Fatalf("the unwritten bytes were dropped while write-back failed")
				}
				e.Faults.Remove(rule)
				row.Faults += rule.Fired()
				resp, b = e.Do(http.MethodPost, "/v1/fsync/f", nil)
				e.Want(resp, b, http.StatusOK, "")
				row.Acknowledged++
				if got := debugfsCat(t, e.Img, "/f"); !bytes.Equal(got, content) {
					row.Lost++
					t.Errorf("after fsync 200 the device holds %d bytes, not the %d written", len(got), len(content))
					continue
				}
				row.Verified++
			}
		})
	}
}

// TestFaultEAGAINStorm: EAGAIN on half the reads and writes is retried
// below the engine: every PUT succeeds, reads back byte for byte, and is
// on the device after a sync.
func TestFaultEAGAINStorm(t *testing.T) {
	r := newRand("fault/eagain-storm")
	e := apitest.New(t, apitest.Options{Size: "64M", Faults: true, FaultSeed: *seedFlag, CacheBytes: 4 << 20})
	row := Row{Drill: "fault/eagain-storm"}
	defer func() { summary.Add(row) }()
	e.Faults.Add(faultring.Rule{Name: "EAGAIN storm", Ops: readOps | writeOps, Prob: 0.5, Fault: faultring.Fault{Transient: true}})
	files := map[string][]byte{}
	for i := range pick(12, 100) {
		row.Rounds++
		name := fmt.Sprintf("f%03d", i%20)
		data := randBytes(r, 1+r.IntN(1<<20))
		resp, b := e.Do(http.MethodPut, "/v1/files/"+name, bytes.NewReader(data))
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PUT %s under EAGAIN: %d %s", name, resp.StatusCode, b)
		}
		row.Acknowledged++
		files[name] = data
		if got := e.Get("/v1/files/" + name); !bytes.Equal(got, data) {
			row.Lost++
			t.Errorf("%s reads back wrong under EAGAIN", name)
		}
	}
	resp, b := e.Do(http.MethodPost, "/v1/sync", nil)
	e.Want(resp, b, http.StatusOK, "")
	e.Faults.Clear()
	row.Faults = e.Faults.FaultStats().Transients
	if row.Faults == 0 {
		t.Error("no EAGAIN was injected")
	}
	row.Verified, row.Lost = verifyOnDevice(t, e.Img, files, nil)
	row.Note = fmt.Sprintf("%s; the last versions of %d files checked by debugfs", seedNote(), len(files))
}

// TestFaultShortTransfers: a short completion from the ring (the backends
// resume real short transfers themselves; one that reaches the engine is
// the device ending early) is an I/O error, never bytes served as valid:
// each GET answers the right bytes or a JSON 500, each PUT 2xx or a JSON
// 500 (the old content kept). Once the fault clears every file reads back
// as its last acknowledged PUT (or the failed one's, if its rename got
// through), and the device holds the same after a sync.
func TestFaultShortTransfers(t *testing.T) {
	r := newRand("fault/short")
	e := apitest.New(t, apitest.Options{Size: "64M", Faults: true, FaultSeed: *seedFlag, CacheBytes: 4 << 20})
	row := Row{Drill: "fault/short"}
	defer func() { summary.Add(row) }()
	rules := []faultring.Rule{
		{Name: "short reads", Ops: readOps, Prob: 0.2, Fault: faultring.Fault{Short: -1}},
		{Name: "short writes", Ops: writeOps, Prob: 0.05, Fault: faultring.Fault{Short: -1}},
	}
	// maybe holds, per file, the bodies of the PUTs that failed since its
	// last acknowledged one: a failed PUT may still have replaced it.
	files, maybe := map[string][]byte{}, map[string][][]byte{}
	var refused int64
	for i := range pick(12, 100) {
		row.Rounds++
		name := fmt.Sprintf("f%03d", i%20)
		data := randBytes(r, 1+r.IntN(1<<20))
		for _, rule := range rules {
			e.Faults.Add(rule)
		}
		resp, b := e.Do(http.MethodPut, "/v1/files/"+name, bytes.NewReader(data))
		switch resp.StatusCode {
		case http.StatusCreated, http.StatusNoContent:
			row.Acknowledged++
			files[name] = data
			delete(maybe, name)
		default:
			e.Want(resp, b, http.StatusInternalServerError, "EIO")
			maybe[name] = append(maybe[name], data)
			refused++
		}
		resp, b, cut := getMaybeCut(e, "/v1/files/"+name)
		switch {
		case cut:
			refused++ // the status was out when a later read failed: the body is cut short
		case resp.StatusCode == http.StatusOK:
			if !oneOf(b, files[name], maybe[name]) {
				row.Lost++
				t.Errorf("%s: a GET under short reads answered 200 with wrong bytes (%d bytes; acknowledged %d)", name, len(b), len(files[name]))
			}
		case resp.StatusCode != http.StatusNotFound || files[name] != nil:
			e.Want(resp, b, http.StatusInternalServerError, "EIO")
			refused++
		}
		e.Faults.Clear()
	}
	st := e.Faults.FaultStats()
	row.Faults = st.Shorts
	if st.Shorts == 0 {
		t.Error("no short transfer was injected")
	}
	for name, want := range files {
		if got := e.Get("/v1/files/" + name); !oneOf(got, want, maybe[name]) {
			row.Lost++
			t.Errorf("%s after the faults cleared: %d bytes, not the last acknowledged %d", name, len(got), len(want))
		}
	}
	resp, b := e.Do(http.MethodPost, "/v1/sync", nil)
	e.Want(resp, b, http.StatusOK, "")
	row.Verified, row.Lost = verifyOnDevice(t, e.Img, files, maybe)
	row.Note = fmt.Sprintf("%s; %d requests refused (JSON EIO, or a body cut short)", seedNote(), refused)
}

// getMaybeCut is a GET whose body may be cut short (cut): a read that
// fails after the status went out can only end the body early, which the
// client sees as a body shorter than its Content-Length.
func getMaybeCut(e *apitest.Env, path string) (*http.Response, []byte, bool) {
	e.T.Helper()
	resp, err := e.TS.Client().Get(e.TS.URL + path)
	if err != nil {
		e.T.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if errors.Is(err, io.ErrUnexpectedEOF) && resp.StatusCode == http.StatusOK {
		return resp, b, true
	}
	if err != nil {
		e.T.Fatalf("GET %s: body: %v", path, err)
	}
	return resp, b, false
}

// oneOf: got is want or one of alt.
func oneOf(got, want []byte, alt [][]byte) bool {
	return bytes.Equal(got, want) || slices.ContainsFunc(alt, func(a []byte) bool { return bytes.Equal(got, a) })
}

// verifyOnDevice reads each file with debugfs: it must hold want's bytes,
// or one of alt's (a PUT that failed may still have replaced the file).
func verifyOnDevice(t *testing.T, img string, want map[string][]byte, alt map[string][][]byte) (verified, lost int64) {
	t.Helper()
	for name, data := range want {
		got := debugfsCat(t, img, "/"+name)
		if !oneOf(got, data, alt[name]) {
			lost++
			t.Errorf("%s on the device: %d bytes, want the %d acknowledged", name, len(got), len(data))
			continue
		}
		verified++
	}
	return verified, lost
}
