package drills

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/testenv"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/crashring"
)

var (
	crashSeed  = flag.Uint64("drills.crash.seed", 0, "the crash drill's seed (0: from the clock)")
	crashTrace = flag.Bool("drills.crash.trace", false, "log every operation of the crash drill")
	crashKeep  = flag.String("drills.crash.keep", "", "also write every cut image, before e2fsck, to this directory")
)

// crashSectorSize is the crash device's atomic unit: 512 bytes, the most
// tearing a device does (a 4 KiB-sector device tears less).
const crashSectorSize = 512

// crashFilesystems are the volumes the drill cuts: ext4 without a journal
// (extents, metadata_csum, 4 KiB blocks), ext2 with 1 KiB blocks (block
// pointers, and blocks smaller than a page) and ext4 with its journal. Each has a backup
// superblock where e2fsck looks for one (block 32768, 8193): a torn
// primary superblock fails its checksum, and e2fsck -y repairs from the
// backup; a volume of one group (ext4 under 128 MiB) has none.
//
// journaled: e2fsck -fy of a cut replays the journal, and may then fix
// the superblock's free counts (written at syncs only, as the kernel's)
// and nothing else: a block leaked, or in use and marked free, fails the
// cut (the journal-less volumes may need any repair).
var crashFilesystems = []struct {
	name      string
	mkfs      []string
	size      string
	journaled bool
}{
	{"ext4", []string{"-t", "ext4", "-O", "^has_journal", "-b", "4096"}, "160M", false},
	{"ext2", []string{"-t", "ext2", "-b", "1024"}, "32M", false},
	// A plain mke2fs -t ext4 volume, written through its journal.
	{"ext4-journal", []string{"-t", "ext4", "-b", "4096"}, "160M", true},
}

// crashFilesystemNames joins the drill's volume names with "+".
func crashFilesystemNames() string {
	names := make([]string, len(crashFilesystems))
	for i, f := range crashFilesystems {
		names[i] = f.name
	}
	return strings.Join(names, "+")
}

// TestCrashDrill runs a seeded random workload against an in-process
// daemon (engine with a crash ring, ext volume, the HTTP API) and, at
// random moments between and during requests, cuts the power: each cut
// image is repaired with e2fsck -fy (exit 0 or 1; a second e2fsck -fn must
// then find nothing), opened with fs/ext and checked against the oracle.
//
// The oracle: every path starts absent on a fresh, durable image. The
// daemon acknowledges a file durable when a PUT without ?offset answers
// 201/204 (the new content), when a PUT ?offset&sync=1 or POST
// /v1/fsync/{file} answers (the file's content at that moment, and the
// directories on its path), and POST /v1/sync acknowledges every path as it
// stands. Every change after the last acknowledgement (a PUT, an in-place
// write, DELETE, a rename through ext.Volume.Rename, which the API has no
// route for, a mkdir) adds a state to the path's history; an in-place
// write that is not yet synced adds a loose state (present, any bytes: it
// may land in part); a rename adds to the old name, besides absent, a
// loose state (until the rename is durable the old name may still name
// the file, which may change under its new name meanwhile). A cut must
// show each path
//   - settled (no change since its acknowledgement): exactly the
//     acknowledged state, bytes and all, or absent when that was absent;
//   - changed since: the acknowledged state or one of the later ones.
//
// A directory acknowledged present must be a directory. A change is put
// in the history before its request is sent, so a cut during the request
// may show it; the history is copied just before the cut starts, so an
// acknowledgement that arrives meanwhile only makes the check looser.
//
// The seed (printed, and -drills.crash.seed=N) replays the workload and
// each cut's choices; the moment of a cut during a request, and so what is
// still pending in it, depends on timing.
func TestCrashDrill(t *testing.T) {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "e2fsck")
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	cuts := pick(20, 200)
	var total crashTally
	defer func() {
		summary.Add(Row{Drill: "crash", Rounds: total.cuts, Faults: total.cuts, Acknowledged: total.acks,
			Verified: total.verified, Lost: total.lost, Hangs: total.hangs,
			Note: fmt.Sprintf("%s, %d ops, %d cuts repaired by e2fsck (a journal replayed counts), %d refused by e2fsck -p, seed %d",
				crashFilesystemNames(), total.ops, total.repaired, total.preenRefused, seed)})
	}()
	for i, fsys := range crashFilesystems {
		t.Run(fsys.name, func(t *testing.T) {
			fsSeed := seed + uint64(i)
			t.Logf("seed %d (replay: go test -run 'CrashDrill/%s' ./drills/ -args -drills.crash.seed=%d)", fsSeed, fsys.name, seed)
			w := newCrashWorkload(t, fsys.mkfs, fsys.size, fsSeed)
			w.journaled = fsys.journaled
			defer func() { total.add(w.tally) }()
			w.run(cuts)
			t.Logf("%s: %d ops, %d acknowledgements, %d cuts (%d repaired by e2fsck, %d refused by e2fsck -p), %d files verified, %d lost",
				fsys.name, w.tally.ops, w.tally.acks, w.tally.cuts, w.tally.repaired, w.tally.preenRefused, w.tally.verified, w.tally.lost)
		})
	}
}

