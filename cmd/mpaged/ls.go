package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"unicode/utf8"

	"github.com/mpaged/mpaged/fs/ext"
)

// runLs lists a directory of a volume: one line per entry, sorted by name
// (bytewise), "TYPE SIZE NAME" with TYPE as ls -l shows it (- d l c b p s).
// A path naming something else lists that one entry.
func runLs(args []string, stdout, stderr io.Writer) (err error) {
	vf, operands, err := parseVolumeArgs("ls", "mpaged ls --volume IMG [--stats] [/dir]", false, args, stdout)
	if err != nil {
		return err
	}
	p := "/"
	switch len(operands) {
	case 0:
	case 1:
		p = operands[0]
	default:
		return fmt.Errorf("%w: one path at a time (got %d)", errUsage, len(operands))
	}
	ov, err := openExtVolume(vf, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ov.finish(vf, stderr); err == nil && cerr != nil {
			err = cerr
		}
	}()
	v := ov.vol
	w := bufio.NewWriter(stdout)
	fi, err := v.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		lfi, err := v.Lstat(p)
		if err != nil {
			return err
		}
		writeEntry(w, lfi.Type, lfi.Size, path.Base(p))
		return w.Flush()
	}
	// A child that cannot be described (a corrupt inode) is reported on
	// stderr; the others are listed, and the exit status says 1.
	infos, bad := v.ReadDirInfo(p)
	if bad != nil && !childErrors(bad) {
		return bad // the directory itself could not be read
	}
	for _, fi := range infos {
		writeEntry(w, fi.Type, fi.Size, fi.Name)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if bad != nil {
		for _, e := range unjoin(bad) {
			fmt.Fprintf(stderr, "mpaged ls: %v\n", e)
		}
		return errReported
	}
	return nil
}

// childErrors reports whether err only describes entries ReadDirInfo
// could not stat.
func childErrors(err error) bool {
	for _, e := range unjoin(err) {
		var pe *fs.PathError
		if !errors.As(e, &pe) || pe.Op != "stat" {
			return false
		}
	}
	return true
}

// unjoin lists the errors inside an errors.Join, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// writeEntry prints one listing line. Names with control characters or
// invalid UTF-8 are quoted, so every entry stays on one line.
func writeEntry(w io.Writer, t ext.FileType, size int64, name string) {
	if !printable(name) {
		name = strconv.Quote(name)
	}
	fmt.Fprintf(w, "%c %12d %s\n", t.Letter(), size, name)
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
