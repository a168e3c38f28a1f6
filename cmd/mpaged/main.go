// Command mpaged serves files of ext2/3/4 volumes through the multipage I/O
// engine, and runs the engine in-process for one-shot commands.
//
// Usage:
//
//	mpaged serve [--volume PATH] [--listen ADDR|unix:PATH] [--cache SIZE] ...
//	mpaged ls|cat --volume IMG [--stats] /path...
//	mpaged put    --volume IMG [--stats] [--force] /path < data
//	mpaged mkdir|rm --volume IMG [--stats] [--force] /path...
//	mpaged demo  [--volume PATH] [--size SIZE] [--ring native|iouring-go|sync]
//	mpaged probe [--ring ...]
//	mpaged bench [--target zram|loop|PATH] [--quick] [flags]
//	mpaged version
//
// serve is the daemon (see package api for its HTTP interface); demo
// writes a pattern through the ring in multipage vectored requests, makes
// it durable, reads it back and checks every byte; probe prints what the
// ring backend found on this kernel. Exit status: 0 ok, 1 failure (one
// line on stderr), 2 usage.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand: it parses its own flags from args.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "serve a volume over HTTP (the daemon)", runServe},
	{"demo", "write, sync and verify a pattern through the ring", runDemo},
	{"probe", "print the ring backend's features on this kernel", runProbe},
	{"ls", "list a directory of an ext2/3/4 volume", runLs},
	{"cat", "print files of an ext2/3/4 volume", runCat},
	{"put", "write stdin to a file of a volume, then sync", runPut},
	{"mkdir", "make directories on a volume", runMkdir},
	{"rm", "remove files and empty directories of a volume", runRm},
	{"bench", "measure the engine against fio on a zram, loop or named device", runBench},
	{"version", "print the version", runVersion},
}

// errUsage marks errors that are the caller's: exit status 2.
var errUsage = errors.New("usage")

// errReported marks a failure whose details the command already printed:
// exit status 1 and nothing more on stderr.
var errReported = errors.New("already reported")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errReported):
			return 1
		case errors.Is(err, errUsage):
			msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
			fmt.Fprintf(stderr, "mpaged %s: %s (mpaged %s --help shows usage)\n", c.name, msg, c.name)
			return 2
		default:
			fmt.Fprintf(stderr, "mpaged %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "mpaged: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mpaged <command> [flags]   (mpaged <command> --help for its flags)")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
}
