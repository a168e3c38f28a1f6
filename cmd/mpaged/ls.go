package main

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strconv"
	"unicode/utf8"

	"github.com/mpaged/mpaged/fs/ext"
)

// runLs lists a directory of a volume: one line per entry, sorted by name
// (bytewise), "TYPE SIZE NAME" with TYPE as ls -l shows it (- d l c b p s).
// A path naming something else lists that one entry.
func runLs(args []string, stdout, stderr io.Writer) (err error) {
	vf, operands, err := parseVolumeArgs("ls", "mpaged ls --volume IMG [--stats] [/dir]", args, stdout)
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
	ents, err := v.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		efi, err := v.StatInode(e.Inode, e.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", path.Join(p, e.Name), err)
		}
		writeEntry(w, efi.Type, efi.Size, e.Name)
	}
	return w.Flush()
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
