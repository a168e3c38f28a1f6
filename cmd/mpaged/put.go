package main

import (
	"fmt"
	"io"
	"os"

	"github.com/mpaged/mpaged/fs/ext"
)

// stdin is what put reads (tests replace it).
var stdin io.Reader = os.Stdin

// runPut writes stdin to a new file of a volume or atomically replaces an
// existing one (its directory must exist), makes it durable, and closes
// the volume clean.
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
	// Atomically: a failure (stdin cut short, a full volume) or a crash
	// leaves the old content, never part of the new.
	if _, _, err := ov.vol.ReplaceFile(p, stdin, 0o644, nil); err != nil {
		return err
	}
	_, err = ov.vol.CleanStaging() // the staging directory, empty now
	return err
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
