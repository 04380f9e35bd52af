package deno

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

// InstallDir is where scripts/install-deno.sh puts Deno; DefaultDenoPath
// is the stable link it makes there.
const (
	InstallDir      = "/opt/codebeaker/deno"
	DefaultDenoPath = InstallDir + "/bin/deno"
)

// killGrace is how long output may keep flowing after a kill before the
// pipes are cut.
const killGrace = 5 * time.Second

// Options configure a Runtime. Zero values are looked up or defaulted.
type Options struct {
	DenoPath    string // default: deno on the PATH, then DefaultDenoPath
	BwrapPath   string // default: bwrap on the PATH, then /usr/bin/bwrap
	SetprivPath string // default: setpriv on the PATH, then /usr/bin/setpriv
	// CgroupRoot is where the cgroup hierarchies are mounted (default
	// /sys/fs/cgroup); CgroupParent the folder in them that holds the
	// session cgroups (default "codebeaker").
	CgroupRoot   string
	CgroupParent string
	// NoCgroup limits memory with V8's heap flag only, as when no cgroup
	// can be made.
	NoCgroup bool
}

// Runtime runs Deno sessions: no container, a fresh bubblewrap jail for
// each command. See the package comment.
type Runtime struct {
	opts      Options
	cg        *cgroups // nil: memory is limited by V8's heap flag only
	cgroupErr error    // why cg is nil

	// allowAllForTests replaces the session's permission flags by -A.
	// Tests set it to run the behaviour suite's programs that start
	// processes and read /proc (Deno asks for every permission for both).
	allowAllForTests bool
}

// New makes a runtime. It never fails for a missing Deno or bubblewrap:
// Health says what is missing and Create refuses until it is installed.
func New(opts Options) *Runtime {
	if opts.CgroupRoot == "" {
		opts.CgroupRoot = "/sys/fs/cgroup"
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "codebeaker"
	}
	r := &Runtime{opts: opts}
	if opts.NoCgroup {
		r.cgroupErr = errors.New("cgroups are turned off in the options")
	} else {
		r.cg, r.cgroupErr = findCgroups(opts.CgroupRoot, opts.CgroupParent)
	}
	return r
}

// tools are the programs a jail needs, found.
type tools struct {
	deno, bwrap, setpriv string
}

const installHint = "run scripts/install-deno.sh"

// findTools looks the programs up on each call, so that installing them
// while the server runs is enough.
func (r *Runtime) findTools() (tools, error) {
	var t tools
	var missing []string
	find := func(given, name string, fallbacks ...string) string {
		if given != "" {
			if isExecutable(given) {
				return given
			}
			missing = append(missing, fmt.Sprintf("%s (not executable at %s)", name, given))
			return ""
		}
		if p, err := exec.LookPath(name); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
		}
		for _, p := range fallbacks {
			if isExecutable(p) {
				return p
			}
		}
		missing = append(missing, fmt.Sprintf("%s (not on the PATH nor at %s)", name, strings.Join(fallbacks, " or ")))
		return ""
	}
	t.deno = find(r.opts.DenoPath, "deno", DefaultDenoPath)
	t.bwrap = find(r.opts.BwrapPath, "bwrap", "/usr/bin/bwrap")
	if privileged() {
		t.setpriv = find(r.opts.SetprivPath, "setpriv", "/usr/bin/setpriv")
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("deno sessions need Deno and bubblewrap; missing: %s: %s", strings.Join(missing, ", "), installHint)
	}
	return t, nil
}

