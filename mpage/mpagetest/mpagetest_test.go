package mpagetest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
)

// order records the goroutine-independent facts of completions.
type order struct {
	c chan *uring.Request
}

func (o *order) Complete(r *uring.Request) { o.c <- r }

func req(op uring.Op, off int64, h uring.Handler, vecs ...[]byte) *uring.Request {
	return &uring.Request{Op: op, File: uring.MakeFile(0, -1), Offset: off, Vecs: vecs, BufIndex: uring.NoBuffer, Handler: h}
}

func TestRecorderOrderDataAndRecords(t *testing.T) {
	disk := make([]byte, 8192)
	r := NewRecorder(disk, RecorderOptions{})
	defer r.Close()
	o := &order{c: make(chan *uring.Request, 16)}
	w := req(uring.OpWritev, 100, o, []byte("hello "), []byte("world"))
	rd := req(uring.OpReadv, 100, o, make([]byte, 5), make([]byte, 6))
	end := req(uring.OpReadv, 8190, o, make([]byte, 4)) // short at the end
	past := req(uring.OpWritev, 9000, o, []byte("x"))
	fs := &uring.Request{Op: uring.OpFsync, File: uring.MakeFile(0, -1), BufIndex: uring.NoBuffer, Handler: o}
	if err := r.Submit(w, rd, end, past, fs); err != nil {
		t.Fatal(err)
	}
	for i, want := range []*uring.Request{w, rd, end, past, fs} {
		got := <-o.c
		if got != want {
			t.Fatalf("completion %d out of order", i)
		}
	}
	if w.Res != 11 || rd.Res != 11 || end.Res != 2 || past.Res != 0 || fs.Res != 0 {
		t.Fatalf("results %d %d %d %d %d", w.Res, rd.Res, end.Res, past.Res, fs.Res)
	}
	if string(rd.Vecs[0])+string(rd.Vecs[1]) != "hello world" || string(disk[100:111]) != "hello world" {
		t.Fatalf("data: %q / %q", rd.Vecs, disk[100:111])
	}
	recs := r.Records()
	if len(recs) != 5 || recs[0].Op != uring.OpWritev || recs[0].Offset != 100 || recs[0].Len != 11 || recs[0].Vecs != 2 ||
		recs[2].Len != 4 || recs[4].Op != uring.OpFsync || recs[4].Seq != 4 {
		t.Fatalf("records %v", recs)
	}
	r.Reset()
	if len(r.Records()) != 0 {
		t.Fatal("Reset kept records")
	}
	if st := r.Stats(); st.Submitted != 5 || st.Completed != 5 || st.SQEs != 5 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The handler must not run on the submitter's stack (a handler taking a
// lock the submitter holds would deadlock there), even in sync mode.
func TestRecorderCompletesOffTheSubmitterStack(t *testing.T) {
	r := NewRecorder(make([]byte, 4096), RecorderOptions{})
	defer r.Close()
	r.SetSync(true)
	var inline bool
	h := uring.HandlerFunc(func(*uring.Request) {
		pc := make([]uintptr, 64)
		frames := runtime.CallersFrames(pc[:runtime.Callers(1, pc)])
		for {
			f, more := frames.Next()
			if f.Function == "github.com/mpaged/mpaged/mpage/mpagetest.TestRecorderCompletesOffTheSubmitterStack" {
				inline = true
			}
			if !more {
				break
			}
		}
	})
	q := req(uring.OpReadv, 0, h, make([]byte, 10))
	if err := r.Submit(q); err != nil {
		t.Fatal(err)
	}
	// Sync mode: delivered before Submit returned.
	if q.Res != 10 {
		t.Fatalf("not delivered by the time Submit returned: res %d", q.Res)
	}
	if inline {
		t.Fatal("handler ran on the submitter's stack")
	}
}

func TestRecorderFaultsHoldInFlight(t *testing.T) {
	disk := make([]byte, 1<<16)
	r := NewRecorder(disk, RecorderOptions{Entries: 8})
	defer r.Close()
	r.Fail(Rule{Op: uring.OpWritev, Off: 4096, Size: 4096, Errno: syscall.ENOSPC, Count: 1})
	r.FailAt(uring.OpReadv, 0, syscall.EIO)
	o := &order{c: make(chan *uring.Request, 16)}
	r.Hold()
	a := req(uring.OpWritev, 6000, o, []byte("abc")) // overlaps [4096, 8192): ENOSPC
	b := req(uring.OpWritev, 6000, o, []byte("abc")) // Count 1: passes
	c := req(uring.OpReadv, 0, o, make([]byte, 4))   // EIO
	d := req(uring.OpReadv, 1, o, make([]byte, 4))   // does not touch byte 0
	if err := r.Submit(a, b, c, d); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if r.InFlight() != 4 || r.Held() != 4 {
		t.Fatalf("held: in flight %d, held %d", r.InFlight(), r.Held())
	}
	if !bytes.Equal(disk[6000:6003], []byte{0, 0, 0}) {
		t.Fatal("a held write reached the disk")
	}
	r.SetInFlight(100)
	if r.InFlight() != 100 {
		t.Fatal("override ignored")
	}
	r.SetInFlight(-1)
	r.Release()
	for range 4 {
		<-o.c
	}
	if !errors.Is(a.Err, syscall.ENOSPC) || a.Res != 0 || b.Err != nil || b.Res != 3 ||
		!errors.Is(c.Err, syscall.EIO) || d.Err != nil || d.Res != 4 {
		t.Fatalf("results: %v/%d %v/%d %v %v/%d", a.Err, a.Res, b.Err, b.Res, c.Err, d.Err, d.Res)
	}
	recs := r.Records()
	if !errors.Is(recs[0].Err, syscall.ENOSPC) || recs[1].Err != nil || !errors.Is(recs[2].Err, syscall.EIO) {
		t.Fatalf("records %v", recs)
	}
	r.ClearFaults()
	if err := r.Submit(req(uring.OpReadv, 0, o, make([]byte, 4))); err != nil {
		t.Fatal(err)
	}
	if q := <-o.c; q.Err != nil {
		t.Fatal(q.Err)
	}
	// Drain lifts a hold; Close completes what is accepted.
	r.Hold()
	if err := r.Submit(req(uring.OpNop, 0, o)); err != nil {
		t.Fatal(err)
	}
	r.Drain()
	<-o.c
	r.Hold()
	if err := r.Submit(req(uring.OpNop, 0, o)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	<-o.c
	if err := r.Submit(req(uring.OpNop, 0, o)); !errors.Is(err, uring.ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}

func TestFileRecorder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewFileRecorder(f, RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o := &order{c: make(chan *uring.Request, 4)}
	w := req(uring.OpWritev, 4090, o, []byte("0123456789")) // 6 fit
	rd := req(uring.OpReadv, 4090, o, make([]byte, 10))
	if err := r.Submit(w, rd); err != nil {
		t.Fatal(err)
	}
	<-o.c
	<-o.c
	if w.Res != 6 || rd.Res != 6 || string(rd.Vecs[0][:6]) != "012345" {
		t.Fatalf("write %d read %d %q", w.Res, rd.Res, rd.Vecs[0])
	}
	if st, _ := f.Stat(); st.Size() != 4096 {
		t.Fatalf("file grew to %d", st.Size())
	}
}

func TestScriptedMapper(t *testing.T) {
	s, err := NewScriptedMapper(`
		# comment
		map 0-11 at 100 boundary
		map 20 at 500 uptodate
		map 30-31 at 600 new
		alloc at 1000 max 5
		fail 40
		fail 41 enospc
	`)
	if err != nil {
		t.Fatal(err)
	}
	type q struct {
		block  uint64
		n      int
		create bool
	}
	for _, tc := range []struct {
		q      q
		flags  mpage.MapFlags
		pblock uint64
		n      int
		err    error
	}{
		{q{0, 16, false}, mpage.Mapped | mpage.Boundary, 100, 12, nil},
		{q{0, 4, false}, mpage.Mapped, 100, 4, nil}, // does not reach the boundary
		{q{10, 1, false}, mpage.Mapped, 110, 1, nil},
		{q{11, 1, false}, mpage.Mapped | mpage.Boundary, 111, 1, nil},
		{q{12, 100, false}, 0, 0, 8, nil}, // hole up to 20
		{q{20, 4, false}, mpage.Mapped | mpage.MapUptodate, 500, 1, nil},
		{q{30, 4, false}, mpage.Mapped | mpage.New, 600, 2, nil},
		{q{36, 10, false}, 0, 0, 4, nil}, // hole up to the failing block
		{q{40, 1, false}, 0, 0, 1, syscall.EIO},
		{q{41, 1, true}, 0, 0, 1, syscall.ENOSPC},
		{q{12, 3, true}, mpage.Mapped | mpage.New, 1000, 3, nil},
		{q{12, 3, false}, mpage.Mapped, 1000, 3, nil},             // remembered, not New
		{q{15, 10, true}, mpage.Mapped | mpage.New, 1003, 2, nil}, // max 5
		{q{17, 1, true}, 0, 0, 1, syscall.ENOSPC},
	} {
		bm := mpage.BlockMap{Block: tc.q.block, Len: tc.q.n, Create: tc.q.create, Data: make([]byte, 8)}
		err := s.MapBlocks(&bm)
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Fatalf("%+v: err %v, want %v", tc.q, err, tc.err)
		}
		if err != nil {
			continue
		}
		if bm.Flags != tc.flags || bm.Len != tc.n || (bm.Flags&mpage.Mapped != 0 && bm.PBlock != tc.pblock) {
			t.Fatalf("%+v: got %s %d len %d, want %s %d len %d", tc.q, bm.Flags, bm.PBlock, bm.Len, tc.flags, tc.pblock, tc.n)
		}
		if bm.Flags&mpage.MapUptodate != 0 && bm.Data[0] != UptodateByte {
			t.Fatal("uptodate block not filled")
		}
	}
	if n := len(s.Calls()); n != 14 {
		t.Fatalf("%d calls logged", n)
	}
	s.ForgetBlock(7)
	s.WriteBoundary(111)
	if f, b := s.Forgotten(), s.BoundaryWrites(); len(f) != 1 || f[0] != 7 || len(b) != 1 || b[0] != 111 {
		t.Fatalf("logs %v %v", f, b)
	}
	s.ResetLog()
	if len(s.Calls())+len(s.Forgotten())+len(s.BoundaryWrites()) != 0 {
		t.Fatal("ResetLog")
	}
	s.Punch(5)
	bm := mpage.BlockMap{Block: 4, Len: 10}
	if err := s.MapBlocks(&bm); err != nil || bm.Len != 1 || bm.Flags != mpage.Mapped {
		t.Fatalf("after punch: %s len %d %v", bm.Flags, bm.Len, err)
	}
	for _, bad := range []string{"map 1", "map 3-1 at 5", "map 0-3 at 1\nmap 2 at 9", "frob", "map 0 at 1 shiny", "alloc 5"} {
		if _, err := NewScriptedMapper(bad); err == nil {
			t.Errorf("script %q accepted", bad)
		}
	}
}

func TestScriptedMapperIndirect(t *testing.T) {
	s, err := NewScriptedMapper("map 0-15 at 100\nindirect 12-15 at 99")
	if err != nil {
		t.Fatal(err)
	}
	var reads []uint64
	s.MetaRead = func(pb uint64) error { reads = append(reads, pb); return nil }
	for _, b := range []uint64{0, 11, 12, 13, 12} {
		bm := mpage.BlockMap{Block: b, Len: 1}
		if err := s.MapBlocks(&bm); err != nil {
			t.Fatal(err)
		}
	}
	if len(reads) != 1 || reads[0] != 99 {
		t.Fatalf("indirect reads %v", reads)
	}
}

func TestEnv(t *testing.T) {
	e := NewEnv(t, 1024, 1<<20, 1<<20)
	if err := e.Mapper.Load("map 0-7 at 10"); err != nil {
		t.Fatal(err)
	}
	e.Mapping.SetSize(8192)
	buf := make([]byte, 8192)
	if n, err := e.Mapping.ReadAt(buf, 0); n != 8192 || err != nil {
		t.Fatal(n, err)
	}
	for i, c := range buf {
		if c != Pattern(int64(10*1024+i), 1024) {
			t.Fatalf("byte %d = %#x", i, c)
		}
	}
	recs := e.Ring.Records()
	if len(recs) != 1 || recs[0].Offset != 10*1024 || recs[0].Vecs != 2 {
		t.Fatalf("records %v", recs)
	}
}