// crashTally is what a crash drill counted.
type crashTally struct {
	ops, acks, cuts, repaired, verified, lost, hangs int64
	preenRefused                                     int64 // cuts e2fsck -p would not repair
}

func (a *crashTally) add(b crashTally) {
	a.ops += b.ops
	a.acks += b.acks
	a.cuts += b.cuts
	a.repaired += b.repaired
	a.preenRefused += b.preenRefused
	a.verified += b.verified
	a.lost += b.lost
	a.hangs += b.hangs
}

// crashStack is the daemon's stack in-process, on a crash ring.
type crashStack struct {
	eng    *engine.Engine
	vol    *ext.Volume
	ring   *crashring.Ring
	ts     *httptest.Server
	client *http.Client
}

// newCrashStack makes a fresh volume of size with mke2fs args and
// serves it; beforeFlush is the crash ring's hook.
func newCrashStack(t *testing.T, mkfs []string, size string, beforeFlush func(fd int)) *crashStack {
	img := filepath.Join(t.TempDir(), "vol.img")
	testenv.Run(t, "mke2fs", append(append([]string{"-q", "-F"}, mkfs...), img, size)...)
	st := &crashStack{client: &http.Client{Timeout: 2 * time.Minute}}
	var err error
	st.eng, err = engine.Open(engine.Config{Path: img, Write: true, CacheBytes: 8 << 20, Logf: t.Logf,
		WrapRing: func(r uring.Ring) uring.Ring {
			st.ring = crashring.New(r, crashring.Config{SectorSize: crashSectorSize, BeforeFlush: beforeFlush})
			return st.ring
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.eng.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	st.vol, err = ext.Open(ext.Config{Device: st.eng.Device, Cache: st.eng.Cache, DeviceSize: st.eng.Info.Size,
		SectorSize: st.eng.Info.SectorSize, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if ro, why := st.vol.ReadOnly(); ro {
		t.Fatalf("the drill's volume opened read-only: %s", why)
	}
	t.Cleanup(func() {
		if err := st.vol.Close(); err != nil {
			t.Errorf("close volume: %v", err)
		}
	})
	// Background writeback, as the daemon runs it (adopt), but eager:
	// data and the metadata that reaches it go out between and during
	// requests, so cuts find it half written.
	fl, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: st.eng.Cache, Interval: 20 * time.Millisecond, ExpireAge: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fl.Start()
	t.Cleanup(func() {
		if err := fl.Stop(context.Background()); err != nil {
			t.Errorf("stop the flusher: %v", err)
		}
	})
	st.ts = httptest.NewServer(api.New(api.Config{Volume: st.vol}).Handler())
	t.Cleanup(st.ts.Close)
	return st
}

// call sends one request and returns its status and body; a transport
// error (a timeout: a hang) is returned as such.
func (st *crashStack) call(method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	switch {
	case body == nil:
	case len(body) == 0:
		rd = http.NoBody // a PUT of nothing still says Content-Length: 0
	default:
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, st.ts.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	resp, err := st.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