func isExecutable(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// privileged reports whether the server runs as root: then bwrap builds the
// jail as root and setpriv drops to the sandbox user inside it; otherwise
// bwrap runs unprivileged in a user namespace, as the server's own user.
func privileged() bool { return os.Geteuid() == 0 }

// MemoryLimit says how memoryLimitMB is enforced on this host.
func (r *Runtime) MemoryLimit() string {
	if r.cg != nil {
		return r.cg.describe()
	}
	return fmt.Sprintf("V8 heap limit only (--max-old-space-size), because no cgroup can be made: %v", r.cgroupErr)
}

// Health reports whether Deno and bubblewrap are present, and, when memory
// limits fall back to V8's heap flag, says so.
func (r *Runtime) Health(ctx context.Context) sandbox.Health {
	if _, err := r.findTools(); err != nil {
		return sandbox.Health{Error: err.Error()}
	}
	h := sandbox.Health{Available: true}
	if r.cg == nil {
		h.Error = "memory limits are weak: " + r.MemoryLimit()
	}
	return h
}

var safeSessionID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// cacheDir is the session's DENO_DIR on the host: beside the workspace, not
// in it (file commands and listings do not see it), derived from the
// workspace alone, so that a sandbox made again for the same session after
// a restart finds it.
func cacheDir(workspace string) string {
	return filepath.Clean(workspace) + ".deno-cache"
}

// Create makes a session's sandbox: its DENO_DIR and its cgroup. Nothing
// runs until Exec. It works again on the same spec (after a restart).
func (r *Runtime) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	t, err := r.findTools()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
	}
	if !safeSessionID.MatchString(spec.SessionID) {
		return nil, fmt.Errorf("deno: session id %q cannot name a cgroup", spec.SessionID)
	}
	if !filepath.IsAbs(spec.Workspace) {
		return nil, fmt.Errorf("deno: workspace %q is not an absolute path", spec.Workspace)
	}
	if info, err := os.Stat(spec.Workspace); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("deno: workspace %s is not a folder: %v", spec.Workspace, err)
	}
	for _, list := range [][]string{spec.Permissions.Read, spec.Permissions.Write, spec.Permissions.Net, spec.Permissions.Env} {
		for _, item := range list {
			if item == "" || strings.ContainsAny(item, ",\x00") {
				return nil, fmt.Errorf("deno: permission entry %q cannot be passed to Deno (empty, or holds a comma)", item)
			}
		}
	}
	s := &Sandbox{
		rt:      r,
		tools:   t,
		spec:    spec,
		grants:  newGrants(spec.Permissions),
		cache:   cacheDir(spec.Workspace),
		running: map[*exec.Cmd]struct{}{},
	}
	if err := os.MkdirAll(s.cache, 0o700); err != nil {
		return nil, fmt.Errorf("deno: make the session's Deno cache: %w", err)
	}
	if privileged() {
		if err := os.Lchown(s.cache, sandbox.UID, sandbox.GID); err != nil {
			os.RemoveAll(s.cache)
			return nil, fmt.Errorf("deno: give the Deno cache to the sandbox user: %w", err)
		}
	}
	if r.cg != nil {
		s.cg, err = r.cg.make(spec.SessionID, spec.MemoryLimitMB, spec.CPUShares, spec.PidsLimit)
		if err != nil {
			os.RemoveAll(s.cache)
			return nil, fmt.Errorf("%w: deno: make the session's cgroup: %v", sandbox.ErrUnavailable, err)
		}
	}
	return s, nil
}

// Discard frees what sandboxes made for spec hold between commands (the
// cgroup and the Deno cache) without making one: for a session closed by a
// server process that never took its sandbox back after a restart. It
// needs neither Deno nor bubblewrap, and leaves the workspace to the
// caller.
func (r *Runtime) Discard(ctx context.Context, spec sandbox.Spec) error {
	var errs []error
	if r.cg != nil && safeSessionID.MatchString(spec.SessionID) {
		errs = append(errs, r.cg.discard(spec.SessionID))
	}
	if err := sandbox.RemoveTree(cacheDir(spec.Workspace)); err != nil {
		errs = append(errs, fmt.Errorf("deno: remove the Deno cache: %w", err))
	}
	return errors.Join(errs...)
}

// Sandbox is one Deno session: a workspace, a Deno cache, a cgroup, and the
// jails of the commands running now.
type Sandbox struct {
	rt     *Runtime
	tools  tools
	spec   sandbox.Spec
	grants grants
	cache  string
	cg     *cgroup // nil without cgroups

	mu      sync.Mutex
	closed  bool
	running map[*exec.Cmd]struct{}
}

// ID is empty: a Deno session has no container.
func (s *Sandbox) ID() string { return "" }

