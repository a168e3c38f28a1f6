package dav

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/webdav"

	"github.com/mpaged/mpaged/fs/ext"
)

// fileInfo is an ext.FileInfo as os.FileInfo, with the ETag /v1 gives the
// same version of the file and a content type that never needs the file's
// bytes (a listing of many files opens none of them to sniff).
type fileInfo struct {
	name string
	fi   ext.FileInfo
}

func newFileInfo(name string, fi ext.FileInfo) *fileInfo {
	return &fileInfo{name: path.Base(name), fi: fi}
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.fi.Size }
func (i *fileInfo) Mode() fs.FileMode  { return i.fi.Mode }
func (i *fileInfo) ModTime() time.Time { return i.fi.ModTime }
func (i *fileInfo) IsDir() bool        { return i.fi.IsDir() }
func (i *fileInfo) Sys() any           { return i.fi }

// ETag names one version of a file as /v1 does: inode and generation say
// which file, size and mtime which version of it.
func (i *fileInfo) ETag(context.Context) (string, error) { return ETag(i.fi), nil }

// ContentType goes by the name's extension, like /v1's GET; a name
// without a known one is application/octet-stream.
func (i *fileInfo) ContentType(context.Context) (string, error) {
	if t := mime.TypeByExtension(path.Ext(i.name)); t != "" {
		return t, nil
	}
	return "application/octet-stream", nil
}

// ETag is the entity tag of a file's version, the same string /v1 gives.
func ETag(fi ext.FileInfo) string {
	return fmt.Sprintf(`"%x-%x-%x-%x"`, fi.Ino, fi.Generation, fi.Size, fi.ModTime.UnixNano())
}

var (
	_ webdav.ETager       = (*fileInfo)(nil)
	_ webdav.ContentTyper = (*fileInfo)(nil)
)

// readFile is an open regular file: reads go through the engine's page
// cache at the file's offset, never a whole-file buffer.
type readFile struct {
	heldProps
	ctx  context.Context
	name string
	f    *ext.File
	off  int64
}

// heldProps gives an open file or directory its dead properties
// (webdav.DeadPropsHolder), keyed by the inode it was opened on.
type heldProps struct {
	fsys *FS
	fi   ext.FileInfo
}

func (h heldProps) DeadProps() (map[xml.Name]webdav.Property, error) {
	return h.fsys.props.get(keyOf(h.fi)), nil
}

func (h heldProps) Patch(patches []webdav.Proppatch) ([]webdav.Propstat, error) {
	return h.fsys.props.patch(keyOf(h.fi), patches), nil
}

func (r *readFile) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err != nil && err != io.EOF {
		return n, r.fsys.fail(r.ctx, "read", r.name, err)
	}
	return n, err
}

func (r *readFile) Seek(offset int64, whence int) (int64, error) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = r.off
	case io.SeekEnd:
		base = r.f.Size()
	default:
		return r.off, &fs.PathError{Op: "seek", Path: r.name, Err: fs.ErrInvalid}
	}
	if base+offset < 0 {
		return r.off, &fs.PathError{Op: "seek", Path: r.name, Err: fs.ErrInvalid}
	}
	r.off = base + offset
	return r.off, nil
}

func (r *readFile) Readdir(int) ([]fs.FileInfo, error) {
	return nil, &fs.PathError{Op: "readdir", Path: r.name, Err: ext.ErrNotDir}
}

func (r *readFile) Stat() (fs.FileInfo, error) { return newFileInfo(r.name, r.fi), nil }

func (r *readFile) Write([]byte) (int, error) {
	return 0, &fs.PathError{Op: "write", Path: r.name, Err: ErrInPlaceWrite}
}

func (r *readFile) Close() error { return r.f.Close() }

// dirFile is an open directory: it lists, it has no bytes.
type dirFile struct {
	heldProps
	ctx     context.Context
	name    string
	entries []fs.FileInfo // listed at the first Readdir
	listed  bool
	pos     int
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: ext.ErrIsDir}
}

func (d *dirFile) Seek(int64, int) (int64, error) {
	return 0, &fs.PathError{Op: "seek", Path: d.name, Err: ext.ErrIsDir}
}

