package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/mpaged/mpaged/fs/ext"
)

// stdin is what put reads (tests replace it).
var stdin io.Reader = os.Stdin

// putChunk is how much one WriteAt hands the engine.
const putChunk = 1 << 20

// runPut writes stdin to a new or replaced file of a volume (its directory
// must exist), syncs it, and closes the volume clean.
func runPut(args []string, stdout, stderr io.Writer) (err error) {
	vf, operands, err := parseVolumeArgs("put", "mpaged put --volume IMG [--stats] [--force] /path < data", true, args, stdout)
	if err != nil {
		return err
	}
	if len(operands) != 1 {
		return fmt.Errorf("%w: one path to write is required (got %d)", errUsage, len(operands))
	}
	p := operands[0]
	ov, err := openExtVolumeRW(vf, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ov.finish(vf, stderr); err == nil && cerr != nil {
			err = cerr
		}
	}()
	f, err := ov.vol.OpenWrite(p, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, putChunk)
	var off int64
	for {
		n, rerr := io.ReadFull(stdin, buf)
		if n > 0 {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			off += int64(n)
		}
		if rerr == io.EOF || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%s: reading stdin: %w", p, rerr)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: sync: %w", p, err)
	}
	return nil
}

// runMkdir makes each directory (parents must exist).
func runMkdir(args []string, stdout, stderr io.Writer) error {
	return runNameOp("mkdir", "make directories (parents must exist)", args, stdout, stderr,
		func(v *ext.Volume, p string) error { return v.Mkdir(p, 0o755) })
}

// runRm removes each file, or directory if it is empty.
func runRm(args []string, stdout, stderr io.Writer) error {
	return runNameOp("rm", "remove files and empty directories", args, stdout, stderr,
		func(v *ext.Volume, p string) error {
			fi, err := v.Lstat(p)
			if err != nil {
				return err
			}
			if fi.IsDir() {
				return v.Rmdir(p)
			}
			return v.Unlink(p)
		})
}

// runNameOp runs fn on each path of a volume opened for writing, then
// closes it (sync, clean).
func runNameOp(name, what string, args []string, stdout, stderr io.Writer, fn func(v *ext.Volume, p string) error) (err error) {
	vf, paths, err := parseVolumeArgs(name, fmt.Sprintf("mpaged %s --volume IMG [--stats] [--force] /path...: %s", name, what), true, args, stdout)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("%w: a path is required", errUsage)
	}
	ov, err := openExtVolumeRW(vf, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ov.finish(vf, stderr); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for _, p := range paths {
		if err := fn(ov.vol, p); err != nil {
			return err
		}
	}
	return nil
}
