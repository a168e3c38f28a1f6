// Package dav serves an ext volume over WebDAV (RFC 4918), for clients
// nobody here wrote: rclone, davfs2, cadaver, file managers. The protocol
// is golang.org/x/net/webdav's; this package owns what it stands on:
//
//   - FS, the webdav.FileSystem over an *ext.Volume: OpenFile (read,
//     patch properties, replace), Mkdir, RemoveAll (depth first, symbolic
//     links removed and never followed, never the root), Rename, Stat;
//   - its Files: a regular file reads through the engine's page cache at
//     its offset (a GET streams, a COPY of a large file streams, nothing
//     holds a whole file); a directory lists; a file opened with O_TRUNC
//     (PUT, COPY's destination, LOCK of a new name) is replaced whole
//     through ext.Volume.ReplaceFile;
//   - dead properties (PROPPATCH), kept in memory for the daemon's
//     lifetime and keyed by inode and generation: fs/ext cannot write
//     extended attributes, so they do not survive a restart. They follow
//     the file through MOVE, COPY (copied) and a replacing PUT; removal
//     drops them. They are bounded (64 KiB a file, 32 MiB in all; a
//     PROPPATCH past a bound is refused whole with 507);
//   - Handler, which puts webdav.Handler (with webdav.NewMemLS, an
//     in-memory lock system: locks too end with the daemon, and none is
//     granted for longer than an hour, maxLockTimeout) over FS,
//     refuses hostile paths and read-only writes, and gives the volume's
//     failures their /v1 statuses.
//
// # Guarantees
//
// A PUT replaces atomically, as /v1's PUT does: the body is staged in
// ext.StagingDir, made durable and renamed over the name. webdav copies
// the body with io.Copy into the File, whose ReadFrom runs the
// replacement on the body itself: the rename happens only at the body's
// clean end, and only if it carried exactly the declared Content-Length
// (ErrShortBody otherwise), so a client that disconnects, stalls or sends
// less leaves the old content whole and no staged file. A PUT with
// Content-Range (a partial PUT) is 400.
//
// A MOVE or COPY with Overwrite onto an existing regular file replaces it
// in one rename (ext.Volume.Rename, ReplaceFile) or not at all: webdav
// deletes the destination first, and FS.RemoveAll leaves that deletion to
// the rename (see FS.replacedLater). A MOVE of a missing source is 404
// and touches nothing. A COPY or MOVE whose source and Destination
// contain one another is 403 (webdav would copy a collection into itself
// level on level, or delete the source with the destination tree it
// overwrites). A directory on either side is still deleted
// first, as RFC 4918 describes, so a failure after it loses the
// destination tree.
//
// Paths: webdav cleans paths, so every name stays inside the volume; on
// top of that, as /v1, request paths and Destination headers with NUL
// bytes or empty, "." or ".." segments are refused (400), not cleaned to
// some other name. A Destination must be on the same host and under the
// prefix (502 otherwise). The staging directory is neither listed nor
// reachable: reads of it are 404, writes refused with the status webdav
// gives a permission error (PUT 404, MKCOL 405, MOVE or COPY into it 403).
// That holds by identity, not only by name: a path that reaches it
// through a symbolic link on the volume (at any component, absolute or
// relative, through a link to the root) is the volume's ext.ErrHidden,
// answered exactly as its name is, as a request path, a COPY or MOVE
// source or Destination; a listing of the root through a link leaves it
// out, and listings show links as links, never following them. A link
// into it is answered as a dangling one (webdav stats through a DELETE's
// name, so such a link cannot be deleted over WebDAV; /v1 can), and a
// COPY of a tree holding one fails there as at a dangling link.
//
// On a read-only volume (or one the daemon serves read-only) PUT, DELETE,
// MKCOL, COPY, MOVE, PROPPATCH, LOCK and UNLOCK answer 403; OPTIONS,
// PROPFIND, GET and HEAD work.
//
// Statuses: webdav picks them for its refusals (404, 405, 409, 412, 423,
// ...). A failure of the volume or of the body is answered as /v1 does:
// 507 ENOSPC, 500 EIO or corruption, 413 a body over the limit or a file
// too large, 400 a body cut short, 408 a stall, 503 a closed volume.
//
// Not provided (x/net/webdav has no such feature): dead properties or
// locks that survive a restart, If-Match on PUT (webdav ignores it), and
// in-place partial writes (files are replaced whole). ETags are /v1's
// (ETag), so a GET through either route names the same version.
//
// Known limits: Stat follows links, so a COPY with Depth infinity
// descends into a linked directory, and a link to an ancestor repeats the
// tree until path resolution stops at 40 links (a PROPFIND with Depth
// infinity, or without Depth, is refused with 403 and the RFC 4918
// propfind-finite-depth precondition, as Apache's default is); a listing
// holds one directory's entries in memory (webdav reads each whole).
package dav
