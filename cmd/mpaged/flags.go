package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// cmdFlags is one command's flag set. It prints nothing itself: a bad
// flag becomes one line from run (exit 2), and -h or --help prints the
// usage to stdout (exit 0).
type cmdFlags struct {
	*flag.FlagSet
	usage string
}

func newFlags(name, usage string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, usage: usage}
}

// parse parses flags wherever they appear among the arguments (Go's flag
// package stops at the first operand; "ls /dir --stats" should work) and
// returns the operands; "--" ends the flags.
func (c *cmdFlags) parse(args []string, stdout io.Writer) ([]string, error) {
	var operands []string
	for {
		if err := c.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printUsage(stdout)
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		args = c.Args()
		if len(args) == 0 {
			return operands, nil
		}
		if args[0] == "--" {
			return append(operands, args[1:]...), nil
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
}

func (c *cmdFlags) printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: "+c.usage)
	c.SetOutput(w)
	c.PrintDefaults()
	c.SetOutput(io.Discard)
}
