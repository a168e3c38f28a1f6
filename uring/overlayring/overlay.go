package overlayring

import (
	"fmt"
	"sort"

	"github.com/mpaged/mpaged/uring"
)

// Block is one block of an overlay: its number in the file, in units of
// the overlay's block size, and the bytes reads of it return.
type Block struct {
	Num  uint64
	Data []byte
}

// Overlay is a set of blocks laid over a file. It is immutable once made.
type Overlay struct {
	bs     int64
	nums   []uint64 // sorted, distinct
	data   [][]byte // data[i] is block nums[i]'s, bs bytes
	lo, hi int64    // the bytes the blocks span: [lo, hi)
}

// NewOverlay checks blocks (sorted by Num, distinct, each blockSize
// bytes) and makes the overlay. The Data slices are kept, not copied.
func NewOverlay(blockSize int, blocks []Block) (*Overlay, error) {
	if blockSize <= 0 {
		return nil, fmt.Errorf("%w: block size %d", ErrOverlay, blockSize)
	}
	ov := &Overlay{bs: int64(blockSize), nums: make([]uint64, len(blocks)), data: make([][]byte, len(blocks))}
	for i, b := range blocks {
		if len(b.Data) != blockSize {
			return nil, fmt.Errorf("%w: block %d has %d bytes, want %d", ErrOverlay, b.Num, len(b.Data), blockSize)
		}
		if i > 0 && b.Num <= blocks[i-1].Num {
			return nil, fmt.Errorf("%w: block %d after block %d (want sorted, distinct)", ErrOverlay, b.Num, blocks[i-1].Num)
		}
		if b.Num >= uint64(1<<62)/uint64(blockSize) {
			return nil, fmt.Errorf("%w: block %d is past any file's end", ErrOverlay, b.Num)
		}
		ov.nums[i], ov.data[i] = b.Num, b.Data
	}
	if len(blocks) > 0 {
		ov.lo = int64(ov.nums[0]) * ov.bs
		ov.hi = int64(ov.nums[len(ov.nums)-1]+1) * ov.bs
	}
	return ov, nil
}

// Len is the number of blocks.
func (ov *Overlay) Len() int { return len(ov.nums) }

// first is the index of the first block that ends after byte off.
func (ov *Overlay) first(off int64) int {
	blk := uint64(off / ov.bs)
	return sort.Search(len(ov.nums), func(i int) bool { return ov.nums[i] >= blk })
}

// hits reports whether bytes [off, off+n) touch an overlaid block: a
// range check, then one binary search.
func (ov *Overlay) hits(off int64, n int) bool {
	end := off + int64(n)
	if n <= 0 || end <= ov.lo || off >= ov.hi {
		return false
	}
	i := ov.first(off)
	return i < len(ov.nums) && int64(ov.nums[i])*ov.bs < end
}

// apply copies the overlaid blocks' bytes that fall in the first n bytes
// q transferred into q's buffers.
func (ov *Overlay) apply(q *uring.Request, n int) {
	end := q.Offset + int64(n)
	for i := ov.first(q.Offset); i < len(ov.nums); i++ {
		start := int64(ov.nums[i]) * ov.bs
		if start >= end {
			return
		}
		src := ov.data[i]
		from, to := max(start, q.Offset), min(start+ov.bs, end)
		scatter(q, from-q.Offset, src[from-start:to-start])
	}
}

// scatter copies src into q's buffers at byte pos of the transfer.
func scatter(q *uring.Request, pos int64, src []byte) {
	if q.Op == uring.OpRead {
		copy(q.Buf[pos:], src)
		return
	}
	for _, v := range q.Vecs {
		if len(src) == 0 {
			return
		}
		if pos >= int64(len(v)) {
			pos -= int64(len(v))
			continue
		}
		k := copy(v[pos:], src)
		src, pos = src[k:], 0
	}
}
