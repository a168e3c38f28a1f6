package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nginxRunner is Debian's nginx as a separate process, with a config of
// the bench's own in a temporary directory (no system config, no path
// outside it), serving the bench file from a read-only kernel mount of the
// target. One nginx serves every run of the bench; it starts at the first
// HTTP run (the volume exists from then on) and Teardown stops it and
// unmounts. A cold run first drops the file's pages from the kernel's page
// cache (posix_fadvise DONTNEED on the file in the mount, not a
// machine-wide drop_caches); a warm one GETs the file once.
type nginxRunner struct {
	env   *Env
	nginx string
	dir   string // prefix: config, pid, logs, temp paths, the mount point
	mnt   string
	// mounted: mnt holds the volume; loop: a read-only loop device the
	// bench attached (a target that is a file).
	mounted bool
	loop    string
	proc    *serverProc
	url     string
	vol     *httpVolume
}

func (r *nginxRunner) Name() string            { return runnerHTTPNginx }
func (r *nginxRunner) Applies(w Workload) bool { return w.HTTP != nil }
func (r *nginxRunner) servesHTTP()             {}

// Setup finds nginx, makes the prefix directory and has nginx check a
// config there (nginx -t), so a missing or broken nginx shows before the
// runs start.
func (r *nginxRunner) Setup(ctx context.Context, env *Env) error {
	r.env = env
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: %s: mounting the volume needs root", ErrUnavailable, r.Name())
	}
	p, err := lookTool("nginx")
	if err != nil {
		return fmt.Errorf("%s: %w (make deps installs it)", r.Name(), err)
	}
	r.nginx = p
	if r.dir, err = os.MkdirTemp(env.TempDir, "mpaged-bench-nginx-"); err != nil {
		return fmt.Errorf("%s: %w", r.Name(), err)
	}
	r.mnt = filepath.Join(r.dir, "mnt")
	if err := os.Mkdir(r.mnt, 0o755); err != nil {
		return fmt.Errorf("%s: %w", r.Name(), err)
	}
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("%s: %w", r.Name(), err)
	}
	conf, err := r.writeConfig(port)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, r.nginx, r.args(conf, "-t")...).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s: nginx -t: %v: %s", ErrUnavailable, r.Name(), err, tail(string(out)))
	}
	return nil
}

// args are nginx's command line: everything under the prefix, the error
// log too from the first moment (-e; the build's default is stderr or
// /var/log).
func (r *nginxRunner) args(conf string, extra ...string) []string {
	return append([]string{"-p", r.dir + "/", "-c", conf, "-e", filepath.Join(r.dir, "error.log")}, extra...)
}

// nginxConfig is the bench's nginx configuration. nginx at its best for
// static files: sendfile from the page cache, tcp_nopush, an open file
// cache, no access log, as many workers as CPUs (the daemon's GOMAXPROCS),
// keep-alive without a request limit. The workers run as root, as the
// bench does: the prefix may sit under directories only root may enter
// (a test's temporary directory), and the user does not change the I/O.
var nginxConfig = template.Must(template.New("nginx.conf").Parse(`# mpaged bench: nginx serving the bench file from a read-only kernel mount.
daemon off;
master_process on;
worker_processes auto;
user root;
pid {{.Dir}}/nginx.pid;
lock_file {{.Dir}}/nginx.lock;
error_log {{.Dir}}/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    open_file_cache max=1000 inactive=120s;
    open_file_cache_valid 120s;
    types { }
    default_type application/octet-stream;
    client_body_temp_path {{.Dir}}/tmp/body;
    proxy_temp_path {{.Dir}}/tmp/proxy;
    fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
    uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
    scgi_temp_path {{.Dir}}/tmp/scgi;

    server {
        listen 127.0.0.1:{{.Port}};
        # The daemon's URL layout, so the load generator asks both the same.
        location /v1/files/ {
            alias {{.Mnt}}/;
        }
    }
}
`))

