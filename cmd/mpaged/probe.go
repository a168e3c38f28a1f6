package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/mpaged/mpaged/uring"
)

func runProbe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("probe", "mpaged probe [--ring native|iouring-go|sync]")
	ring := fs.String("ring", "", "ring backend: native, iouring-go or sync (default: native, else sync)")
	operands, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(operands) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, operands)
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
