package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/mpaged/mpaged/mpage"
	"github.com/mpaged/mpaged/uring"
	"github.com/mpaged/mpaged/uring/faultring"
)

// defaultVolume is the volume serve creates and serves when --volume is
// not given.
var defaultVolume = filepath.Join(defaultDataDir, "volume.img")

// serveFlags are serve's flags.
type serveFlags struct {
	volume, createSize, listen, cache, ring string
	readOnly                                bool
	tokenFile, fsck, logFormat, inject      string
	logLevel, cpuProfile                    string
	maxBody, bioBudget                      string
	maxConcurrent                           int
	shutdownTimeout, idleTimeout            time.Duration
	writebackInterval, dirtyExpire          time.Duration
}

func parseServeFlags(args []string, stdout io.Writer) (*serveFlags, error) {
	fs := newFlags("serve", "mpaged serve [--volume PATH] [--listen ADDR|unix:PATH] [flags]")
	sf := new(serveFlags)
	fs.StringVar(&sf.volume, "volume", "", "ext2/3/4 image file or block device (default: "+defaultVolume+", created if missing: a sparse ext4 with a journal)")
	fs.StringVar(&sf.createSize, "create-size", "1GiB", "size of the default volume when serve creates it (a sparse file)")
	fs.StringVar(&sf.listen, "listen", "127.0.0.1:7070", "address to listen on: host:port or unix:/path/to.sock")
	fs.StringVar(&sf.cache, "cache", "256MiB", "page cache size")
	fs.StringVar(&sf.ring, "ring", "", "ring backend: native, iouring-go or sync (default: sync for a device without nonblocking I/O such as zram, else native, else sync)")
	fs.BoolVar(&sf.readOnly, "read-only", false, "serve the volume read-only (writes answer 503)")
	fs.StringVar(&sf.tokenFile, "token-file", "", "file holding the bearer token /v1 requests must carry (default: none)")
	fs.StringVar(&sf.fsck, "fsck", "auto", "e2fsck -p before serving: auto (when the volume was not cleanly unmounted), never, force (always, with -f)")
	fs.StringVar(&sf.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&sf.logLevel, "log-level", "info", "least severe level logged: debug, info (one line per request), warn or error")
	fs.StringVar(&sf.cpuProfile, "cpuprofile", "", "write a CPU profile of the daemon's whole run to FILE at shutdown (go tool pprof)")
	fs.StringVar(&sf.inject, "inject", "", "fault injection rules for drills, ';'-separated (e.g. op=writev,errno=EIO,count=3); off by default")
	fs.StringVar(&sf.maxBody, "max-body", "64GiB", "largest PUT body")
	fs.StringVar(&sf.bioBudget, "bio-budget", "8MiB", "bytes Bios in flight may be charged (256 a Bio plus 32 a page): a small budget halves Bios and leans on the reserve (drills)")
	fs.DurationVar(&sf.idleTimeout, "idle-timeout", 30*time.Second, "how long a request body or response may stall (and, up to 10 s, how long headers may take) before the client is cut off")
	fs.IntVar(&sf.maxConcurrent, "max-concurrent", 64, "requests served at once; more wait their turn")
	fs.DurationVar(&sf.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may run after SIGTERM")
	fs.DurationVar(&sf.writebackInterval, "writeback-interval", mpage.DefaultFlushInterval, "how often background writeback runs")
	fs.DurationVar(&sf.dirtyExpire, "dirty-expire", mpage.DefaultExpireAge, "data dirty this long is written back in the background (not a durability promise: fsync is)")
	operands, err := fs.parse(args, stdout)
	if err != nil {
		return nil, err
	}
	if len(operands) > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, operands)
	}
	switch sf.fsck {
	case "auto", "never", "force":
	default:
		return nil, fmt.Errorf("%w: --fsck %q: want auto, never or force", errUsage, sf.fsck)
	}
	switch sf.logFormat {
	case "text", "json":
	default:
		return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, sf.logFormat)
	}
	if sf.writebackInterval <= 0 || sf.dirtyExpire <= 0 || sf.shutdownTimeout <= 0 || sf.idleTimeout <= 0 {
		return nil, fmt.Errorf("%w: --writeback-interval, --dirty-expire, --shutdown-timeout and --idle-timeout must be positive", errUsage)
	}
	if _, err := parseLogLevel(sf.logLevel); err != nil {
		return nil, err
	}
	if sf.maxConcurrent < 1 {
		return nil, fmt.Errorf("%w: --max-concurrent %d: want at least 1", errUsage, sf.maxConcurrent)
	}
	return sf, nil
}

