package mpage_test

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// TestDataDriven runs the scripts under testdata/. Each file starts with an
// env directive; see ddState.run for the commands.
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		s := &ddState{t: t}
		datadriven.RunTest(t, path, s.run)
	})
}

type ddState struct {
	t     *testing.T
	env   *mpagetest.Env
	last  mpage.StatsSnapshot
	lastB alloc.BioStats
	async chan string
	// asyncWaits is the BioSet's Waits count when the async command
	// started.
	asyncWaits int64

	ended *endedLog // the current env's: an earlier env's late completions land in its own

	// reader is the env's Reader (astart, apoll, await).
	reader *mpage.Reader
}

// startAsync runs fn on its own goroutine; poll and join observe it.
func (s *ddState) startAsync(fn func() string) string {
	s.asyncWaits = s.env.Dev.BioStats().Waits
	s.async = make(chan string, 1)
	go func() { s.async <- fn() }()
	return "started"
}

func (s *ddState) run(t *testing.T, d *datadriven.TestData) string {
	if d.Cmd != "env" && s.env == nil {
		d.Fatalf(t, "%s before env", d.Cmd)
	}
	e := s.env
	switch d.Cmd {
	case "env":
		return s.newEnv(t, d)
	case "mapper":
		if err := e.Mapper.Load(d.Input); err != nil {
			d.Fatalf(t, "%v", err)
		}
		return ""
	case "size":
		e.Mapping.SetSize(int64(intArg(t, d, 0)))
		return ""
	case "readpages":
		marker := 0
		if a, ok := d.Arg("marker"); ok {
			marker = atoi(t, a.SingleVal(t))
		}
		start, nr := uint64(intArg(t, d, 0)), intArg(t, d, 1)
		readpages := func() string {
			n, err := e.Mapping.ReadPages(start, nr, marker)
			return fmt.Sprintf("started %d%s", n, errSuffix(err))
		}
		if d.HasArg("async") {
			return s.startAsync(readpages)
		}
		return readpages()
	case "readpage":
		p, created, err := mpage.GrabPage(e.Mapping, uint64(intArg(t, d, 0)))
		if err != nil {
			return "error: " + err.Error()
		}
		out := "cached"
		if !p.Has(mpage.Uptodate) {
			e.Mapping.ReadPage(p)
			out = "read"
		} else {
			p.Unlock()
		}
		if created {
			out += " (created)"
		}
		p.Release()
		return out
	case "read":
		off, n := int64(intArg(t, d, 0)), intArg(t, d, 1)
		buf := make([]byte, n)
		got, err := e.Mapping.ReadAt(buf, off)
		out := fmt.Sprintf("n=%d%s", got, errSuffix(err))
		if err != nil && !errors.Is(err, syscall.EIO) && got == 0 {
			return out
		}
		if errors.Is(err, syscall.EIO) {
			return out + " (EIO)"
		}
		return out + "\n" + rle(buf[:got], off)
	case "write":
		off, n := int64(intArg(t, d, 0)), intArg(t, d, 1)
		c := byte('a')
		if a, ok := d.Arg("pattern"); ok {
			c = a.SingleVal(t)[0]
		}
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = c
		}
		got, err := e.Mapping.WriteAt(buf, off)
		return fmt.Sprintf("n=%d%s", got, errSuffix(err))
	case "writepages":
		wbc := s.wbc(t, d)
		if d.HasArg("async") {
			return s.startAsync(func() string { return s.writepages(wbc) })
		}
		return s.writepages(wbc)
	case "poll":
		// Whether the async writepages has returned, after a grace period
		// in which it could have.
		time.Sleep(50 * time.Millisecond)
		select {
		case r := <-s.async:
			s.async <- r
			return "returned"
		default:
			return "running"
		}
	case "join":
		return <-s.async
	case "allocwait":
		// Until an Alloc blocks in the BioSet after the async command
		// started (its Waits count grows): deterministic, unlike poll,
		// because the waiter counts itself under the set's lock, which
		// the Free that wakes it must take.
		deadline := time.Now().Add(10 * time.Second)
		for e.Dev.BioStats().Waits == s.asyncWaits {
			if time.Now().After(deadline) {
				d.Fatalf(t, "no Alloc blocked within 10s")
			}
			time.Sleep(time.Millisecond)
		}
		return "blocked"
	case "wait":
		e.Drain()
		return ""
	case "hold":
		e.Ring.Hold()
		return ""
	case "release":
		e.Ring.Release()
		return ""
	case "inflight":
		if d.CmdArgs[0].Key == "off" {
			e.Ring.SetInFlight(-1)
		} else {
			e.Ring.SetInFlight(intArg(t, d, 0))
		}
		return ""
	case "bios":
		recs := e.Ring.Records()
		e.Ring.Reset()
		var b strings.Builder
		for _, r := range recs {
			fmt.Fprintf(&b, "%s sector=%d block=%d vecs=%d bytes=%d", r.Op, r.Offset/512, r.Offset/int64(e.BlockSize), r.Vecs, r.Len)
			if r.Err != nil {
				fmt.Fprintf(&b, " fail=%s", errnoName(r.Err))
			}
			b.WriteByte('\n')
		}
		if b.Len() == 0 {
			return "none"
		}
		return b.String()
	case "maplog":
		var b strings.Builder
		for _, c := range e.Mapper.Calls() {
			fmt.Fprintln(&b, c)
		}
		if f := e.Mapper.Forgotten(); len(f) > 0 {
			fmt.Fprintf(&b, "forgotten: %s\n", compactBlocks(f))
		}
		if bw := e.Mapper.BoundaryWrites(); len(bw) > 0 {
			fmt.Fprintf(&b, "boundary writes: %v\n", bw)
		}
		e.Mapper.ResetLog()
		if b.Len() == 0 {
			return "none"
		}
		return b.String()
	case "ended":
		// The pages multipage Bio completions ended since the last
		// ended, in the order they were ended (after a wait).
		e.Drain()
		out := strings.Join(s.ended.take(), "\n")
		if out == "" {
			return "none"
		}
		return out + "\n"
	case "pages":
		return s.pages()
	case "stats":
		return s.stats()
	case "budget":
		if a, ok := d.Arg("vecs"); ok {
			e.Dev.BioSet().SetBudget(e.Dev.BioSet().Cost(atoi(t, a.SingleVal(t))))
		} else {
			e.Dev.BioSet().SetBudget(int64(intArg(t, d, 0)))
		}
		return ""
	case "fail":
		var r mpagetest.Rule
		for _, a := range d.CmdArgs {
			v := a.SingleVal(t)
			switch a.Key {
			case "op":
				switch v {
				case "readv":
					r.Op = uring.OpReadv
				case "writev":
					r.Op = uring.OpWritev
				case "fsync":
					r.Op = uring.OpFsync
				case "any":
					r.AnyOp = true
				default:
					d.Fatalf(t, "op %q", v)
				}
			case "off":
				r.Off = int64(atoi(t, v))
			case "len":
				r.Size = int64(atoi(t, v))
			case "count":
				r.Count = atoi(t, v)
			case "errno":
				switch v {
				case "EIO":
					r.Errno = syscall.EIO
				case "ENOSPC":
					r.Errno = syscall.ENOSPC
				default:
					d.Fatalf(t, "errno %q", v)
				}
			}
		}
		e.Ring.Fail(r)
		return ""
	case "nofail":
		e.Ring.ClearFaults()
		return ""
	case "disk":
		e.Drain()
		off, n := intArg(t, d, 0), intArg(t, d, 1)
		return rle(e.Disk()[off:off+n], int64(off))
	case "err":
		err := e.Mapping.Err()
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, syscall.ENOSPC):
			return "ENOSPC: " + err.Error()
		case errors.Is(err, syscall.EIO):
			return "EIO: " + err.Error()
		}
		return "other: " + err.Error()
	case "writeandwait":
		err := e.Mapping.WriteAndWait(0, -1)
		if err == nil {
			return "ok"
		}
		return "error: " + err.Error()
	case "truncate":
		size := int64(intArg(t, d, 0))
		truncate := func() string { return "ok" + errSuffix(e.Mapping.Truncate(size)) }
		if d.HasArg("async") {
			return s.startAsync(truncate)
		}
		return truncate()
	case "astart":
		// Start asynchronous reads of the pages named, through the
		// env's Reader.
		for _, a := range d.CmdArgs {
			if a.Key == "want" {
				continue
			}
			want := 1
			if w, ok := d.Arg("want"); ok {
				want = atoi(t, w.SingleVal(t))
			}
			idx := uint64(atoi(t, a.Key))
			if err := s.reader.Start(idx, want, idx); err != nil {
				return "error: " + err.Error()
			}
		}
		return fmt.Sprintf("in flight %d", s.reader.InFlight())
	case "apoll":
		// The reads that have completed, without waiting.
		return s.readResults(s.reader.TryWait)
	case "await":
		// Every read in flight, waiting for each.
		return s.readResults(s.reader.Wait)
	case "meta-write":
		blk := int64(intArg(t, d, 0))
		buf := make([]byte, e.BlockSize)
		for i := range buf {
			buf[i] = 'M'
		}
		_, err := e.Meta.WriteAt(buf, blk*int64(e.BlockSize))
		return "ok" + errSuffix(err)
	}
	d.Fatalf(t, "unknown command %q", d.Cmd)
	return ""
}