// Close kills running commands and removes the cgroup and the Deno cache.
// It is idempotent.
func (s *Sandbox) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for cmd := range s.running {
		killGroup(cmd)
	}
	s.mu.Unlock()
	var errs []error
	if s.cg != nil {
		errs = append(errs, s.cg.remove())
	}
	if err := sandbox.RemoveTree(s.cache); err != nil {
		errs = append(errs, fmt.Errorf("deno: remove the Deno cache: %w", err))
	}
	return errors.Join(errs...)
}

// killGroup SIGKILLs the process group of a started command: the wrapper
// or bwrap, and bwrap's init in the jail, whose death ends the jail's pid
// namespace and so every process in it.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Exec runs one command in a fresh jail.
func (s *Sandbox) Exec(ctx context.Context, p sandbox.Process) (sandbox.Result, error) {
	start := time.Now()
	var res sandbox.Result
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("deno: command cancelled before it started: %w", err)
	}
	pol := policy{grants: s.grants, extra: s.extraFlags(), allowAll: s.rt.allowAllForTests}
	var err error
	if !s.grants[kindNet].none() {
		if pol.hostAddrs, err = hostAddrs(); err != nil {
			return res, err
		}
	}
	argv, err := denoArgs(p.Args, pol)
	if err != nil {
		return res, err
	}
	if err := checkEnv(p.Env); err != nil {
		return res, err
	}
	dir := p.Dir
	if dir == "" {
		dir = sandbox.WorkspaceDir
	}
	if strings.ContainsRune(dir, 0) {
		return res, fmt.Errorf("%w: the working directory holds a NUL byte", sandbox.ErrCannotStart)
	}
	if dir != sandbox.WorkspaceDir && !strings.HasPrefix(dir, sandbox.WorkspaceDir+"/") {
		return res, fmt.Errorf("%w: working directory %s is outside %s", sandbox.ErrCannotStart, dir, sandbox.WorkspaceDir)
	}

	cmd, release, err := s.command(p, dir, argv)
	if err != nil {
		return res, err
	}
	stdout := &sandbox.CappedBuffer{Limit: p.OutputLimit}
	stderr := &sandbox.CappedBuffer{Limit: p.OutputLimit}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if len(p.Stdin) > 0 {
		cmd.Stdin = bytes.NewReader(p.Stdin)
	}
	cmd.WaitDelay = killGrace

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		release(false)
		return res, errors.New("deno: the sandbox is closed")
	}
	if err := s.present(); err != nil {
		s.mu.Unlock()
		release(false)
		return res, err
	}
	var oomBefore int64
	if s.cg != nil {
		oomBefore = s.cg.oomKills()
	}
	err = cmd.Start()
	if err == nil {
		s.running[cmd] = struct{}{}
	}
	s.mu.Unlock()
	if err != nil {
		release(false)
		return res, fmt.Errorf("deno: start bwrap: %w", err)
	}
	defer func() {
		s.mu.Lock()
		delete(s.running, cmd)
		s.mu.Unlock()
	}()
	if err := release(true); err != nil {
		killGroup(cmd)
		cmd.Wait()
		return res, err
	}

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var timeout <-chan time.Time
	if p.Timeout > 0 {
		t := time.NewTimer(p.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	killed := false
	select {
	case err = <-waited:
	case <-timeout:
		res.TimedOut, killed = true, true
	case <-ctx.Done():
		killed = true
	}
	if killed {
		killGroup(cmd)
		if s.cg != nil {
			s.cg.killAll()
		}
		err = <-waited
	}
	res.Duration = time.Since(start)
	res.Stdout, res.StdoutBytes, res.StdoutTruncated = stdout.Bytes(), stdout.Total(), stdout.Truncated()
	res.Stderr, res.StderrBytes, res.StderrTruncated = stderr.Bytes(), stderr.Total(), stderr.Truncated()

	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) {
		return res, fmt.Errorf("deno: wait for the command: %w", err)
	}
	res.ExitCode = exitCode(cmd.ProcessState)
	if killed {
		if !res.TimedOut {
			return res, fmt.Errorf("deno: command cancelled: %w", ctx.Err())
		}
		return res, nil
	}
	if s.isClosed() {
		return res, errors.New("deno: the sandbox was closed while the command ran")
	}
	if msg, ok := setupFailure(res); ok {
		return res, fmt.Errorf("%w: deno: the jail could not be set up: %s", sandbox.ErrUnavailable, msg)
	}
	switch {
	case s.cg != nil && s.cg.oomKills() > oomBefore:
		res.OOMKilled = true
	case v8OutOfMemory(res):
		res.OOMKilled = true
	}
	return res, nil
}

