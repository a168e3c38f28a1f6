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
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/mpaged/mpaged/alloc"
	"github.com/mpaged/mpaged/api"
	"github.com/mpaged/mpaged/engine"
	"github.com/mpaged/mpaged/fs/ext"
	"github.com/mpaged/mpaged/internal/tool"
	"github.com/mpaged/mpaged/metrics"
	"github.com/mpaged/mpaged/mpage"
)

// daemon is a served volume and everything under and above it.
type daemon struct {
	sf     *serveFlags
	log    *slog.Logger
	path   string
	engCfg engine.Config
	eng    *engine.Engine
	vol    *ext.Volume
	api    *api.Server
	met    *metrics.Metrics
	flush  *mpage.Flusher
	// roReason, when set, is why a writable volume is served read-only
	// (it could not be checked or repaired).
	roReason string
	// handlersLeft: shutdown gave up waiting for requests in flight.
	handlersLeft bool
}

func newDaemon(sf *serveFlags, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{sf: sf, log: log, path: sf.volume}
	d.met = metrics.New(metrics.Options{Version: versionString(), Backend: sf.ring,
		Logf: func(f string, a ...any) { log.Warn(fmt.Sprintf(f, a...)) }})
	cacheBytes, err := sizeFlag("cache", sf.cache, 1<<20)
	if err != nil {
		return nil, err
	}
	maxBody, err := sizeFlag("max-body", sf.maxBody, 1)
	if err != nil {
		return nil, err
	}
	bioBudget, err := sizeFlag("bio-budget", sf.bioBudget, 1)
	if err != nil {
		return nil, err
	}
	rules, err := parseInject(sf.inject)
	if err != nil {
		return nil, err
	}
	token, err := readToken(sf.tokenFile)
	if err != nil {
		return nil, err
	}
	if d.path == "" {
		if d.path, err = ensureDefaultVolume(sf.createSize, log); err != nil {
			return nil, err
		}
	}
	d.engCfg = engine.Config{Path: d.path, Backend: sf.ring, CacheBytes: cacheBytes, Timing: true,
		Bios: alloc.BioSetConfig{BudgetBytes: bioBudget}, WrapRing: wrapFaults(rules, log), Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }}
	if err := d.openChecked(); err != nil {
		return nil, err
	}
	d.api = api.New(api.Config{Volume: d.vol, Token: token, MaxBodyBytes: maxBody, MaxConcurrent: sf.maxConcurrent, IdleTimeout: sf.idleTimeout,
		ReadOnlyReason: d.roReason, Logger: log, Instrument: d.met.Instrument, Metrics: d.met.Handler()})
	ro, _ := d.vol.ReadOnly()
	d.met.SetReadOnly(ro || d.roReason != "")
	d.met.SetClean(d.vol.WasClean())
	return d, nil
}

// readToken reads --token-file: its first line, trimmed.
func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	if tok = strings.TrimSpace(tok); tok == "" {
		return "", fmt.Errorf("--token-file %s: empty", path)
	}
	return tok, nil
}

