package ringtest

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpaged/mpaged/uring"
)

// BenchFileSize is the size of the file BenchReads reads from: larger than
// any depth*block span, so random offsets spread over the device.
const BenchFileSize = 64 << 20

// benchFile is one 64 MiB file per test binary, written once and unlinked
// at once: it lives as long as the process holds fd, so no benchmark
// leaves data behind. Benchmarks reopen it (with their own flags) through
// /proc/self/fd.
var benchFile struct {
	once sync.Once
	f    *os.File
	err  error
}

func BenchFilePath(tb testing.TB) string {
	tb.Helper()
	benchFile.once.Do(func() { benchFile.f, benchFile.err = makeBenchFile() })
	if benchFile.err != nil {
		tb.Fatalf("bench file: %v", benchFile.err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", benchFile.f.Fd())
}

func makeBenchFile() (*os.File, error) {
	f, err := os.CreateTemp("", "mpaged-bench-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name())
	chunk := make([]byte, 1<<20)
	for off := 0; off < BenchFileSize; off += len(chunk) {
		for i := range chunk {
			chunk[i] = byte(off>>20) ^ byte(i) ^ byte(i>>8) | 1 // no zero pages, no holes
		}
		if _, err := f.WriteAt(chunk, int64(off)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, f.Sync()
}

// OpenReadMaybeDirect opens path read-only with O_DIRECT when the filesystem
// takes it, else buffered, and says which.
func OpenReadMaybeDirect(tb testing.TB, path string) (*os.File, bool) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err == nil {
		return f, true
	}
	if !errors.Is(err, syscall.EINVAL) {
		tb.Fatalf("open %s: %v", path, err)
	}
	if f, err = os.OpenFile(path, os.O_RDONLY, 0); err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	return f, false
}

// benchReader keeps depth reads in flight: each completion reissues its
// request at a new random offset until b.N reads have been issued. It is
// the requests' Handler; it allocates nothing per read.
type benchReader struct {
	ring      uring.Ring
	blockSize int
	blocks    uint64
	total     int64
	issued    atomic.Int64
	completed atomic.Int64
	done      chan struct{}
	errOnce   sync.Once
	err       error
}

func (br *benchReader) Complete(q *uring.Request) {
	if q.Err != nil || q.Res != len(q.Buf) {
		br.fail(fmt.Errorf("read at %d: res %d err %v", q.Offset, q.Res, q.Err))
		return
	}
	if br.completed.Add(1) == br.total {
		br.done <- struct{}{}
		return
	}
	if br.issued.Add(1) > br.total {
		return
	}
	br.aim(q)
	if err := br.ring.Submit(q); err != nil {
		br.fail(err)
	}
}

func (br *benchReader) fail(err error) {
	br.errOnce.Do(func() {
		br.err = err
		br.done <- struct{}{}
	})
}

// aim moves q to a pseudo-random block; the generator state lives in
// q.UserData (xorshift64), so there is no shared state and no allocation.
func (br *benchReader) aim(q *uring.Request) {
	x := q.UserData
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	q.UserData = x
	q.Offset = int64(x%br.blocks) * int64(br.blockSize)
}

// BenchReads measures random reads of blockSize bytes at queue depth
// depth against r, from a 64 MiB file opened with O_DIRECT where the
// filesystem allows it. It is shared by every backend's benchmarks (native,
// sync, iouring-go) so their numbers compare: b.N reads, b.SetBytes per
// read, allocations reported. The file is registered with r, and the
// buffers too where the backend supports it.
func BenchReads(b *testing.B, r uring.Ring, blockSize, depth int) {
	b.Helper()
	f, direct := OpenReadMaybeDirect(b, BenchFilePath(b))
	defer f.Close()
	if !direct {
		b.Logf("O_DIRECT refused; benchmarking buffered reads")
	}
	file, err := r.RegisterFile(int(f.Fd()))
	if err != nil {
		b.Fatalf("register file: %v", err)
	}
	defer r.UnregisterFile(file)

	mem, err := unix.Mmap(-1, 0, blockSize*depth, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(mem)
	bufIndex := uring.NoBuffer
	if r.RegisterBuffer(0, mem) == nil {
		bufIndex = 0
		defer r.RegisterBuffer(0, nil)
	}

	br := &benchReader{
		ring:      r,
		blockSize: blockSize,
		blocks:    uint64(BenchFileSize / blockSize),
		total:     int64(b.N),
		done:      make(chan struct{}, 2),
	}
	n := min(depth, b.N)
	reqs := make([]uring.Request, n)
	ptrs := make([]*uring.Request, n)
	for i := range reqs {
		q := &reqs[i]
		*q = uring.Request{
			Op:       uring.OpRead,
			File:     file,
			Buf:      mem[i*blockSize : (i+1)*blockSize],
			BufIndex: bufIndex,
			Handler:  br,
			UserData: uint64(i)*0x9e3779b97f4a7c15 + 1,
		}
		br.aim(q)
		ptrs[i] = q
	}
	br.issued.Store(int64(n))

	b.SetBytes(int64(blockSize))
	b.ReportAllocs()
	b.ResetTimer()
	if err := r.Submit(ptrs...); err != nil {
		b.Fatalf("submit: %v", err)
	}
	select {
	case <-br.done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("reads did not finish: %d of %d completed", br.completed.Load(), b.N)
	}
	b.StopTimer()
	if br.err != nil {
		b.Fatal(br.err)
	}
	// Let stragglers of a failed run finish before their memory goes.
	for r.InFlight() > 0 {
		time.Sleep(time.Millisecond)
	}
}
