package mpage_test

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/mpage/mpagetest"
	"github.com/mpaged/mpaged/uring"
)

// chanHandler hands asynchronous reads to the test goroutine.
type chanHandler chan *mpage.PageRead

func (h chanHandler) PageReadDone(r *mpage.PageRead) { h <- r }

func (h chanHandler) next(t *testing.T) *mpage.PageRead {
	t.Helper()
	select {
	case r := <-h:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no completion")
		return nil
	}
}

// TestReadPageAsync: what ReadPageAsync returns and when it calls the
// handler. A hit, a hole and EOF finish inside the call (true, no handler
// call); a miss returns false and calls the handler once, from the
// completion side; a read whose I/O failed comes back Again, and the next
// ReadPageAsync reads the page once more (EIO if that fails too).
func TestReadPageAsync(t *testing.T) {
	for _, tc := range []struct {
		name   string
		page   uint64
		prep   func(e *mpagetest.Env) // before the read
		inline bool                   // ReadPageAsync returns true
		again  int                    // handler calls with Again before the end
		want   byte                   // first byte of the page, or
		err    error                  // the error
	}{
		{name: "hit", page: 2, prep: func(e *mpagetest.Env) { mustRead(t, e.Mapping, 1, 2*4096) }, inline: true, want: 102},
		{name: "miss", page: 2, want: 102},
		{name: "hole", page: 5, inline: true, want: 0},
		{name: "past EOF", page: 9, inline: true, err: io.EOF},
		{name: "far past EOF", page: 1 << 63, inline: true, err: io.EOF}, // was read as a negative index
		{name: "failed once", page: 3, prep: func(e *mpagetest.Env) {
			e.Ring.Fail(mpagetest.Rule{Op: uring.OpReadv, Off: 103 * 4096, Errno: syscall.EIO, Count: 1})
		}, again: 1, want: 103},
		{name: "failed twice", page: 3, prep: func(e *mpagetest.Env) {
			e.Ring.Fail(mpagetest.Rule{Op: uring.OpReadv, Off: 103 * 4096, Errno: syscall.EIO})
		}, again: 1, err: syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := mpagetest.NewEnvWith(t, mpagetest.EnvConfig{BlockSize: 4096, Size: 8 * 4096, Script: "map 0-4 at 100\nmap 6-7 at 106"})
			if tc.prep != nil {
				tc.prep(e)
			}
			h := make(chanHandler, 1)
			r := &mpage.PageRead{Index: tc.page, Handler: h, UserData: 77}
			// A miss whose read completes before ReadPageAsync goes to
			// wait finishes inline too; holding the ring across the call
			// makes "a miss returns false" deterministic.
			e.Ring.Hold()
			done := e.Mapping.ReadPageAsync(r)
			e.Ring.Release()
			if done != tc.inline {
				t.Fatalf("ReadPageAsync = %v, want %v", done, tc.inline)
			}
			again := 0
			for !done {
				if got := h.next(t); got != r {
					t.Fatalf("handler got %p, want %p", got, r)
				}
				if !r.Again() {
					break
				}
				again++
				done = e.Mapping.ReadPageAsync(r)
			}
			if again != tc.again {
				t.Errorf("%d calls with Again, want %d", again, tc.again)
			}
			select {
			case <-h:
				t.Fatal("handler called after the read was done")
			case <-time.After(10 * time.Millisecond):
			}
			if r.UserData != 77 {
				t.Errorf("UserData %d, want 77", r.UserData)
			}
			if tc.err != nil {
				if !errors.Is(r.Err, tc.err) || r.Page != nil {
					t.Fatalf("read: page %v, err %v; want err %v", r.Page, r.Err, tc.err)
				}
				return
			}
			if r.Err != nil || r.Page == nil || r.Page.Index != tc.page || !r.Page.Has(mpage.Uptodate) {
				t.Fatalf("read: page %v, err %v", r.Page, r.Err)
			}
			if r.Page.Data[0] != tc.want {
				t.Errorf("page holds %#x, want %#x", r.Page.Data[0], tc.want)
			}
			r.Page.Release()
		})
	}
}

// TestReadPageAsyncInFlightPanics: a PageRead in flight belongs to the
// engine; starting it again is a bug the engine refuses loudly.
func TestReadPageAsyncInFlightPanics(t *testing.T) {
	e := linearEnv(t, 1<<20, 1<<20, 1<<20)
	e.Ring.Hold()
	h := make(chanHandler, 1)
	r := &mpage.PageRead{Index: 7, Handler: h}
	if e.Mapping.ReadPageAsync(r) {
		t.Fatal("a miss with the ring held finished at once")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
		}()
		e.Mapping.ReadPageAsync(r)
	}()
	e.Ring.Release()
	if r := h.next(t); r.Page == nil {
		t.Fatalf("read failed: %v", r.Err)
	} else {
		r.Page.Release()
	}
}

// TestReaderBusy: Start refuses a read beyond the Reader's depth, and
// Wait says when nothing is in flight.
func TestReaderBusy(t *testing.T) {
	e := linearEnv(t, 1<<20, 1<<20, 1<<20)
	rd := e.Mapping.NewReader(2)
	for i := range 2 {
		if err := rd.Start(uint64(10*i+3), 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := rd.Start(50, 1, 0); !errors.Is(err, mpage.ErrBusy) {
		t.Fatalf("third Start: %v, want ErrBusy", err)
	}
	drainReader(rd)
	if _, ok := rd.Wait(); ok {
		t.Fatal("Wait returned a read with none in flight")
	}
	if _, ok := rd.TryWait(); ok {
		t.Fatal("TryWait returned a read with none in flight")
	}
}

// TestSetReadaheadWhileStreaming: SetReadahead may be called while a
// sequential reader reaches readahead markers (the race detector checks
// the window limit is read safely).
func TestSetReadaheadWhileStreaming(t *testing.T) {
	e := linearEnv(t, 8<<20, 2<<20, 8<<20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			e.Mapping.SetReadahead(16 << (i % 5))
		}
	}()
	buf := make([]byte, 64<<10)
	for off := int64(0); off < 8<<20; off += int64(len(buf)) {
		if _, err := e.Mapping.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}