func (s *ddState) newEnv(t *testing.T, d *datadriven.TestData) string {
	cfg := mpagetest.EnvConfig{Script: d.Input, DiskBytes: 1 << 20, CacheBytes: 4 << 20}
	syncMode := false
	for _, a := range d.CmdArgs {
		v := ""
		if len(a.Vals) > 0 {
			v = a.Vals[0]
		}
		switch a.Key {
		case "block":
			cfg.BlockSize = atoi(t, v)
		case "disk":
			cfg.DiskBytes = int64(atoi(t, v))
		case "cache":
			cfg.CacheBytes = int64(atoi(t, v))
		case "size":
			cfg.Size = int64(atoi(t, v))
		case "maxvecs":
			cfg.MaxBioVecs = atoi(t, v)
		case "congestion":
			cfg.CongestionDepth = atoi(t, v)
		case "reserve":
			cfg.Bios.Reserve = atoi(t, v)
		case "sync":
			syncMode = true
		default:
			d.Fatalf(t, "env: unknown arg %q", a.Key)
		}
	}
	s.env = mpagetest.NewEnvWith(t, cfg)
	s.env.Ring.SetSync(syncMode)
	s.reader = s.env.Mapping.NewReader(64)
	s.ended = new(endedLog)
	mpage.SetPageEndedHook(s.env.Dev, s.ended.add)
	s.last, s.lastB = mpage.StatsSnapshot{}, alloc.BioStats{}
	return ""
}

