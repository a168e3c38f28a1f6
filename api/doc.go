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
//	PUT      /v1/files/{path}   create or replace atomically; ?offset=N
//	                            writes in place; ?sync=1 is durable first
//	DELETE   /v1/files/{path}   unlink a file or an empty directory
//	POST     /v1/mkdir/{path}   make a directory (?parents=1: and parents)
//	POST     /v1/fsync/{path}   data and metadata of a file on the device
//	POST     /v1/sync           everything on the device
//	GET      /healthz, /readyz  liveness; readiness (503 while shutting down)
//
// # Guarantees
//
// A PUT without ?offset writes the body to a temporary file in the target's
// directory, makes it durable, and only then renames it over the target:
// a client that disconnects mid-body, a full volume or a crash leave the
// old content (the temporary file is removed on error; after a crash a
// ".mpaged-put.*" file may remain). With ?sync=1 the rename itself is
// durable before the answer. POST /v1/fsync and /v1/sync answer 200 only
// once the data and the metadata that reaches it are on the device; a
// write-back error is reported (500 naming the errno, 507 for ENOSPC) by
// every fsync until a later write-back succeeds.
//
// # Errors and limits
//
// Every error is JSON, {"error": "...", "code": "..."}, with its status:
// 400 bad path or parameter, 401 missing or wrong token, 404, 405 (with
// Allow), 409 (exists, not a directory, directory not empty, missing
// parent), 411 PUT without a length, 412 failed precondition, 413 body over
// the limit, 416 unsatisfiable range, 500 EIO (code "EIO"), 503 shutting
// down, read-only volume or too busy, 507 ENOSPC (code "ENOSPC"). Bodies
// stream in chunks under an idle deadline that each chunk renews, so a
// stalled client is cut off; requests beyond MaxConcurrent wait their turn
// (up to QueueTimeout), so slow clients cannot pin memory or page frames.
//
// # Concurrency
//
// A Server is safe for concurrent use; SetShuttingDown may be called from
// a signal handler goroutine.
package api
