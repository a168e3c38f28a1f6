package main

import (
	"fmt"
	"io"
)

// catChunk is how much one read asks of the engine: several pages per
// call, so the readahead window, not the copy loop, sizes the I/O.
const catChunk = 1 << 20

// runCat writes the bytes of one or more files of a volume to stdout, in
// order (symbolic links followed).
func runCat(args []string, stdout, stderr io.Writer) (err error) {
	vf, paths, err := parseVolumeArgs("cat", "mpaged cat --volume IMG [--stats] /path...", false, args, stdout)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("%w: a path to print is required", errUsage)
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
	// As coreutils cat does: every file that can be printed is, each
	// one that cannot is reported on stderr, and the exit is 1 if any
	// failed.
	buf := make([]byte, catChunk)
	failed := 0
	for _, p := range paths {
		if err := catFile(ov, p, stdout, buf); err != nil {
			fmt.Fprintf(stderr, "mpaged cat: %v\n", err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d files could not be printed", errReported, failed, len(paths))
	}
	return nil
}

func catFile(ov *openedVolume, p string, stdout io.Writer, buf []byte) error {
	f, err := ov.vol.OpenFile(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyBuffer(stdout, io.NewSectionReader(f, 0, f.Size()), buf); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