// parseLogLevel reads --log-level.
func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, s)
}

func newLogger(format string, level slog.Level, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runServe is `mpaged serve`: it opens (or creates) the volume, checks it,
// serves the API until SIGTERM/SIGINT, then shuts down without losing
// anything acknowledged. A second signal exits at once.
func runServe(args []string, stdout, stderr io.Writer) error {
	sf, err := parseServeFlags(args, stdout)
	if err != nil {
		return err
	}
	level, _ := parseLogLevel(sf.logLevel) // checked by parseServeFlags
	log := newLogger(sf.logFormat, level, stderr)
	if sf.cpuProfile != "" {
		stop, err := startCPUProfile(sf.cpuProfile)
		if err != nil {
			return err
		}
		defer func() {
			if perr := stop(); perr != nil {
				log.Error("cpu profile", "path", sf.cpuProfile, "err", perr)
			}
		}()
	}
	d, err := newDaemon(sf, log)
	if err != nil {
		return err
	}
	ln, err := listen(sf.listen)
	if err != nil {
		d.close()
		return err
	}
	sigs := make(chan os.Signal, 2)
	// SIGHUP too: a daemon whose terminal goes away shuts down cleanly
	// rather than dying with acknowledged data in its cache.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	return d.run(ln, sigs, stdout)
}

// listen opens host:port or unix:/path. A socket file left by a daemon
// that died is replaced; one a live daemon listens on is not.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another process is listening there", addr)
		}
		// Only a socket is replaced: a typo must not delete a file.
		if st, err := os.Lstat(path); err == nil && st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("listen %s: %s exists and is not a socket", addr, path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// urlOf is how clients reach a listener.
func urlOf(ln net.Listener) string {
	if ln.Addr().Network() == "unix" {
		return "unix:" + ln.Addr().String()
	}
	return "http://" + ln.Addr().String()
}

// parseInject reads --inject's ';'-separated fault rules.
func parseInject(spec string) ([]faultring.Rule, error) {
	var rules []faultring.Rule
	for _, s := range strings.Split(spec, ";") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		r, err := faultring.ParseRule(s)
		if err != nil {
			return nil, fmt.Errorf("%w: --inject: %w", errUsage, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// wrapFaults returns the engine's ring wrapper for --inject, or nil.
func wrapFaults(rules []faultring.Rule, log *slog.Logger) func(uring.Ring) uring.Ring {
	if len(rules) == 0 {
		return nil
	}
	return func(r uring.Ring) uring.Ring {
		fr := faultring.New(r, uint64(time.Now().UnixNano()))
		for _, rule := range rules {
			fr.Add(rule)
			log.Warn("FAULT INJECTION ON: I/O errors will be injected on purpose", "rule", fmt.Sprintf("%+v", rule))
		}
		return fr
	}
}

// shutdown takes the daemon down in order: not ready, no new requests,
// in-flight ones finish (up to the timeout), everything dirty is written
// and synced, the volume closed clean.
func (d *daemon) shutdown(srv *http.Server, timeout time.Duration) error {
	d.api.SetShuttingDown()
	d.met.SetReady(false)
	d.log.Info("shutting down: finishing requests in flight", "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http: %w", err))
		srv.Close()
		// Handlers may still run (Close does not wait for them): leave
		// their staged files to the next start's cleanup.
		d.handlersLeft = true
	}
	d.log.Info("writing back and syncing the volume")
	if err := d.close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// startCPUProfile profiles the process into path until stop (the daemon
// stops it as runServe returns: after a clean shutdown or a failed start;
// a second signal's immediate exit loses it).
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// sizeFlag parses a size flag.
func sizeFlag(name, v string, min uint64) (int64, error) {
	n, err := humanize.ParseBytes(v)
	if err != nil || n < min {
		return 0, fmt.Errorf("%w: --%s %q: want a size of at least %s", errUsage, name, v, humanize.IBytes(min))
	}
	return int64(n), nil
}
