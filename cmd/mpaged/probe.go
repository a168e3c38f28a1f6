package main

import (
	"encoding/json"
	"flag"
	"io"

	"github.com/mpaged/mpaged/uring"
)

func runProbe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ring := fs.String("ring", "", "ring backend: native, iouring-go or sync (default: native, else sync)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := openRing(*ring, uring.Options{}, stderr)
	if err != nil {
		return err
	}
	defer r.Close()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(r.Features())
}
