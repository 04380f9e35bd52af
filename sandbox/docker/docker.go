package docker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Labels on every container this package makes.
const (
	LabelSession = "io.codebeaker.session"
	LabelManaged = "io.codebeaker.managed"
	// LabelInstance names the server (its data dir) that owns a container,
	// so that servers, and tests, sharing an engine leave each other's
	// containers alone.
	LabelInstance = "io.codebeaker.instance"
)

// SandboxUser runs every command; the runtime images create it.
var SandboxUser = strconv.Itoa(sandbox.UID) + ":" + strconv.Itoa(sandbox.GID)

// apiTimeout bounds every Docker API call that is not waiting for a
// command: a hung engine must not hang a session forever.
const apiTimeout = 30 * time.Second

// A kill restarts the container (see kill): each restart and each look at
// what is left has its own deadline, and a kill tries killTries times, so
// a command ends within about killTries*(killTimeout+topTimeout) plus
// sandbox.KillGrace of its timeout even when the engine hangs.
const (
	killTimeout = 15 * time.Second
	topTimeout  = 5 * time.Second
	killTries   = 2
)

// Runtime makes containers through the Docker Engine API.
type Runtime struct {
	api      *client.Client
	instance string // LabelInstance of the containers it makes and owns

	mu      sync.Mutex
	allowed []string // AllowImages patterns
}

// New connects to the engine named by the environment (DOCKER_HOST, or the
// local socket). instance labels the containers this runtime makes; Owned
// sees only those.
func New(instance string) (*Runtime, error) {
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker: make client: %w", err)
	}
	return &Runtime{api: api, instance: instance}, nil
}

// Close releases the client.
func (r *Runtime) Close() error { return r.api.Close() }

// Ping checks that the engine answers.
func (r *Runtime) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.api.Ping(ctx); err != nil {
		return fmt.Errorf("%w: docker engine not reachable (is dockerd running?)", sandbox.ErrUnavailable)
	}
	return nil
}

