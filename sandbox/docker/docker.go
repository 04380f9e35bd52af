package docker

import (
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
	agent    string // host path of the agent binary mounted into each container

	mu      sync.Mutex
	allowed []string // AllowImages patterns
}

// Options configure a Runtime.
type Options struct {
	// Instance labels the containers the runtime makes; Owned sees only
	// those (see Instance).
	Instance string
	// Agent is the host path of the codebeaker-agent binary that each
	// container runs as its init. The engine resolves it on its host.
	Agent string
	// Host is the engine's address (unix:///var/run/docker.sock); empty
	// means the one the environment names (DOCKER_HOST, or the local socket).
	Host string
}

// New connects to the engine.
func New(opts Options) (*Runtime, error) {
	clientOpts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if opts.Host != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.Host))
	}
	api, err := client.NewClientWithOpts(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker: make client: %w", err)
	}
	return &Runtime{api: api, instance: opts.Instance, agent: opts.Agent}, nil
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
	run, err := makeRunDir(spec.Workspace)
	if err != nil {
		return nil, fmt.Errorf("%w: make the sandbox's agent folder: %v", sandbox.ErrUnavailable, err)
	}
	mem := int64(spec.MemoryLimitMB) << 20
	pids := int64(spec.PidsLimit)
	noInit := false
	cfg := &container.Config{
		// By id: the name may be retagged between the check and here.
		Image: info.ID,
		// The agent as the entrypoint: an image's own ENTRYPOINT and CMD
		// never run, nor its HEALTHCHECK.
		Entrypoint:  agentCommand(info),
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
		User:        "0:0", // the agent only; see the package comment
		WorkingDir:  sandbox.WorkspaceDir,
		Labels:      map[string]string{LabelSession: spec.SessionID, LabelManaged: "true", LabelInstance: r.instance},
	}
	maps.Copy(cfg.Labels, labels)
	host := &container.HostConfig{
		NetworkMode: "none",
		Init:        &noInit, // the agent is the init
		CapDrop:     []string{"ALL"},
		CapAdd:      agentCaps,
		SecurityOpt: []string{"no-new-privileges"},
		Resources: container.Resources{
			Memory:     mem,
			MemorySwap: mem, // no swap beyond the limit
			CPUShares:  int64(spec.CPUShares),
			PidsLimit:  &pids,
		},
		Mounts: []mount.Mount{
			{Type: mount.TypeBind, Source: spec.Workspace, Target: sandbox.WorkspaceDir},
			{Type: mount.TypeBind, Source: r.agent, Target: agentPath, ReadOnly: true},
			{Type: mount.TypeBind, Source: run, Target: agentRunDir},
		},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1m"}},
	}
	created, err := r.api.ContainerCreate(ctx, cfg, host, nil, nil, "codebeaker-"+strings.ToLower(spec.SessionID))
	if err != nil {
		removeRunDir(run)
		return nil, unavailable("create container", err)
	}
	c := &Container{api: r.api, id: created.ID, run: run}
	if err := r.api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		c.Close(context.WithoutCancel(ctx))
		return nil, unavailable("start container", err)
	}
	if err := c.waitAgent(ctx); err != nil {
		c.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// Container is one session's sandbox.
type Container struct {
	api *client.Client
	id  string
	run string // host folder of its agent's socket

	mu          sync.Mutex
	killPending bool // a kill failed: the next Exec kills first
}

// ID returns the container id.
func (c *Container) ID() string { return c.id }

// Close removes the container and its agent's folder; a container
// already gone is not an error.
func (c *Container) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	err := c.api.ContainerRemove(ctx, c.id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
		return fmt.Errorf("docker: remove container %s: %w", shortID(c.id), err)
	}
	if c.run != "" {
		removeRunDir(c.run)
	}
	return nil
}

// Exec runs one process in the container as the sandbox user, through the
// container's agent.
func (c *Container) Exec(ctx context.Context, p sandbox.Process) (sandbox.Result, error) {
	return sandbox.Run(ctx, p, func(stdout, stderr io.Writer) (sandbox.Started, error) {
		if c.mustKill() {
			// An earlier kill failed: nothing runs beside what it may have left.
			if err := c.killEverything(ctx); err != nil {
				return nil, err
			}
		}
		return c.start(ctx, p, stdout, stderr)
	})
}

func (c *Container) engineError(what string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %s: container %s no longer exists", sandbox.ErrGone, what, shortID(c.id))
	}
	if errdefs.IsConflict(err) {
		return fmt.Errorf("%w: %s: container %s is not running", sandbox.ErrGone, what, shortID(c.id))
	}
	return unavailable(what, err)
}

// killEverything ends every process of the container: the fallback when
// its agent cannot kill (it does not answer). The engine restarts the
// container with SIGKILL: its init, the agent, dies, and with it, by the
// kernel, every process of its pid namespace at once, stopped or not,
// however many it forks meanwhile (a dying namespace takes no new
// process). It then checks that the container holds its new agent alone,
// and restarts it again if not. Each engine call has a deadline of its
// own, not ctx's, which has usually ended: the kill is what follows.
func (c *Container) killEverything(ctx context.Context) error {
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

// restart kills everything in the container, the agent too, and
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
	return c.waitAgent(ctx)
}

// leftovers lists the container's processes that are not the agent's (it
// and its shims run as root, everything else as the sandbox user), as the
// engine sees them: it reads them on the host, not through a command.
func (c *Container) leftovers(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, topTimeout)
	defer cancel()
	top, err := c.api.ContainerTop(ctx, c.id, nil)
	if err != nil {
		return nil, fmt.Errorf("list the container's processes: %w", err)
	}
	return NotAgents(top), nil
}

// NotAgents lists, from a ContainerTop, the processes that are neither the
// agent nor its shims: those not run by root.
func NotAgents(top container.TopResponse) []string {
	uid := slices.Index(top.Titles, "UID")
	var out []string
	for _, p := range top.Processes {
		if uid < 0 || uid >= len(p) || p[uid] != "root" {
			out = append(out, strings.Join(p, " "))
		}
	}
	return out
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

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Remove removes a container by id, as Close does; for containers a
// previous run of the server made.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	c := &Container{api: r.api, id: id}
	inspectCtx, cancel := context.WithTimeout(ctx, apiTimeout)
	info, err := r.api.ContainerInspect(inspectCtx, id)
	cancel()
	if err == nil {
		// Its agent's folder goes with it.
		for _, m := range info.Mounts {
			if m.Destination == agentRunDir && strings.HasSuffix(m.Source, runDirExt) {
				c.run = m.Source
			}
		}
	}
	return c.Close(ctx)
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
