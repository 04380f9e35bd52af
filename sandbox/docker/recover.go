package docker

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Reattach returns the container of a session that an earlier run of the
// server made. A running container is kept, after ending whatever a
// command left running in it; a stopped one (the engine restarted) is
// started again; a missing one is made anew on the same workspace. restored
// says a new container was made.
func (r *Runtime) Reattach(ctx context.Context, spec sandbox.Spec, id string) (box sandbox.Sandbox, restored bool, err error) {
	if id != "" {
		c := &Container{api: r.api, id: id}
		callCtx, cancel := context.WithTimeout(ctx, apiTimeout)
		info, err := r.api.ContainerInspect(callCtx, id)
		cancel()
		switch {
		case errdefs.IsNotFound(err):
			// made anew below
		case err != nil:
			return nil, false, unavailable("inspect container "+shortID(id), err)
		case info.Config != nil && info.Config.Labels[LabelSession] != spec.SessionID:
			return nil, false, fmt.Errorf("container %s does not belong to session %s", shortID(id), spec.SessionID)
		case info.State != nil && info.State.Running:
			if err := c.kill(ctx); err != nil {
				return nil, false, err
			}
			return c, false, nil
		default:
			startCtx, cancel := context.WithTimeout(ctx, apiTimeout)
			err := r.api.ContainerStart(startCtx, id, container.StartOptions{})
			cancel()
			if err == nil {
				return c, false, nil
			}
			// A container that will not start is replaced.
			c.Close(ctx)
		}
	}
	box, err = r.Create(ctx, spec)
	return box, err == nil, err
}

// Owned lists the containers this runtime's instance made, running or not,
// as container id -> session id.
func (r *Runtime) Owned(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	list, err := r.api.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"), filters.Arg("label", LabelInstance+"="+r.instance))})
	if err != nil {
		return nil, unavailable("list containers", err)
	}
	out := make(map[string]string, len(list))
	for _, c := range list {
		out[c.ID] = c.Labels[LabelSession]
	}
	return out, nil
}

// NewHost connects to the engine at host (such as unix:///var/run/docker.sock)
// instead of the one the environment names.
func NewHost(host, instance string) (*Runtime, error) {
	api, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker: make client for %s: %w", host, err)
	}
	return &Runtime{api: api, instance: instance}, nil
}

// unavailable words an engine failure for the client: a connection failure
// names no socket path, since the client cannot act on the server's paths.
func unavailable(what string, err error) error {
	if client.IsErrConnectionFailed(err) {
		return fmt.Errorf("%w: %s: docker engine not reachable", sandbox.ErrUnavailable, what)
	}
	return fmt.Errorf("%w: %s: %v", sandbox.ErrUnavailable, what, err)
}