// hostAddrs are the addresses of the host's own interfaces but loopback
// (denied whole): services bound to every address answer on them.
func hostAddrs() ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("deno: list the host's addresses: %w", err)
	}
	var out []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		switch {
		case !ok || ipn.IP.IsLoopback():
		case ipn.IP.To4() != nil:
			out = append(out, ipn.IP.To4().String())
		default:
			out = append(out, "["+ipn.IP.String()+"]")
		}
	}
	return out, nil
}

// present fails with sandbox.ErrGone when what Create made was removed
// behind the sandbox's back: the command has not started, and Create on
// the same spec makes it again.
func (s *Sandbox) present() error {
	dirs := []string{s.cache}
	if s.cg != nil {
		for _, d := range s.cg.dirs {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: deno: %s was removed", sandbox.ErrGone, d)
		}
	}
	return nil
}

func (s *Sandbox) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// extraFlags are Deno flags the session adds to commands that run code:
// the heap limit when no cgroup holds memory.
func (s *Sandbox) extraFlags() []string {
	if s.cg == nil && s.spec.MemoryLimitMB > 0 {
		return []string{"--v8-flags=--max-old-space-size=" + strconv.Itoa(s.spec.MemoryLimitMB)}
	}
	return nil
}

// command builds the process that starts the jail. release, called once
// the process has started (or with false when it will not be), puts it in
// the session's cgroup and lets it go on.
func (s *Sandbox) command(p sandbox.Process, dir string, argv []string) (*exec.Cmd, func(started bool) error, error) {
	args := s.jailArgs(p, dir, argv)
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	noop := func(bool) error { return nil }
	switch {
	case s.cg == nil:
		cmd := exec.Command(s.tools.bwrap, args...)
		cmd.SysProcAttr = attr
		return cmd, noop, nil

	case s.cg.v2:
		// clone3(CLONE_INTO_CGROUP): the process starts in the cgroup.
		fd, err := os.Open(s.cg.dir())
		if err != nil {
			return nil, nil, fmt.Errorf("deno: open the session's cgroup: %w", err)
		}
		attr.UseCgroupFD, attr.CgroupFD = true, int(fd.Fd())
		cmd := exec.Command(s.tools.bwrap, args...)
		cmd.SysProcAttr = attr
		return cmd, func(bool) error { return fd.Close() }, nil
	}

	// cgroup v1 has no way to start a process inside a cgroup. A shell
	// waits on a pipe before it becomes bwrap; the server moves it into
	// the cgroup meanwhile, so nothing of the command runs outside.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", `read -r _ <&3 || exit 125; exec 3<&-; exec "$@"`, "codebeaker-jail", s.tools.bwrap}, args...)...)
	cmd.SysProcAttr = attr
	cmd.ExtraFiles = []*os.File{r}
	release := func(started bool) error {
		r.Close()
		defer w.Close()
		if !started {
			return nil
		}
		if err := s.cg.join(cmd.Process.Pid); err != nil {
			return fmt.Errorf("%w: deno: %v", sandbox.ErrUnavailable, err)
		}
		_, err := w.Write([]byte("go\n"))
		return err
	}
	return cmd, release, nil
}

// Paths inside the jail.
const (
	jailDeno    = "/usr/bin/deno"
	jailSetpriv = "/usr/bin/setpriv"
	jailCache   = "/deno-dir"
)

// libDirs are the host folders the dynamically linked deno binary needs
// (glibc and the libraries it loads), bound read-only, or recreated as the
// symlinks they are on merged-/usr systems.
var libDirs = []string{"/usr/lib", "/usr/lib64", "/lib", "/lib64"}

// netFiles let a session with network access resolve names.
var netFiles = []string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf"}