// ImageExists reports whether the engine has the image locally.
func (r *Runtime) ImageExists(ctx context.Context, image string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err := r.api.ImageInspect(ctx, image)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// AllowImages sets the patterns of the images, besides the runtime images,
// that sessions may use (--allowed-images). A pattern is matched with
// path.Match against each name the image has on the host, with and
// without its tag: "myorg/*" allows every tag of every myorg image,
// "myorg/tool:1.*" some tags of one.
func (r *Runtime) AllowImages(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("image pattern %q: %w", p, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allowed = slices.Clone(patterns)
	return nil
}

// checkImage refuses an image sessions may not run on: a runtime image
// (LabelLanguage) built for another sandbox uid, or an image that is no
// runtime image and that no AllowImages pattern names. Any image on the
// host could otherwise be run and read, other applications' images and
// the secrets built into them.
func (r *Runtime) checkImage(name string, info image.InspectResponse) error {
	var labels map[string]string
	if info.Config != nil {
		labels = info.Config.Labels
	}
	rebuild := "rebuild it with scripts/build-runtime-images.sh"
	switch uid := labels[sandbox.LabelSandboxUID]; {
	case uid != "" && uid != strconv.Itoa(sandbox.UID):
		return fmt.Errorf("%w: image %q was built for sandbox uid %s, but this server runs programs as uid %d: %s",
			sandbox.ErrImageNotAllowed, name, uid, sandbox.UID, rebuild)
	case labels[sandbox.LabelLanguage] != "" && uid == "":
		return fmt.Errorf("%w: image %q is a CodeBeaker runtime image built before its sandbox uid was labelled: %s",
			sandbox.ErrImageNotAllowed, name, rebuild)
	case labels[sandbox.LabelLanguage] != "":
		return nil
	}
	r.mu.Lock()
	patterns := r.allowed
	r.mu.Unlock()
	for _, tagged := range info.RepoTags {
		repo := tagged
		if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
			repo = repo[:i]
		}
		for _, p := range patterns {
			if ok, _ := path.Match(p, tagged); ok {
				return nil
			}
			if ok, _ := path.Match(p, repo); ok {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: image %q is not a CodeBeaker runtime image (no %s label) and matches no --allowed-images pattern",
		sandbox.ErrImageNotAllowed, name, sandbox.LabelLanguage)
}

// Validate refuses what a container does not take: Deno's permissions.
// The image is checked by Create, against the engine.
func (r *Runtime) Validate(spec sandbox.Spec) error {
	if spec.Permissions != nil {
		return sandbox.InvalidSpec(`"permissions" applies only to deno sessions, not %s`, spec.Language.Name)
	}
	return nil
}

// Create makes and starts the container of one session.
func (r *Runtime) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if err := r.Validate(spec); err != nil {
		return nil, err
	}
	c, err := r.create(ctx, spec, nil)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// create makes and starts a container for spec, with labels added to its
// own.
func (r *Runtime) create(ctx context.Context, spec sandbox.Spec, labels map[string]string) (*Container, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	info, err := r.api.ImageInspect(ctx, spec.Image)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("%w: image %q is not on this host (build it with scripts/build-runtime-images.sh, or docker build/load it)", sandbox.ErrImageNotFound, spec.Image)
	} else if err != nil {
		return nil, unavailable("look up the image", err)
	}
	if err := r.checkImage(spec.Image, info); err != nil {
		return nil, err
	}
	mem := int64(spec.MemoryLimitMB) << 20
	pids := int64(spec.PidsLimit)
	initProcess := true
	cfg := &container.Config{
		// By id: the name may be retagged between the check and here.
		Image: info.ID,
		// The placeholder as the entrypoint: an image's own ENTRYPOINT and
		// CMD never run, nor its HEALTHCHECK.
		Entrypoint:  []string{"sleep", "infinity"},
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
		User:        "0:0", // the placeholder only; see the package comment
		WorkingDir:  sandbox.WorkspaceDir,
		Labels:      map[string]string{LabelSession: spec.SessionID, LabelManaged: "true", LabelInstance: r.instance},
	}
	maps.Copy(cfg.Labels, labels)
	host := &container.HostConfig{
		NetworkMode: "none",
		Init:        &initProcess,
		CapDrop:     []string{"ALL"},
		SecurityOpt: []string{"no-new-privileges"},
		Resources: container.Resources{
			Memory:     mem,
			MemorySwap: mem, // no swap beyond the limit
			CPUShares:  int64(spec.CPUShares),
			PidsLimit:  &pids,
		},
		Mounts:    []mount.Mount{{Type: mount.TypeBind, Source: spec.Workspace, Target: sandbox.WorkspaceDir}},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1m"}},
	}
	created, err := r.api.ContainerCreate(ctx, cfg, host, nil, nil, "codebeaker-"+strings.ToLower(spec.SessionID))
	if err != nil {
		return nil, unavailable("create container", err)
	}
	c := &Container{api: r.api, id: created.ID}
	if err := r.api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		c.Close(context.WithoutCancel(ctx))
		return nil, unavailable("start container", err)
	}
	return c, nil
}

// Container is one session's sandbox.
type Container struct {
	api *client.Client
	id  string

	mu          sync.Mutex
	oomKills    int64 // the cgroup's OOM kill count seen last
	killPending bool  // a kill failed: the next Exec kills first
}

// ID returns the container id.
func (c *Container) ID() string { return c.id }

// Close removes the container; a container already gone is not an error.
func (c *Container) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	err := c.api.ContainerRemove(ctx, c.id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
		return fmt.Errorf("docker: remove container %s: %w", shortID(c.id), err)
	}
	return nil
}

// Exec runs one process in the container as the sandbox user.
func (c *Container) Exec(ctx context.Context, p sandbox.Process) (sandbox.Result, error) {
	return sandbox.Run(ctx, p, func(stdout, stderr io.Writer) (sandbox.Started, error) {
		if c.mustKill() {
			// An earlier kill failed: nothing runs beside what it may have left.
			if err := c.kill(ctx); err != nil {
				return nil, err
			}
		}
		return c.start(ctx, p, stdout, stderr)
	})
}

// start starts p in the container, its stdin fed and its output copied
// from the engine's stream.
func (c *Container) start(ctx context.Context, p sandbox.Process, stdout, stderr io.Writer) (*execution, error) {
	callCtx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	created, err := c.api.ContainerExecCreate(callCtx, c.id, container.ExecOptions{
		User:         SandboxUser,
		AttachStdin:  len(p.Stdin) > 0,
		AttachStdout: true,
		AttachStderr: true,
		Env:          p.Env,
		WorkingDir:   p.Dir,
		Cmd:          p.Args,
	})
	if err != nil {
		return nil, c.engineError("start command", err)
	}
	resp, err := c.api.ContainerExecAttach(callCtx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, c.engineError("attach to command", err)
	}
	x := &execution{ctx: ctx, c: c, id: created.ID, program: p.Args[0],
		stream: &hijacked{Conn: resp.Conn, Reader: resp.Reader, resp: &resp}, copied: make(chan error, 1), abandoned: make(chan struct{})}
	if len(p.Stdin) > 0 {
		go func() {
			x.stream.Conn.Write(p.Stdin)
			x.stream.CloseWrite()
		}()
	}
	go func() {
		_, err := stdcopy.StdCopy(stdout, stderr, x.stream.Reader)
		x.copied <- err
	}()
	return x, nil
}