// endedLog records pages as Bio completions end them: "read 3",
// "write 0". Completions add from the ring's side, the script takes.
type endedLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *endedLog) add(p *mpage.Page, d mpage.Dir) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%s %d", d, p.Index))
}

func (l *endedLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

func (s *ddState) wbc(t *testing.T, d *datadriven.TestData) *mpage.WritebackControl {
	wbc := &mpage.WritebackControl{}
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "sync":
			switch a.SingleVal(t) {
			case "none":
				wbc.SyncMode = mpage.SyncNone
			case "all":
				wbc.SyncMode = mpage.SyncAll
			default:
				d.Fatalf(t, "sync=%s", a.SingleVal(t))
			}
		case "nr":
			wbc.NrToWrite = int64(atoi(t, a.SingleVal(t)))
		case "range":
			lo, hi, ok := strings.Cut(a.SingleVal(t), "-")
			if !ok {
				d.Fatalf(t, "range=A-B")
			}
			wbc.RangeStart, wbc.RangeEnd = int64(atoi(t, lo)), int64(atoi(t, hi))
		case "nonblocking":
			wbc.Nonblocking = true
		case "async":
		default:
			d.Fatalf(t, "writepages: unknown arg %q", a.Key)
		}
	}
	return wbc
}

func (s *ddState) writepages(wbc *mpage.WritebackControl) string {
	err := s.env.Mapping.WritePages(wbc)
	out := fmt.Sprintf("written=%d index=%d", wbc.Written, s.env.Mapping.WritebackIndex())
	if wbc.EncounteredCongestion {
		out += " congested"
	}
	return out + errSuffix(err)
}

