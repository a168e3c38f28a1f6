package drills

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/mpaged/mpaged/internal/apitest"
	"github.com/mpaged/mpaged/internal/testenv"
)

// Bounds on walking one corrupt volume: every request, whatever the
// volume claims, and the whole walk.
const (
	walkMaxRequests = 300
	walkMaxDepth    = 8
	walkMaxBody     = 4 << 20 // bytes read of one file; the rest is left unread
	walkTimeout     = 20 * time.Second
	// heapBound bounds the in-process heap while corrupt volumes are
	// served: a size or count read from a corrupt volume must never
	// become an allocation.
	heapBound = 1 << 30
)

// baseImage is a small mke2fs image the corruptions start from, with
// where its structures are.
type baseImage struct {
	name        string
	raw         []byte
	blockSize   int
	gdOff       int64 // the first group descriptor
	inodeOff    int64 // /dir/file's inode
	dirBlockOff int64 // /dir's first block
	journalOff  int64 // the journal's first block (its superblock); 0 without one
}

// makeBase builds an ext2 (1 KiB blocks, indirect maps), ext3 (the same
// with a 1 MiB journal) or ext4 (extents, no journal) image of 4 MiB
// holding directories, small, empty, sparse and multi-block files and
// symbolic links (one loop).
func makeBase(t *testing.T, name, fsType string, blockSize int, extra ...string) baseImage {
	t.Helper()
	src := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "dir/sub"), 0o755))
	r := newRand("corrupt/base")
	must(os.WriteFile(filepath.Join(src, "dir/file"), randBytes(r, 20000), 0o644))
	must(os.WriteFile(filepath.Join(src, "dir/sub/deep"), []byte("deep"), 0o644))
	must(os.WriteFile(filepath.Join(src, "big"), randBytes(r, 600<<10), 0o644))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o644))
	for i := range 30 {
		must(os.WriteFile(filepath.Join(src, "dir", fmt.Sprintf("n%02d", i)), []byte(strings.Repeat("x", i)), 0o644))
	}
	must(os.Symlink("dir/file", filepath.Join(src, "link")))
	must(os.Symlink("loop2", filepath.Join(src, "loop1")))
	must(os.Symlink("loop1", filepath.Join(src, "loop2")))
	img := filepath.Join(t.TempDir(), name+".img")
	args := append([]string{"-q", "-F", "-t", fsType, "-b", strconv.Itoa(blockSize)}, extra...)
	testenv.Run(t, "mke2fs", append(args, "-d", src, img, "4M")...)
	b := baseImage{name: name, blockSize: blockSize}
	var err error
	if b.raw, err = os.ReadFile(img); err != nil {
		t.Fatal(err)
	}
	first := int64(0)
	if blockSize == 1024 {
		first = 1
	}
	b.gdOff = (first + 1) * int64(blockSize)
	m := regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`).FindStringSubmatch(testenv.Run(t, "debugfs", "-R", "imap /dir/file", img))
	if m == nil {
		t.Fatal("debugfs imap: no location")
	}
	blk, _ := strconv.ParseInt(m[1], 10, 64)
	off, _ := strconv.ParseInt(m[2], 16, 64)
	b.inodeOff = blk*int64(blockSize) + off
	blocks := strings.Fields(lastLine(testenv.Run(t, "debugfs", "-R", "blocks /dir", img)))
	if len(blocks) == 0 {
		t.Fatal("debugfs blocks /dir: none")
	}
	dblk, _ := strconv.ParseInt(blocks[0], 10, 64)
	b.dirBlockOff = dblk * int64(blockSize)
	if fsType == "ext3" {
		jblk, err := strconv.ParseInt(lastLine(testenv.Run(t, "debugfs", "-R", "bmap <8> 0", img)), 10, 64)
		if err != nil || jblk == 0 {
			t.Fatalf("debugfs bmap <8> 0: %v", err)
		}
		b.journalOff = jblk * int64(blockSize)
	}
	return b
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// corruptVolume is one image to try: its name says how it is made, and
// make makes it (on demand: hundreds of images are not held at once) and
// says how many bytes it changed.
type corruptVolume struct {
	name string
	make func() (raw []byte, hits int)
}

// corpusVolumes splices every entry of fs/ext's fuzz corpus into each
// base image where that structure lives: a superblock over the
// superblock, a descriptor over the first descriptor, an inode and an
// extent root over /dir/file's, a directory block over /dir's first.
func corpusVolumes(t *testing.T, bases []baseImage) []corruptVolume {
	t.Helper()
	root := filepath.Join("..", "fs", "ext", "testdata", "fuzz")
	var out []corruptVolume
	for _, target := range []string{"FuzzSuperblock", "FuzzGroupDesc", "FuzzInode", "FuzzExtentHeader", "FuzzDirEntries"} {
		ents, err := os.ReadDir(filepath.Join(root, target))
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			data := corpusBytes(t, filepath.Join(root, target, ent.Name()))
			for _, b := range bases {
				var off int64
				n := len(data)
				switch target {
				case "FuzzSuperblock":
					off, n = 1024, min(n, 1024)
				case "FuzzGroupDesc":
					off = b.gdOff
				case "FuzzInode":
					off = b.inodeOff
				case "FuzzExtentHeader":
					off, n = b.inodeOff+40, min(n, 60)
				case "FuzzDirEntries":
					off, n = b.dirBlockOff, min(n, b.blockSize)
				}
				base := b.raw
				out = append(out, corruptVolume{name: fmt.Sprintf("%s:%s/%s", b.name, target, ent.Name()), make: func() ([]byte, int) {
					raw := bytes.Clone(base)
					hits := 0
					for i := range n {
						if raw[off+int64(i)] != data[i] {
							hits++
						}
						raw[off+int64(i)] = data[i]
					}
					return raw, hits
				}})
			}
		}
	}
	return out
}

// journalVolumes splice fs/ext/jbd2's fuzz corpus into the journal of
// each base that has one, and mark the volume as needing recovery, so
// opening it replays (or refuses) that journal: a journal superblock over
// the journal's superblock; a log block (descriptor, commit, revoke) as
// the journal's block 1, the journal superblock saying the log starts
// there with that block's sequence.
func journalVolumes(t *testing.T, bases []baseImage) []corruptVolume {
	t.Helper()
	root := filepath.Join("..", "fs", "ext", "jbd2", "testdata", "fuzz")
	var out []corruptVolume
	for _, target := range []string{"FuzzSuperblock", "FuzzLogBlock"} {
		ents, err := os.ReadDir(filepath.Join(root, target))
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			data := corpusBytes(t, filepath.Join(root, target, ent.Name()))
			for _, b := range bases {
				if b.journalOff == 0 {
					continue
				}
				out = append(out, corruptVolume{name: fmt.Sprintf("%s:jbd2/%s/%s", b.name, target, ent.Name()), make: func() ([]byte, int) {
					raw := bytes.Clone(b.raw)
					at := b.journalOff
					if target == "FuzzLogBlock" {
						at += int64(b.blockSize)
						be := binary.BigEndian
						be.PutUint32(raw[b.journalOff+28:], 1) // s_start: the log begins at block 1
						if len(data) >= 12 {
							copy(raw[b.journalOff+24:b.journalOff+28], data[8:12]) // s_sequence: the block's
						}
					}
					n := copy(raw[at:at+int64(b.blockSize)], data)
					le := binary.LittleEndian
					le.PutUint32(raw[1024+0x60:], le.Uint32(raw[1024+0x60:])|0x4) // INCOMPAT_RECOVER
					return raw, n
				}})
			}
		}
	}
	return out
}

// corpusBytes is the first []byte argument of a "go test fuzz v1" file.
func corpusBytes(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if lit, ok := strings.CutPrefix(line, "[]byte("); ok {
			s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return []byte(s)
		}
	}
	t.Fatalf("%s: no []byte argument", file)
	return nil
}

// flipVolumes are n copies of the bases with random bytes of their first
// 2 MiB (half of them: 256 KiB) overwritten; volume i uses the seed's stream i, so one failing
// volume is remade from its name alone.
func flipVolumes(bases []baseImage, n int) []corruptVolume {
	out := make([]corruptVolume, 0, n)
	for i := range n {
		b := bases[i%len(bases)]
		out = append(out, corruptVolume{name: fmt.Sprintf("%s:flip/%d", b.name, i), make: func() ([]byte, int) {
			r := rand.New(rand.NewPCG(*seedFlag, uint64(i)))
			raw := bytes.Clone(b.raw)
			// Every other volume has its flips in the first 256 KiB,
			// where the superblock, descriptors, bitmaps and inode
			// tables of these small images are.
			span := min(len(raw), 2<<20)
			if i%4 >= 2 {
				span = 256 << 10
			}
			flips := 1 + r.IntN(64)
			for range flips {
				raw[r.IntN(span)] = byte(r.Uint32())
			}
			return raw, flips
		}})
	}
	return out
}

// walkStats count what a walk of a volume over HTTP saw.
type walkStats struct {
	requests, ok, jsonErrors, cut int64
	bad                           []string // answers that were neither success nor the API's JSON error
	timedOut                      bool
}

func (w *walkStats) add(o walkStats) {
	w.requests += o.requests
	w.ok += o.ok
	w.jsonErrors += o.jsonErrors
	w.cut += o.cut
	w.bad = append(w.bad, o.bad...)
	w.timedOut = w.timedOut || o.timedOut
}

// walkHTTP lists the volume from the root over the API, descending into
// directories and reading files (whole, at most walkMaxBody, and one
// range), within walkMaxRequests and walkTimeout.
func walkHTTP(base string) walkStats {
	ctx, cancel := context.WithTimeout(context.Background(), walkTimeout)
	defer cancel()
	var st walkStats
	client := &http.Client{}
	call := func(p string, hdr ...string) (*http.Response, []byte, bool) {
		if st.requests >= walkMaxRequests || ctx.Err() != nil {
			return nil, nil, false
		}
		st.requests++
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/files"+p, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				st.timedOut = true
			} else {
				st.bad = append(st.bad, fmt.Sprintf("GET %s: %v", p, err))
			}
			return nil, nil, false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, walkMaxBody))
		switch {
		case ctx.Err() != nil:
			st.timedOut = true
			return nil, nil, false
		case err != nil && resp.StatusCode < 300:
			st.cut++ // a read failed after the status went out
			return nil, nil, false
		case resp.StatusCode >= 400:
			if cerr := apitest.CheckError(resp, b, ""); cerr != nil || (resp.StatusCode >= 500 && resp.StatusCode != 500) {
				st.bad = append(st.bad, fmt.Sprintf("GET %s: %d %v", p, resp.StatusCode, cerr))
			} else {
				st.jsonErrors++
			}
			return resp, b, false
		}
		st.ok++
		return resp, b, true
	}
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		_, b, ok := call(dir)
		if !ok || depth > walkMaxDepth {
			return
		}
		var l struct {
			Entries []struct{ Href, Type string }
		}
		if err := json.Unmarshal(b, &l); err != nil {
			st.bad = append(st.bad, fmt.Sprintf("GET %s: listing is not JSON: %v", dir, err))
			return
		}
		for _, e := range l.Entries {
			p := path.Join(dir, e.Href)
			switch e.Type {
			case "directory":
				walk(p+"/", depth+1)
			case "regular", "symlink":
				call(p)
				call(p, "Range", "bytes=100-5000")
			}
		}
	}
	walk("/", 0)
	return st
}

// panicLog counts the panics net/http recovered in handlers.
type panicLog struct {
	mu     sync.Mutex
	panics []string
}

func (p *panicLog) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("panic")) {
		p.mu.Lock()
		p.panics = append(p.panics, string(b))
		p.mu.Unlock()
	}
	return len(b), nil
}

// heapPeak samples the heap until stop and returns its peak.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// serveCorrupt opens each volume as serve does (writable; read-only when
// it must be), walks it over the API, tries one PUT on a writable one,
// and closes it. A refusal to open is a fine outcome; a panic, a
// non-JSON error, or a walk past its bounds is not.
func serveCorrupt(t *testing.T, drill string, vols []corruptVolume) {
	row := Row{Drill: drill, Note: seedNote()}
	defer func() { summary.Add(row) }()
	plog := &panicLog{}
	stop := make(chan struct{})
	peak := heapPeak(stop)
	refused := map[string]int{}
	var st walkStats
	dir := t.TempDir()
	for _, v := range vols {
		row.Rounds++
		raw, hits := v.make()
		row.Faults += int64(hits)
		img := filepath.Join(dir, "vol.img")
		if err := os.WriteFile(img, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		e, err := apitest.Open(t, apitest.Options{Image: img, ServerLog: log.New(plog, "", 0)})
		if err != nil {
			e, err = apitest.Open(t, apitest.Options{Image: img, ReadOnly: true, ServerLog: log.New(plog, "", 0)})
		}
		if err != nil {
			refused[errorClass(err)]++
			t.Logf("%s: refused: %v", v.name, err)
			continue
		}
		row.Acknowledged++
		ws := walkHTTP(e.TS.URL)
		if ro, _ := e.Vol.ReadOnly(); !ro {
			tryPut(e.TS.URL, &ws)
		}
		st.add(ws)
		if ws.timedOut {
			row.Hangs++
			t.Errorf("%s: the walk outlived %v (%s)", v.name, walkTimeout, seedNote())
			continue // closing could wait for the stuck request
		}
		for _, b := range ws.bad {
			t.Errorf("%s: %s (%s)", v.name, b, seedNote())
		}
		_ = e.Close() // a corrupt volume may refuse to close cleanly: that is an answer too
		row.Verified++
	}
	close(stop)
	hp := <-peak
	row.Crashes = int64(len(plog.panics))
	for _, p := range plog.panics {
		t.Errorf("a handler panicked: %s", p)
	}
	if hp > heapBound {
		t.Errorf("the heap peaked at %s serving corrupt volumes", humanize.IBytes(hp))
	}
	row.Note = fmt.Sprintf("%s; %d opened, refused: %s; %d requests: %d ok, %d JSON errors, %d cut short; heap peak %s",
		seedNote(), row.Acknowledged, classes(refused), st.requests, st.ok, st.jsonErrors, st.cut, humanize.IBytes(hp))
	t.Log(row.Note)
}

// tryPut writes a small file into a corrupt volume: the allocators meet
// its bitmaps. Any answer is fine but a non-JSON error or a 5xx other than
// 500 and 507.
func tryPut(base string, st *walkStats) {
	st.requests++
	req, _ := http.NewRequest(http.MethodPut, base+"/v1/files/drill-put", strings.NewReader(strings.Repeat("p", 9000)))
	ctx, cancel := context.WithTimeout(context.Background(), walkTimeout)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			st.timedOut = true
		} else {
			st.bad = append(st.bad, fmt.Sprintf("PUT: %v", err))
		}
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode < 300:
		st.ok++
	case apitest.CheckError(resp, b, "") != nil, resp.StatusCode > 500 && resp.StatusCode != 507:
		st.bad = append(st.bad, fmt.Sprintf("PUT: %d %s", resp.StatusCode, b))
	default:
		st.jsonErrors++
	}
}

// errorClass names an open refusal by its outermost sentinel-ish words.
func errorClass(err error) string {
	s := err.Error()
	for _, c := range []string{"unclean", "not an ext", "unsupported", "corrupt", "checksum", "input/output"} {
		if strings.Contains(s, c) {
			return c
		}
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return "open"
	}
	return "other"
}

func classes(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range []string{"not an ext", "unsupported", "corrupt", "checksum", "unclean", "input/output", "open", "other"} {
		if m[c] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[c], c))
		}
	}
	return strings.Join(parts, ", ")
}

// corruptBases are the images corruptions start from.
func corruptBases(t *testing.T) []baseImage {
	testenv.RequireTool(t, "mke2fs")
	testenv.RequireTool(t, "debugfs")
	return []baseImage{
		makeBase(t, "ext2-1k", "ext2", 1024),
		makeBase(t, "ext3-1k", "ext3", 1024, "-J", "size=1"),
		makeBase(t, "ext4-4k", "ext4", 4096, "-O", "^has_journal"),
		// Without checksums a flipped byte reaches the parsers instead
		// of the checksum check in front of them.
		makeBase(t, "ext4-1k-nocsum", "ext4", 1024, "-O", "^has_journal,^metadata_csum"),
	}
}

// TestCorruptCorpus: every fs/ext (and fs/ext/jbd2) fuzz corpus entry,
// spliced into real images where its structure lives, is refused or
// served cleanly.
func TestCorruptCorpus(t *testing.T) {
	bases := corruptBases(t)
	serveCorrupt(t, "corrupt/corpus", append(corpusVolumes(t, bases), journalVolumes(t, bases)...))
}

// TestCorruptFlips: images with random bytes of their first 2 MiB
// overwritten are refused or served cleanly.
func TestCorruptFlips(t *testing.T) {
	serveCorrupt(t, "corrupt/flips", flipVolumes(corruptBases(t), pick(40, 400)))
}

// TestCorruptBinary: the real binary meets a sample of the corrupt
// volumes: `mpaged ls` and `mpaged cat` over what they list, and `mpaged
// serve` walked over HTTP. Each exits with a clear error or succeeds,
// within a timeout and an RSS bound, never with a panic.
func TestCorruptBinary(t *testing.T) {
	bases := corruptBases(t)
	vols := append(flipVolumes(bases, pick(6, 24)), corpusVolumes(t, bases)[:pick(4, 16)]...)
	bin := testenv.MpagedBinary(t)
	row := Row{Drill: "corrupt/binary", Note: seedNote()}
	defer func() { summary.Add(row) }()
	var runs, failed, served int64
	var maxRSS int64
	dir := t.TempDir()
	for i, v := range vols {
		row.Rounds++
		raw, hits := v.make()
		row.Faults += int64(hits)
		img := filepath.Join(dir, fmt.Sprintf("v%d.img", i))
		if err := os.WriteFile(img, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		oneShots(t, bin, img, v.name, &row, &runs, &failed, &maxRSS)
		if i%3 == 0 {
			if serveBinary(t, bin, img, v.name, &row) {
				served++
			}
		}
		os.Remove(img)
	}
	if maxRSS > 512<<20 {
		t.Errorf("a one-shot command's RSS peaked at %s", humanize.IBytes(uint64(maxRSS)))
	}
	row.Acknowledged = runs - failed
	row.Verified = runs - row.Hangs - row.Crashes // each run's outcome checked: output, or exit 1 with a message
	row.Note = fmt.Sprintf("%s; %d ls/cat runs (%d exited with an error), peak RSS (VmHWM, sampled) %s; serve on %d volumes (%d served)",
		seedNote(), runs, failed, humanize.IBytes(uint64(maxRSS)), (len(vols)+2)/3, served)
	t.Log(row.Note)
}

// oneShots runs `mpaged ls` from the root down (two levels) and `mpaged
// cat` on what it lists, each bounded.
func oneShots(t *testing.T, bin, img, name string, row *Row, runs, failed, maxRSS *int64) {
	dirs := []string{"/"}
	for depth := 0; depth < 2 && len(dirs) > 0; depth++ {
		var next []string
		for _, d := range dirs {
			out, ok := runBounded(t, bin, name, row, runs, failed, maxRSS, "ls", "--volume", img, d)
			if !ok {
				continue
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if line == "" {
					continue // an empty directory
				}
				// "TYPE SIZE NAME", the size right-aligned; names may hold spaces.
				typ, rest, _ := strings.Cut(line, " ")
				sizeStr, entry, ok := strings.Cut(strings.TrimLeft(rest, " "), " ")
				size, err := strconv.ParseInt(sizeStr, 10, 64)
				if !ok || err != nil {
					t.Errorf("%s: mpaged ls printed %q", name, line)
					continue
				}
				p := path.Join(d, entry)
				switch {
				case typ == "d" && entry != "." && entry != "..":
					next = append(next, p)
				case typ == "-" && size <= walkMaxBody:
					runBounded(t, bin, name, row, runs, failed, maxRSS, "cat", "--volume", img, p)
				}
			}
		}
		dirs = next[:min(len(next), 4)]
	}
}

// runBounded runs one command under walkTimeout and reports its stdout
// and whether it succeeded; a panic or a timeout fails t.
func runBounded(t *testing.T, bin, name string, row *Row, runs, failed, maxRSS *int64, args ...string) (string, bool) {
	*runs++
	ctx, cancel := context.WithTimeout(context.Background(), walkTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := execCommand(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	peak, err := boundedRun(cmd)
	*maxRSS = max(*maxRSS, peak)
	switch {
	case ctx.Err() != nil:
		row.Hangs++
		t.Errorf("%s: mpaged %s did not finish in %v", name, strings.Join(args, " "), walkTimeout)
		return "", false
	case strings.Contains(errb.String(), "panic") || strings.Contains(errb.String(), "goroutine "):
		row.Crashes++
		t.Errorf("%s: mpaged %s panicked:\n%s", name, strings.Join(args, " "), errb.String())
		return "", false
	case err != nil:
		*failed++
		t.Logf("%s: mpaged %s: %s", name, args[0], strings.TrimSpace(errb.String()))
		if code := cmd.ProcessState.ExitCode(); code != 1 || strings.TrimSpace(errb.String()) == "" {
			t.Errorf("%s: mpaged %s: exit %d without a clear error: %q", name, strings.Join(args, " "), code, errb.String())
		}
		return "", false
	}
	return out.String(), true
}

// serveBinary runs `mpaged serve` on img: it refuses with exit 1 and a
// message, or serves, is walked, and stops on SIGTERM. It reports
// whether it served.
func serveBinary(t *testing.T, bin, img, name string, row *Row) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*walkTimeout)
	defer cancel()
	cmd := execCommand(ctx, bin, "serve", "--volume", img, "--listen", "127.0.0.1:0", "--fsck", "never", "--cache", "16MiB", "--log-level", "warn")
	var errb testenv.SyncBuffer
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, u, ok := strings.Cut(sc.Text(), " on http://"); ok {
				urlc <- "http://" + u
			}
		}
		close(urlc)
	}()
	u, servedOK := <-urlc
	if servedOK {
		if _, err := url.Parse(u); err != nil {
			t.Fatalf("serve printed %q", u)
		}
		ws := walkHTTP(u)
		if ws.timedOut {
			row.Hangs++
			t.Errorf("%s: walking the served volume outlived %v", name, walkTimeout)
		}
		for _, b := range ws.bad {
			t.Errorf("%s: serve: %s", name, b)
		}
		cmd.Process.Signal(os.Interrupt)
	}
	err = cmd.Wait()
	switch {
	case ctx.Err() != nil:
		row.Hangs++
		t.Errorf("%s: serve did not exit", name)
	case strings.Contains(errb.String(), "panic"):
		row.Crashes++
		t.Errorf("%s: serve panicked:\n%s", name, errb.String())
	case err != nil && !servedOK && cmd.ProcessState.ExitCode() != 1:
		t.Errorf("%s: serve refused the volume with exit %d:\n%s", name, cmd.ProcessState.ExitCode(), errb.String())
	}
	return servedOK
}