// execution is a command started in the container, as sandbox.Run drives
// it: it has ended when its output stream has.
type execution struct {
	ctx       context.Context
	c         *Container
	id        string // the engine's exec id
	program   string
	stream    *hijacked
	copied    chan error    // the output copy's end
	abandoned chan struct{} // closed a second after Cut
}

func (x *execution) Wait() error {
	select {
	case err := <-x.copied:
		return err
	case <-x.abandoned:
		return nil
	}
}

func (x *execution) Kill() error { return x.c.kill(x.ctx) }

// Cut closes the stream, which ends the copy; Wait returns a second later
// all the same.
func (x *execution) Cut() {
	x.stream.Close()
	time.AfterFunc(time.Second, func() { close(x.abandoned) })
}

// End reads the exit code from the engine, unless the kill set it.
func (x *execution) End(res *sandbox.Result, killed bool, _ error) error {
	defer x.stream.Close()
	if killed {
		res.ExitCode = 137 // SIGKILLed with everything in the container
		return nil
	}
	ctx := context.WithoutCancel(x.ctx)
	exit, err := x.c.exitCode(ctx, x.id)
	if err != nil {
		return err
	}
	res.ExitCode = exit
	if (exit == 126 || exit == 127) && bytes.HasPrefix(res.Stdout, []byte("OCI runtime exec failed")) {
		return fmt.Errorf("%w %q: %s", sandbox.ErrCannotStart, x.program, startFailure(string(res.Stdout)))
	}
	if exit == 137 {
		res.OOMKilled = x.c.sawOOMKill(ctx)
	}
	return nil
}

// hijacked keeps the attach stream; Close may be called more than once.
type hijacked struct {
	Conn   io.Writer
	Reader *bufio.Reader
	resp   interface {
		Close()
		CloseWrite() error
	}
	once sync.Once
}

func (h *hijacked) Close()            { h.once.Do(h.resp.Close) }
func (h *hijacked) CloseWrite() error { return h.resp.CloseWrite() }

func (c *Container) engineError(what string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %s: container %s no longer exists", sandbox.ErrGone, what, shortID(c.id))
	}
	if errdefs.IsConflict(err) {
		return fmt.Errorf("%w: %s: container %s is not running", sandbox.ErrGone, what, shortID(c.id))
	}
	return unavailable(what, err)
}

// kill ends every process that commands started in the container. The
// engine restarts the container with SIGKILL: its init dies, and with it,
// by the kernel, every process of its pid namespace at once, stopped or
// not, however many it forks meanwhile (a dying namespace takes no new
// process). No process of the sandbox user takes part, so none can stop
// the kill. It then checks that the container holds its placeholder alone,
// and restarts it again if not. Each engine call has a deadline of its
// own, not ctx's, which has usually ended: the kill is what follows.
//
// It is the one place that knows how a command is killed.
func (c *Container) kill(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for range killTries {
		err := c.restart(ctx)
		if errdefs.IsNotFound(err) {
			c.setMustKill(false) // nothing is left of it, nor of its processes
			return nil
		}
		if err == nil {
			var left []string
			if left, err = c.leftovers(ctx); err == nil && len(left) == 0 {
				c.setMustKill(false)
				return nil
			} else if err == nil {
				err = fmt.Errorf("processes left after the restart: %s", strings.Join(left, "; "))
			}
		}
		errs = append(errs, err)
	}
	c.setMustKill(true)
	return fmt.Errorf("%w: could not kill the command's processes in container %s: %v", sandbox.ErrUnavailable, shortID(c.id), errors.Join(errs...))
}