func (d *dirFile) Write([]byte) (int, error) {
	return 0, &fs.PathError{Op: "write", Path: d.name, Err: ext.ErrIsDir}
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return newFileInfo(d.name, d.fi), nil }

func (d *dirFile) Close() error { return nil }

// Readdir lists the directory as os.File.Readdir does (count <= 0: all of
// the rest, nil error at the end; count > 0: at most count, io.EOF at the
// end). Entries whose inodes cannot be read are left out (ReadDirInfo
// reports them; the first is noted on the request); the staging directory
// is never listed, also in a listing of the root through a link to it.
func (d *dirFile) Readdir(count int) ([]fs.FileInfo, error) {
	if !d.listed {
		infos, err := d.fsys.vol.ReadDirInfo(d.name)
		if err != nil && infos == nil {
			return nil, d.fsys.fail(d.ctx, "readdir", d.name, err)
		}
		if err != nil {
			noteErr(d.ctx, err)
		}
		for _, fi := range infos {
			p := path.Join(d.name, fi.Name)
			if !ext.IsStagingEntry(d.fi.Ino, fi.Name) {
				d.entries = append(d.entries, newFileInfo(p, fi))
			}
		}
		d.listed = true
	}
	rest := d.entries[d.pos:]
	if count <= 0 {
		d.pos = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(count, len(rest))]
	d.pos += len(rest)
	return rest, nil
}

// putFile replaces a file whole, atomically, through ext.Volume.ReplaceFile:
// the bytes are staged in the volume's staging directory and renamed over
// the name only once they all arrived. webdav's PUT and COPY write it with
// io.Copy, which hands ReadFrom the whole source: ReadFrom runs the
// replacement itself, so a source that fails (a client that hangs up, a
// stall, a body short of its Content-Length) fails the staging and the
// old content stays. Plain Writes (a caller that does not go through
// ReadFrom) are piped to a replacement that Close completes; the declared
// length is checked there too, so a copy that failed unseen still cannot
// commit a short PUT body.
type putFile struct {
	fsys   *FS
	ctx    context.Context
	name   string
	perm   fs.FileMode
	old    *propKey // the file replaced: its dead properties carry over
	expect int64    // the PUT body's declared length; -1: unknown

	mu      sync.Mutex
	started bool // a replacement ran or runs
	done    bool
	err     error
	fi      ext.FileInfo
	written atomic.Int64
	pending []webdav.Proppatch // patches before the commit

	pw     *io.PipeWriter // plain Writes go here
	result chan error
}

func newPutFile(fsys *FS, ctx context.Context, name string, perm fs.FileMode, old *propKey) *putFile {
	return &putFile{fsys: fsys, ctx: ctx, name: name, perm: perm, old: old, expect: putLength(ctx)}
}

// ReadFrom stages everything r yields and renames it into place at r's
// clean end; any failure of r leaves the old content.
func (p *putFile) ReadFrom(r io.Reader) (int64, error) {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		if p.pw != nil {
			return io.Copy(struct{ io.Writer }{p.pw}, r)
		}
		return 0, &fs.PathError{Op: "write", Path: p.name, Err: ErrInPlaceWrite}
	}
	p.started = true
	p.mu.Unlock()
	err := p.replace(r)
	return p.written.Load(), err
}

// replace runs the replacement from r and records its outcome.
func (p *putFile) replace(r io.Reader) error {
	body := &countedBody{r: r, expect: p.expect, n: &p.written}
	fi, _, err := p.fsys.vol.ReplaceFile(p.name, body, p.perm, nil)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	if err != nil {
		if body.err != nil {
			// The source failed, not the volume: say so, whatever
			// ReplaceFile wrapped around it.
			err = &sourceError{body.err}
		}
		p.err = p.fsys.fail(p.ctx, "create", p.name, err)
		return p.err
	}
	p.fi = fi
	// A PUT keeps the replaced file's dead properties; a COPY's
	// destination has the source's (pending) and none of its own.
	p.fsys.props.replaced(p.old, stateOf(p.ctx).method() != "COPY", keyOf(fi), p.pending)
	p.pending = nil
	return nil
}