// writeConfig writes the config for port and returns its path.
func (r *nginxRunner) writeConfig(port int) (string, error) {
	if err := os.MkdirAll(filepath.Join(r.dir, "tmp"), 0o755); err != nil {
		return "", fmt.Errorf("%s: %w", r.Name(), err)
	}
	var b strings.Builder
	if err := nginxConfig.Execute(&b, struct {
		Dir, Mnt string
		Port     int
	}{r.dir, r.mnt, port}); err != nil {
		return "", err
	}
	conf := filepath.Join(r.dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("%s: %w", r.Name(), err)
	}
	return conf, nil
}

// start mounts the volume read-only and starts nginx on it, once.
func (r *nginxRunner) start(ctx context.Context) error {
	if r.proc != nil {
		if r.proc.exited() {
			return r.proc.exitError()
		}
		return nil
	}
	vol, err := r.env.httpVolume(ctx)
	if err != nil {
		return err
	}
	r.vol = vol
	if err := r.mount(vol.Dev); err != nil {
		return err
	}
	// The port was free when picked; another process may take it before
	// nginx binds it (nginx then exits), so try a few.
	for attempt := 0; ; attempt++ {
		retry, err := r.launch(ctx)
		if err == nil {
			break
		}
		if !retry || attempt == 2 || ctx.Err() != nil {
			return err
		}
	}
	// The kernel's first read of the file after the mount is no cold GET
	// like the others: on a VM it costs several times their CPU (dd: 1.3 s
	// of system time for 1 GiB where later cold reads take 0.17 s; 0.45 s
	// after 3 GiB of memory was touched beforehand: mostly the host
	// faulting in guest memory the page cache had never used). One untimed
	// GET takes it out of the runs; each cold run drops the pages again.
	if _, err := newLoadGen(serverUnderTest{url: r.url, file: &vol.File}.fileURL(), &vol.File).getWhole(ctx, Hooks{}); err != nil {
		return fmt.Errorf("%s: first read: %w", r.Name(), err)
	}
	return nil
}

// mount mounts dev (or a read-only loop device over it, for a file) at
// r.mnt read-only.
func (r *nginxRunner) mount(dev string) error {
	if _, ok := deviceReadBytes(dev); !ok {
		losetup, err := lookTool("losetup")
		if err != nil {
			return fmt.Errorf("%s: %s is a file: %w", r.Name(), dev, err)
		}
		out, err := exec.Command(losetup, "--find", "--show", "--read-only", "--direct-io=on", dev).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s: losetup %s: %v: %s", ErrRunner, r.Name(), dev, err, strings.TrimSpace(string(out)))
		}
		r.loop = strings.TrimSpace(string(out))
		dev = r.loop
	}
	if err := unix.Mount(dev, r.mnt, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("%w: %s: mount -o ro %s %s: %v", ErrRunner, r.Name(), dev, r.mnt, err)
	}
	r.mounted = true
	return nil
}

// launch writes the config for a fresh port, starts nginx, and waits
// until it answers a HEAD of the file. retry: nginx exited (its port may
// have been taken).
func (r *nginxRunner) launch(ctx context.Context) (retry bool, err error) {
	port, err := freePort()
	if err != nil {
		return false, err
	}
	conf, err := r.writeConfig(port)
	if err != nil {
		return false, err
	}
	_ = os.Truncate(filepath.Join(r.dir, "error.log"), 0)
	p, err := startServer("nginx", r.nginx, r.args(conf), nil)
	if err != nil {
		return false, err
	}
	r.url = "http://127.0.0.1:" + strconv.Itoa(port)
	s := serverUnderTest{url: r.url, file: &r.vol.File}
	if err := waitHTTP(ctx, p, s.fileURL()); err != nil {
		log, _ := os.ReadFile(filepath.Join(r.dir, "error.log"))
		retry = p.exited()
		return retry, errors.Join(fmt.Errorf("%s: %w: %s", r.Name(), err, tail(string(log))), p.stop(syscall.SIGKILL, time.Second))
	}
	r.proc = p
	return false, nil
}