// restart kills everything in the container, the placeholder too, and
// starts it again: its id and files stay.
func (c *Container) restart(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, killTimeout)
	defer cancel()
	now := 0
	if err := c.api.ContainerRestart(ctx, c.id, container.StopOptions{Signal: "SIGKILL", Timeout: &now}); err != nil {
		if errdefs.IsNotFound(err) {
			return err
		}
		return fmt.Errorf("restart the container: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.oomKills = 0 // the restarted container's memory cgroup counts from zero
	return nil
}

// placeholderProcs is what a container holds with no command running:
// docker's init and the placeholder (see Create).
const placeholderProcs = 2

// leftovers lists the container's processes beyond its placeholder, as the
// engine sees them (it reads them on the host, not through an exec).
func (c *Container) leftovers(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, topTimeout)
	defer cancel()
	top, err := c.api.ContainerTop(ctx, c.id, nil)
	if err != nil {
		return nil, fmt.Errorf("list the container's processes: %w", err)
	}
	if len(top.Processes) <= placeholderProcs {
		return nil, nil
	}
	var out []string
	for _, p := range top.Processes {
		out = append(out, strings.Join(p, " "))
	}
	return out, nil
}

func (c *Container) mustKill() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.killPending
}

func (c *Container) setMustKill(v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killPending = v
}

// exitCode waits for the exec to be reported finished and returns its code.
func (c *Container) exitCode(ctx context.Context, execID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		info, err := c.api.ContainerExecInspect(ctx, execID)
		if err != nil {
			return 0, c.engineError("read the command's exit code", err)
		}
		if !info.Running {
			return info.ExitCode, nil
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return 0, fmt.Errorf("command still running after its output ended: %w", ctx.Err())
		}
	}
}

// sawOOMKill reports whether the container's memory cgroup killed a process
// since the last look. Read only after a SIGKILL nobody here sent, so the
// common path costs nothing.
func (c *Container) sawOOMKill(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	// cgroup v2 first, then v1.
	out, _, err := c.run(ctx, "/bin/sh", "-c", "/bin/cat /sys/fs/cgroup/memory.events 2>/dev/null || /bin/cat /sys/fs/cgroup/memory/memory.oom_control")
	if err != nil {
		return false
	}
	var kills int64
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			kills, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := kills > c.oomKills
	c.oomKills = kills
	return seen
}

// run executes a short helper command and returns its combined output,
// within ctx. It runs as the container's root, which has no capabilities:
// a program of the sandbox user can neither signal it nor stop the engine's
// start of it (see the package comment). Its programs are named by absolute
// path and its PATH is the system's alone: the image's PATH starts with
// folders the sandbox user can write to.
func (c *Container) run(ctx context.Context, args ...string) (string, int, error) {
	created, err := c.api.ContainerExecCreate(ctx, c.id, container.ExecOptions{User: "0:0", AttachStdout: true, AttachStderr: true, Cmd: args,
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}})
	if err != nil {
		return "", 0, c.engineError("run "+args[0], err)
	}
	resp, err := c.api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", 0, c.engineError("run "+args[0], err)
	}
	defer resp.Close()
	var out strings.Builder
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&out, &out, io.LimitReader(resp.Reader, 1<<20))
		copied <- err
	}()
	select {
	case err = <-copied:
	case <-ctx.Done():
		resp.Close() // ends the copy
		<-copied
		return "", 0, fmt.Errorf("docker: %s did not finish: %w", args[0], ctx.Err())
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return out.String(), 0, err
	}
	exit, err := c.exitCode(ctx, created.ID)
	return out.String(), exit, err
}

// startFailure turns the engine's exec error into its reason.
func startFailure(msg string) string {
	for _, reason := range []string{"executable file not found in $PATH", "permission denied", "no such file or directory", "not a directory"} {
		if strings.Contains(msg, reason) {
			return reason
		}
	}
	return strings.TrimSpace(strings.TrimPrefix(msg, "OCI runtime exec failed: exec failed: "))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Remove removes a container by id, as Close does; for containers a
// previous run of the server made.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	return (&Container{api: r.api, id: id}).Close(ctx)
}

// Health reports whether the engine answers and which language images it
// has.
func (r *Runtime) Health(ctx context.Context) sandbox.Health {
	if err := r.Ping(ctx); err != nil {
		return sandbox.Health{Error: "docker engine not reachable"}
	}
	h := sandbox.Health{Available: true, Images: map[string]bool{}}
	for _, l := range sandbox.Languages(sandbox.KindDocker) {
		ok, err := r.ImageExists(ctx, l.Image)
		h.Images[l.Name] = ok && err == nil
	}
	return h
}