// readResults prints the results next returns until it has none, in the
// order they came, and releases their pages.
func (s *ddState) readResults(next func() (mpage.ReadResult, bool)) string {
	var b strings.Builder
	for {
		res, ok := next()
		if !ok {
			break
		}
		if res.Tag != res.Index {
			s.t.Fatalf("read of page %d came back with tag %d", res.Index, res.Tag)
		}
		if res.Err != nil {
			fmt.Fprintf(&b, "page %d: error %s\n", res.Index, errnoName(res.Err))
			continue
		}
		p := res.Page
		if p.Index != res.Index || !p.Has(mpage.Uptodate) {
			s.t.Fatalf("read of page %d returned page %d, flags %v", res.Index, p.Index, p.Flags())
		}
		fmt.Fprintf(&b, "page %d: [%s]\n", res.Index, blockBytes(p.Data, s.env.BlockSize))
		p.Release()
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// pages lists every cached page: index, flags, and per block its byte if
// the block is uniform (else the first byte and *).
func (s *ddState) pages() string {
	e := s.env
	m := e.Mapping
	want := m.Pages()
	var b strings.Builder
	found := 0
	for idx := uint64(0); found < want && idx < 1<<16; idx++ {
		p := mpage.FindPage(m, idx)
		if p == nil {
			continue
		}
		found++
		fmt.Fprintf(&b, "%d: %s [%s]\n", idx, p.Flags(), blockBytes(p.Data, e.BlockSize))
		p.Release()
	}
	if found == 0 {
		return "none"
	}
	return b.String()
}

func blockBytes(data []byte, bs int) string {
	var parts []string
	for off := 0; off < len(data); off += bs {
		blk := data[off : off+bs]
		s := fmt.Sprintf("%02x", blk[0])
		for _, c := range blk {
			if c != blk[0] {
				s += "*"
				break
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// stats prints what changed since the last stats.
func (s *ddState) stats() string {
	e := s.env
	cur, curB := e.Stats.Snapshot(), e.Dev.BioStats()
	prev, prevB := s.last, s.lastB
	s.last, s.lastB = cur, curB
	var b strings.Builder
	for d := mpage.Read; d <= mpage.Write; d++ {
		fmt.Fprintf(&b, "%s: bios=%d pages=%d bytes=%d block-ios=%d map-calls=%d errors=%d\n", d,
			cur.Bios[d]-prev.Bios[d], cur.BioPages[d]-prev.BioPages[d], cur.BioBytes[d]-prev.BioBytes[d],
			cur.BlockIOs[d]-prev.BlockIOs[d], cur.MapCalls[d]-prev.MapCalls[d], cur.Errors[d]-prev.Errors[d])
	}
	var conf []string
	for d := mpage.Read; d <= mpage.Write; d++ {
		for r := range mpage.NumReasons {
			if n := cur.Confused[d][r] - prev.Confused[d][r]; n > 0 {
				conf = append(conf, fmt.Sprintf("%s/%s=%d", d, mpage.Reason(r), n))
			}
		}
	}
	if len(conf) > 0 {
		fmt.Fprintf(&b, "confused: %s\n", strings.Join(conf, " "))
	}
	var other []string
	add := func(name string, n uint64) {
		if n > 0 {
			other = append(other, fmt.Sprintf("%s=%d", name, n))
		}
	}
	add("hole-pages", cur.HolePages-prev.HolePages)
	add("write-retries", cur.WriteRetries-prev.WriteRetries)
	add("errno-eio", cur.WritebackErrno[mpage.ErrnoEIO]-prev.WritebackErrno[mpage.ErrnoEIO])
	add("errno-enospc", cur.WritebackErrno[mpage.ErrnoENOSPC]-prev.WritebackErrno[mpage.ErrnoENOSPC])
	add("alloc-degraded", uint64(curB.Degraded-prevB.Degraded))
	add("alloc-failed", uint64(curB.Failed-prevB.Failed))
	add("alloc-reserve", uint64(curB.ReserveUsed-prevB.ReserveUsed))
	add("alloc-waits", uint64(curB.Waits-prevB.Waits))
	if len(other) > 0 {
		fmt.Fprintf(&b, "%s\n", strings.Join(other, " "))
	}
	return b.String()
}

// rle prints b as runs of equal bytes, offsets relative to base.
func rle(b []byte, base int64) string {
	if len(b) == 0 {
		return "(empty)"
	}
	var parts []string
	start := 0
	for i := 1; i <= len(b); i++ {
		if i == len(b) || b[i] != b[start] {
			parts = append(parts, fmt.Sprintf("[%d,%d)=%02x", base+int64(start), base+int64(i), b[start]))
			start = i
		}
	}
	if len(parts) > 16 {
		parts = append(parts[:16], fmt.Sprintf("... (%d runs)", len(parts)))
	}
	return strings.Join(parts, " ")
}

func compactBlocks(bs []uint64) string {
	var parts []string
	for i := 0; i < len(bs); {
		j := i
		for j+1 < len(bs) && bs[j+1] == bs[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.FormatUint(bs[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", bs[i], bs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, " ")
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " error: " + err.Error()
}

func errnoName(err error) string {
	switch {
	case errors.Is(err, syscall.EIO):
		return "EIO"
	case errors.Is(err, syscall.ENOSPC):
		return "ENOSPC"
	case errors.Is(err, io.EOF):
		return "EOF"
	}
	return err.Error()
}

func intArg(t *testing.T, d *datadriven.TestData, i int) int {
	if i >= len(d.CmdArgs) {
		d.Fatalf(t, "%s: missing argument %d", d.Cmd, i)
	}
	return atoi(t, d.CmdArgs[i].Key)
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("bad number %q: %v", s, err)
	}
	return n
}