// Write pipes p to a replacement started at the first Write; Close ends
// it.
func (p *putFile) Write(b []byte) (int, error) {
	p.mu.Lock()
	if !p.started {
		p.started = true
		pr, pw := io.Pipe()
		p.pw, p.result = pw, make(chan error, 1)
		go func() {
			err := p.replace(pr)
			pr.CloseWithError(err) // unblocks a Write if the replacement failed first
			p.result <- err
		}()
	}
	pw := p.pw
	p.mu.Unlock()
	if pw == nil {
		return 0, &fs.PathError{Op: "write", Path: p.name, Err: ErrInPlaceWrite}
	}
	return pw.Write(b)
}

// Close completes the replacement: a piped one gets its end of data, and
// one never written to (LOCK of a new name, an empty PUT that bypassed
// ReadFrom) makes the file empty.
func (p *putFile) Close() error {
	p.mu.Lock()
	started, pw := p.started, p.pw
	p.started = true
	p.mu.Unlock()
	switch {
	case pw != nil:
		pw.Close()
		err := <-p.result
		p.mu.Lock()
		p.pw = nil // a second Close returns the outcome, not a wait
		p.mu.Unlock()
		return err
	case !started:
		return p.replace(eofReader{})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// Stat describes the new file once it is in place, and what is written so
// far before that.
func (p *putFile) Stat() (fs.FileInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done && p.err == nil {
		return newFileInfo(p.name, p.fi), nil
	}
	return newFileInfo(p.name, ext.FileInfo{Name: path.Base(p.name), Type: ext.TypeRegular, Mode: p.perm,
		Size: p.written.Load(), ModTime: time.Now()}), nil
}

func (p *putFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: p.name, Err: ErrNotReadable}
}

func (p *putFile) Seek(int64, int) (int64, error) {
	return 0, &fs.PathError{Op: "seek", Path: p.name, Err: ErrNotReadable}
}

func (p *putFile) Readdir(int) ([]fs.FileInfo, error) {
	return nil, &fs.PathError{Op: "readdir", Path: p.name, Err: ext.ErrNotDir}
}

// DeadProps are the new file's once it is in place (COPY patches the
// source's onto it before Close, held until then).
func (p *putFile) DeadProps() (map[xml.Name]webdav.Property, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done && p.err == nil {
		return p.fsys.props.get(keyOf(p.fi)), nil
	}
	return nil, nil
}

func (p *putFile) Patch(patches []webdav.Proppatch) ([]webdav.Propstat, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done && p.err == nil {
		return p.fsys.props.patch(keyOf(p.fi), patches), nil
	}
	var k propKey // a new file has none yet: only the bounds count
	if p.old != nil && stateOf(p.ctx).method() != "COPY" {
		k = *p.old
	}
	if refused := p.fsys.props.check(k, append(p.pending[:len(p.pending):len(p.pending)], patches...)); refused != nil {
		return refused, nil
	}
	p.pending = append(p.pending, patches...)
	return []webdav.Propstat{okPropstat(patches)}, nil
}

// countedBody counts what the replacement reads and, when the request
// declared a length, turns an end before it (or data past it) into
// ErrShortBody, so a short body never reaches the rename.
type countedBody struct {
	r      io.Reader
	expect int64
	n      *atomic.Int64
	err    error // the first failure of r, or ErrShortBody
}

func (c *countedBody) Read(b []byte) (int, error) {
	m, err := c.r.Read(b)
	n := c.n.Add(int64(m))
	if c.expect >= 0 && (n > c.expect || err == io.EOF && n != c.expect) {
		err = fmt.Errorf("%w: %d bytes, %d declared", ErrShortBody, n, c.expect)
	}
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return m, err
}

// sourceError is the failure of what a replacement copies from (a request
// body, a COPY's source), told apart from the volume's own.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "reading the new content: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

var (
	_ webdav.File            = (*readFile)(nil)
	_ webdav.File            = (*dirFile)(nil)
	_ webdav.File            = (*putFile)(nil)
	_ webdav.DeadPropsHolder = (*readFile)(nil)
	_ webdav.DeadPropsHolder = (*dirFile)(nil)
	_ webdav.DeadPropsHolder = (*putFile)(nil)
	_ io.ReaderFrom          = (*putFile)(nil)
)