// ensureDefaultVolume creates ./mpaged-data/volume.img (sparse, a plain
// journaled ext4: a kill is replayed from the journal at the next start,
// no e2fsck) unless it exists.
func ensureDefaultVolume(createSize string, log *slog.Logger) (string, error) {
	path := defaultVolume
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	size, err := sizeFlag("create-size", createSize, 16<<20)
	if err != nil {
		return "", err
	}
	mkfs, err := tool.Look("mke2fs")
	if err != nil {
		return "", fmt.Errorf("creating %s: mke2fs not found: install e2fsprogs (make deps does), or pass --volume", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	tmp := path + ".new"
	f, err := os.Create(tmp)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		var out []byte
		out, err = exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-L", "mpaged", "-E", "nodiscard", tmp).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("mke2fs: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("creating %s: %w", path, err)
	}
	log.Info("created the default volume", "path", path, "size", humanize.IBytes(uint64(size)), "format", "ext4 with a journal", "sparse", true)
	return path, nil
}

// openChecked opens the volume for serving. A writable volume that was
// not cleanly unmounted is checked with e2fsck -p first (--fsck auto), or
// always (--fsck force); one that cannot be repaired, or checked, is
// served read-only with the reason. The volume is held (engine.Open with
// Write) before it is checked, so nobody writes it while e2fsck runs.
func (d *daemon) openChecked() error {
	if d.sf.readOnly {
		return d.openReadOnly("")
	}
	eng, err := engine.Open(d.engineConfig(true))
	if err != nil {
		return err
	}
	if d.sf.fsck == "force" {
		if eng, err = d.fsckHolding(eng, "-pf"); err != nil {
			return d.openReadOnly("e2fsck could not repair it: " + err.Error())
		}
	}
	vol, err := openExtOn(eng, d.path, true, false, d.logf)
	if errors.Is(err, ext.ErrUnclean) {
		if d.sf.fsck == "never" {
			eng.Close()
			return d.openReadOnly("it was not cleanly unmounted and --fsck never forbids checking it (run e2fsck -p)")
		}
		d.log.Warn("the volume was not cleanly unmounted: running e2fsck -p")
		if eng, err = d.fsckHolding(eng, "-p"); err != nil {
			return d.openReadOnly("it was not cleanly unmounted and e2fsck could not repair it: " + err.Error())
		}
		if vol, err = openExtOn(eng, d.path, true, false, d.logf); errors.Is(err, ext.ErrUnclean) {
			eng.Close()
			return d.openReadOnly("it is still marked unclean after e2fsck -p")
		}
	}
	if err != nil {
		eng.Close()
		return err
	}
	return d.adopt(eng, vol, true)
}

// fsckHolding runs e2fsck on the volume eng holds, keeping the hold where
// it can: an image file keeps the engine's lock (e2fsck does not take
// flocks); a block device is let go, since e2fsck opens it O_EXCL itself
// (which keeps other writers out while it runs), and taken again after.
// On error eng is closed.
func (d *daemon) fsckHolding(eng *engine.Engine, flag string) (*engine.Engine, error) {
	if eng.Info.BlockDevice {
		eng.Close()
		if err := d.fsck(flag); err != nil {
			return nil, err
		}
		return engine.Open(d.engineConfig(true))
	}
	err := d.fsck(flag)
	if err == nil && eng.Cache.Stats().Pages != 0 {
		// Blocks read before the check would be stale: start afresh.
		eng.Close()
		return engine.Open(d.engineConfig(true))
	}
	if err != nil {
		eng.Close()
		return nil, err
	}
	return eng, nil
}

// openReadOnly serves the volume read-only; why, if set, is why a
// writable volume is (it could not be checked or repaired).
func (d *daemon) openReadOnly(why string) error {
	if why != "" {
		d.roReason = why
		d.log.Error("serving the volume read-only", "reason", why)
	}
	eng, err := engine.Open(d.engineConfig(false))
	if err != nil {
		return err
	}
	vol, err := openExtOn(eng, d.path, false, true, d.logf)
	if err != nil {
		eng.Close()
		return err
	}
	return d.adopt(eng, vol, false)
}

func (d *daemon) engineConfig(write bool) engine.Config {
	cfg := d.engCfg
	cfg.Write = write
	return cfg
}

func (d *daemon) logf(f string, a ...any) { d.log.Info(fmt.Sprintf(f, a...)) }

// adopt makes eng and vol the daemon's; a writable volume gets background
// writeback and loses what a crash left in its staging directory.
func (d *daemon) adopt(eng *engine.Engine, vol *ext.Volume, write bool) error {
	d.eng, d.vol = eng, vol
	d.met.SetEngine(eng)
	if write {
		if n, err := vol.CleanStaging(); err != nil {
			d.log.Warn("removing staged files left by a crash", "err", err)
		} else if n > 0 {
			d.log.Info("removed staged files a crash left (PUTs that never completed)", "files", n)
		}
		if err := d.startFlusher(); err != nil {
			return errors.Join(err, d.close())
		}
	}
	ro, why := vol.ReadOnly()
	d.log.Info("volume open", "path", d.path, "size", humanize.IBytes(uint64(eng.Info.Size)),
		"block_size", vol.BlockSize(), "read_only", ro || d.roReason != "", "why", why+d.roReason, "ring", eng.Ring.Features().Backend,
		"o_direct", eng.Info.Direct, "cache", humanize.IBytes(uint64(d.engCfg.CacheBytes)))
	return nil
}

// startFlusher starts background writeback: data dirty longer than
// --dirty-expire, or past the background share of the cache, is written
// (with the inodes and metadata that reach it) without waiting for a sync.
func (d *daemon) startFlusher() error {
	fl, err := mpage.NewFlusher(mpage.FlusherConfig{Cache: d.eng.Cache, Interval: d.sf.writebackInterval,
		ExpireAge: d.sf.dirtyExpire, Logf: func(f string, a ...any) { d.log.Warn(fmt.Sprintf(f, a...)) }})
	if err != nil {
		return err
	}
	fl.Start()
	d.flush = fl
	return nil
}

// fsck runs e2fsck with flag on the (closed) volume.
func (d *daemon) fsck(flag string) error {
	e2fsck, err := tool.Look("e2fsck")
	if err != nil {
		return errors.New("e2fsck is not installed (e2fsprogs)")
	}
	cmd := exec.Command(e2fsck, flag, d.path)
	// Should the daemon die mid-check, e2fsck must not go on repairing a
	// volume a restarted daemon may already hold. Pdeathsig follows the
	// thread that forks, so that thread stays put until e2fsck exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	runtime.LockOSThread()
	out, err := cmd.CombinedOutput()
	runtime.UnlockOSThread()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return fmt.Errorf("e2fsck: %w", err)
	}
	d.log.Info("e2fsck "+flag, "exit", code, "output", strings.TrimSpace(string(out)))
	// 1: errors corrected; 2: corrected, reboot advised (a mounted root).
	if code&^3 != 0 {
		return fmt.Errorf("e2fsck %s exited %d: %s", flag, code, strings.TrimSpace(string(out)))
	}
	return nil
}