// waitHTTP polls url with HEAD until it answers 200 (another answer is an
// error at once), p exits, or 10 s pass.
func waitHTTP(ctx context.Context, p *serverProc, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			return fmt.Errorf("%w: HEAD %s: %s", ErrRunner, url, resp.Status)
		}
		switch {
		case p.exited():
			return p.exitError()
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("%w: not serving after 10s: %v", ErrRunner, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *nginxRunner) Run(ctx context.Context, w Workload) (Result, error) {
	return r.run(ctx, w, nil)
}

// run is Run with a Visit hook (tests).
func (r *nginxRunner) run(ctx context.Context, w Workload, visit func(int64, []byte)) (Result, error) {
	if err := r.start(ctx); err != nil {
		return Result{}, err
	}
	var cached int64
	if !w.HTTP.Warm {
		var err error
		if cached, err = dropPageCache(filepath.Join(r.mnt, r.vol.File.Name)); err != nil {
			return Result{}, fmt.Errorf("%s: %w", r.Name(), err)
		}
	}
	res, err := measureServer(ctx, w, serverUnderTest{name: r.Name(), url: r.url, pid: r.proc.pid(), dev: r.vol.Dev, file: &r.vol.File}, visit)
	if err != nil {
		return Result{}, err
	}
	res.HTTP.CachedAtStartBytes = cached
	return res, nil
}

// dropPageCache drops path's pages from the kernel's page cache (only
// that file's: the machine's other caches stay) and returns how many bytes
// of it mincore still finds resident. DONTNEED skips pages something still
// holds: most likely socket buffers of earlier sends over loopback, which
// the kernel frees lazily (on the allocating CPU's next network receive);
// some go within milliseconds, so it repeats a few times. What stays is
// reported with the run (HTTPCounters.CachedAtStartBytes).
func dropPageCache(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mmap %s: %w", path, err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (st.Size()+page-1)/page)
	var resident int64
	for range 20 {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return 0, fmt.Errorf("posix_fadvise %s DONTNEED: %w", path, err)
		}
		if err := mincore(m, vec); err != nil {
			return 0, fmt.Errorf("mincore %s: %w", path, err)
		}
		resident = 0
		for _, v := range vec {
			resident += int64(v & 1)
		}
		if resident == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return resident * page, nil
}

// mincore sets vec[i]&1 for each page of the mapping b that is resident
// (x/sys has no wrapper for it on Linux).
func mincore(b, vec []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// Teardown stops nginx (graceful, then the whole group killed), unmounts
// the volume, detaches a loop device it attached and removes the prefix.
// It runs also after a failed Setup or run, and on Ctrl-C.
func (r *nginxRunner) Teardown() error {
	var errs []error
	if r.proc != nil {
		errs = append(errs, r.proc.stop(syscall.SIGQUIT, 10*time.Second))
		r.proc = nil
	}
	if r.mounted {
		if err := unmountRetry(r.mnt); err != nil {
			errs = append(errs, err)
		} else {
			r.mounted = false
		}
	}
	if r.loop != "" && !r.mounted {
		if losetup, err := lookTool("losetup"); err == nil {
			errs = append(errs, detachLoop(losetup, r.loop))
		}
		r.loop = ""
	}
	if r.dir != "" && !r.mounted {
		errs = append(errs, os.RemoveAll(r.dir))
		r.dir = ""
	}
	return errors.Join(errs...)
}

// unmountRetry unmounts dir, retrying while the kernel says it is busy (a
// worker's open file closing a moment after its exit).
func unmountRetry(dir string) error {
	var err error
	for i := range 50 {
		if err = unix.Unmount(dir, 0); err == nil || errors.Is(err, unix.EINVAL) {
			return nil // EINVAL: not mounted
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
	return fmt.Errorf("%s: unmount %s: %w", runnerHTTPNginx, dir, err)
}
