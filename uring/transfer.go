package uring

// Remaining describes what is left of r after done bytes moved: the vecs
// (sub-slices of r's buffers, written into scratch, which must have room for
// len(r.Vecs) entries or 1) and the offset to resume at. Backends use it to
// resubmit short transfers.
func Remaining(r *Request, done int, scratch [][]byte) ([][]byte, int64) {
	off := r.Offset
	if off != OffsetCurrent {
		off += int64(done)
	}
	out := scratch[:0]
	switch r.Op {
	case OpRead, OpWrite:
		if done < len(r.Buf) {
			out = append(out, r.Buf[done:])
		}
		return out, off
	}
	for _, v := range r.Vecs {
		if done >= len(v) {
			done -= len(v)
			continue
		}
		out = append(out, v[done:])
		done = 0
	}
	return out, off
}

// maxZeroWrites bounds how often a backend resubmits a write that moved zero
// bytes before failing it with ErrShortWrite.
const maxZeroWrites = 8

// maxRetries bounds EAGAIN/EINTR retries of one request before its error is
// reported; a device that says EAGAIN forever is broken, not busy.
const maxRetries = 1 << 16