// run serves until a signal, then shuts down.
func (d *daemon) run(ln net.Listener, sigs <-chan os.Signal, stdout io.Writer) error {
	srv := d.api.NewHTTPServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(api.WrapListener(ln)) }()
	url := urlOf(ln)
	d.met.SetReady(true)
	d.log.Info("serving", "url", url)
	if strings.HasPrefix(url, "http") {
		fmt.Fprintf(stdout, "mpaged: serving %s on %s\n  try: curl %s/v1/files/\n", d.path, url, url)
	} else {
		fmt.Fprintf(stdout, "mpaged: serving %s on %s\n  try: curl --unix-socket %s http://mpaged/v1/files/\n", d.path, url, ln.Addr())
	}
	select {
	case err := <-served:
		return errors.Join(fmt.Errorf("http: %w", err), d.close())
	case sig := <-sigs:
		d.log.Info("signal: shutting down (a second signal exits at once, leaving the volume unclean)", "signal", sig.String())
	}
	go func() {
		sig := <-sigs
		d.log.Error("second signal: exiting now; the volume stays marked unclean", "signal", sig.String())
		os.Exit(1)
	}()
	if err := d.shutdown(srv, d.sf.shutdownTimeout); err != nil {
		return err
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	d.log.Info("stopped cleanly")
	return nil
}

// close stops background writeback (waiting for a pass in progress: the
// volume must not close under it), syncs and closes the volume (marking
// it clean), then the engine.
func (d *daemon) close() error {
	var errs []error
	if d.flush != nil {
		if err := d.flush.Stop(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("background writeback: %w", err))
		}
	}
	if d.vol != nil && d.flush != nil && !d.handlersLeft { // written, and no PUT runs any more
		if _, err := d.vol.CleanStaging(); err != nil {
			errs = append(errs, fmt.Errorf("staging directory: %w", err))
		}
	}
	if d.vol != nil {
		if err := d.vol.Close(); err != nil {
			errs = append(errs, fmt.Errorf("volume: %w", err))
		}
	}
	if d.eng != nil {
		if err := d.eng.Close(); err != nil {
			errs = append(errs, fmt.Errorf("engine: %w", err))
		}
	}
	return errors.Join(errs...)
}
