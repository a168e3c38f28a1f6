// Package api is mpaged's HTTP interface to one ext2/3/4 volume: the /v1
// file API, health and readiness, and the mount point for /metrics. It
// holds no engine logic: every byte goes through the fs/ext Volume and so
// through the engine's page cache.
//
// Routes (paths inside the volume follow /v1/files/, URL-decoded; "..",
// empty components and NUL bytes are refused):
//
//	GET|HEAD /v1/files/{path}   a file's bytes (Range, ETag, conditional
//	                            requests), or a directory's JSON listing
//	PUT      /v1/files/{path}   create or replace atomically (Content-Range
//	                            is 400); ?offset=N
//	                            writes in place; ?sync=1 is durable first
//	DELETE   /v1/files/{path}   unlink a file or an empty directory
//	POST     /v1/mkdir/{path}   make a directory (?parents=1: and parents)
//	POST     /v1/fsync/{path}   data and metadata of a file on the device
//	POST     /v1/sync           everything on the device
//	GET      /healthz, /readyz  liveness; readiness (503 while shutting down)
//	any      /dav/{path}        WebDAV (package dav): OPTIONS, GET, HEAD,
//	                            PUT, DELETE, MKCOL, COPY, MOVE, PROPFIND,
//	                            PROPPATCH, LOCK, UNLOCK
//
// /dav/ follows the /v1 rules below (token, shutdown, concurrency, body
// limit, idle timeout and minimum rate, metrics route "dav"); its
// statuses and bodies are WebDAV's (text and XML, not JSON), except the
// 401, 411, 413 and 503 answered before package dav sees the request.
// Its guarantees are in package dav's documentation.
//
// # Guarantees
//
// A PUT without ?offset is ext.Volume.ReplaceFile: the body goes to a new
// file in the volume's staging directory, is made durable, and is renamed
// over the target, and the rename is made durable before the answer. A
// client that disconnects mid-body, a full volume or a crash leave the old
// content whole (a crash may leave a staged file, which the daemon removes
// at its next start). If-Match and If-None-Match are checked again at the
// rename, so two conditional PUTs cannot both win. ?sync=1 adds nothing to
// such a PUT (it is durable anyway); with ?offset it syncs the file before
// the answer. POST /v1/fsync and /v1/sync answer 200 only once the data
// and the metadata that reaches it are on the device; a write-back error
// is reported (500 naming the errno, 507 for ENOSPC) by every fsync until
// a later write-back succeeds.
//
// # Errors and limits
//
// Every error is JSON, {"error": "...", "code": "..."}, with its status:
// 400 bad path or parameter, 401 missing or wrong token, 404, 405 (with
// Allow), 409 (exists, not a directory, directory not empty, missing
// parent), 411 PUT without a length, 412 failed precondition, 413 body over
// the limit, 416 unsatisfiable range, 500 EIO (code "EIO"), 503 shutting
// down, read-only volume or too busy, 507 ENOSPC (code "ENOSPC"), 408 a
// client too slow. Bodies stream in chunks under an idle deadline that
// each chunk renews and a minimum rate (MinRate over each IdleTimeout), so
// a stalled or trickling client is cut off; requests beyond MaxConcurrent
// wait their turn (up to QueueTimeout). Paths with empty, "." or ".."
// segments are refused (400), never redirected.
//
// The volume's staging directory (ext.StagingDir) is not served: every
// route answers a path into it 404 not_found, whether spelled or reached
// through a symbolic link on the volume (the volume's ext.ErrHidden), and
// listings leave it out, also of the root listed through a link. A link
// into it is a name of its own: DELETE removes the link.
//
// # Concurrency
//
// A Server is safe for concurrent use; SetShuttingDown may be called from
// a signal handler goroutine.
//
// # Serving
//
// Serve the API with NewHTTPServer on a listener from WrapListener: a GET
// of one range of at most 64 KiB without conditional headers is read
// whole from the page cache before its answer starts (a read error is
// still a JSON 500), and its header and body are then sent in one write
// instead of net/http's two. Its status and headers are ServeContent's for
// the same range. On any other listener the same answers go out as
// net/http writes them.
package api
