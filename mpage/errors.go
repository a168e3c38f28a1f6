package mpage

import "errors"

var (
	// ErrClosed is returned once the mapping or device has been closed.
	ErrClosed = errors.New("mpage: closed")
	// ErrRange is returned for offsets or lengths outside what a mapping
	// can hold.
	ErrRange = errors.New("mpage: offset out of range")
	// ErrNoFrames means the page cache could not get memory for a page,
	// even after evicting every clean page it could.
	ErrNoFrames = errors.New("mpage: page cache full")
	// ErrConfused is returned by WritePage when the page cannot go into a
	// multipage Bio and the caller asked for no per-block fallback (the
	// seed's mpage_writepage returning -EAGAIN).
	ErrConfused = errors.New("mpage: page needs the per-block path")
	// ErrShortRead means the device returned fewer bytes than a Bio asked
	// for: the region lies past the end of the device.
	ErrShortRead = errors.New("mpage: short read from device")
	// ErrFlusherAttached is returned by NewFlusher when the cache already
	// has a Flusher that has not been stopped.
	ErrFlusherAttached = errors.New("mpage: the cache already has a flusher")
	// ErrUnmapped is a mapper's answer without Mapped to a Create call:
	// it neither allocated the block nor failed. It comes wrapped in a
	// MapError.
	ErrUnmapped = errors.New("mpage: mapper left a block unmapped on create")
	// ErrBusy is returned by Reader.Start when the Reader has as many
	// reads in flight as it can keep.
	ErrBusy = errors.New("mpage: busy")
)