// jailArgs are bwrap's arguments for one command.
func (s *Sandbox) jailArgs(p sandbox.Process, dir string, argv []string) []string {
	a := []string{
		"--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
		"--hostname", "sandbox",
		"--die-with-parent", "--new-session",
	}
	// Only commands that run code share the host's network, with Deno's
	// net flags. Tools (check, info, doc, ...) download remote modules with
	// no permission check at all.
	net := !s.grants[kindNet].none() && len(argv) > 1 && permissioned[argv[1]]
	if !net {
		a = append(a, "--unshare-net")
	}
	if privileged() {
		// bwrap runs as root and makes no user namespace: the sandbox user
		// is the host's sandbox.UID, so files it makes are that uid's, as
		// in Docker sessions. setpriv in the jail drops to it;
		// it needs these three capabilities, which it drops with the rest.
		a = append(a, "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP")
	} else {
		a = append(a, "--unshare-user", "--disable-userns", "--cap-drop", "ALL")
	}

	// Environment: nothing of the host's.
	a = append(a, "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "NO_COLOR", "1")
	for _, kv := range p.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			a = append(a, "--setenv", k, v)
		}
	}
	a = append(a, "--setenv", "PATH", "/usr/bin", "--setenv", "DENO_DIR", jailCache)

	// File system: a fresh tmpfs root holding only what Deno needs.
	a = append(a, "--perms", "0755", "--dir", "/usr", "--perms", "0755", "--dir", "/usr/bin")
	for _, d := range libDirs {
		info, err := os.Lstat(d)
		switch {
		case err != nil:
		case info.Mode()&fs.ModeSymlink != 0:
			if target, err := os.Readlink(d); err == nil {
				a = append(a, "--symlink", target, d)
			}
		case info.IsDir():
			a = append(a, "--ro-bind", d, d)
		}
	}
	a = append(a, "--ro-bind", s.tools.deno, jailDeno)
	if privileged() {
		a = append(a, "--ro-bind", s.tools.setpriv, jailSetpriv)
	}
	if net {
		// bwrap makes the folder 0700 otherwise: the sandbox user could
		// not read the files, nor so resolve names.
		a = append(a, "--perms", "0755", "--dir", "/etc")
		for _, f := range netFiles {
			a = append(a, "--ro-bind-try", f, f)
		}
	}
	a = append(a,
		"--bind", s.spec.Workspace, sandbox.WorkspaceDir,
		"--bind", s.cache, jailCache,
		"--dev", "/dev",
		"--proc", "/proc",
		"--perms", "1777")
	if s.spec.MemoryLimitMB > 0 {
		// tmpfs pages count against the memory cgroup; the size caps them
		// without one.
		a = append(a, "--size", strconv.FormatInt(int64(s.spec.MemoryLimitMB)<<20, 10))
	}
	a = append(a, "--tmpfs", "/tmp", "--chdir", dir)
	if privileged() {
		a = append(a, jailSetpriv,
			"--reuid="+strconv.Itoa(sandbox.UID), "--regid="+strconv.Itoa(sandbox.GID), "--clear-groups",
			"--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--")
	}
	return append(a, argv...)
}

// exitCode is the command's exit code, 128+n for a signal n (a kill shows
// as 137).
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// setupFailure recognises a jail that failed before Deno ran: bwrap and
// setpriv say so on stderr and exit 1 (bwrap) or 126/127 (setpriv).
func setupFailure(res sandbox.Result) (string, bool) {
	first, _, _ := strings.Cut(string(res.Stderr), "\n")
	switch {
	case res.ExitCode == 1 && strings.HasPrefix(first, "bwrap: "):
	case (res.ExitCode == 126 || res.ExitCode == 127) && strings.HasPrefix(first, "setpriv: "):
	default:
		return "", false
	}
	return first, true
}

// v8OutOfMemory recognises V8 ending the process for lack of heap: it
// prints "Fatal JavaScript out of memory" (or "Fatal process out of
// memory") and traps (exit 133) or aborts (134).
func v8OutOfMemory(res sandbox.Result) bool {
	if res.ExitCode != 133 && res.ExitCode != 134 {
		return false
	}
	return bytes.Contains(res.Stderr, []byte("out of memory")) || bytes.Contains(res.Stderr, []byte("heap limit"))
}
