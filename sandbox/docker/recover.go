package docker

import (
	"context"
	"errors"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/agent"
)

// Reattach returns the container of a session that an earlier run of the
// server made. A running container is kept, after its agent has ended
// whatever commands left running in it; a stopped one (the engine restarted) is
// started again; a missing one is made anew on the same workspace. restored
// says a new container was made.
func (r *Runtime) Reattach(ctx context.Context, spec sandbox.Spec, id string) (box sandbox.Sandbox, restored bool, err error) {
	if id != "" {
		c := &Container{api: r.api, id: id, run: spec.Workspace + runDirExt}
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
			err := c.settle(ctx)
			if err == nil {
				return c, false, nil
			}
			if !errors.Is(err, errAgentVersion) {
				return nil, false, err
			}
			// Made by another build of the server: replaced, the workspace kept.
			c.Close(ctx)
		default:
			startCtx, cancel := context.WithTimeout(ctx, apiTimeout)
			err := r.api.ContainerStart(startCtx, id, container.StartOptions{})
			cancel()
			if err == nil {
				if err = c.waitAgent(ctx); err == nil {
					return c, false, nil
				}
			}
			// A container that will not start, or whose agent will not
			// answer, is replaced.
			c.Close(ctx)
		}
	}
	box, err = r.Create(ctx, spec)
	return box, err == nil, err
}

// settle ends whatever an earlier server left running in a container it
// takes back: its commands were settled as interrupted. The agent kills;
// one that does not answer is restarted with the container. An agent of
// another version is errAgentVersion.
func (c *Container) settle(ctx context.Context) error {
	conn, err := c.dial(ctx)
	if err == nil {
		killCtx, cancel := context.WithTimeout(ctx, killTimeout)
		err = conn.KillAll(killCtx)
		cancel()
		conn.Close()
		if err == nil {
			return nil
		}
	}
	if agent.IsVersionMismatch(err) {
		return fmt.Errorf("%w: container %s: %v", errAgentVersion, shortID(c.id), err)
	}
	return c.killEverything(ctx)
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

// unavailable words an engine failure for the client: a connection failure
// names no socket path, since the client cannot act on the server's paths.
func unavailable(what string, err error) error {
	if client.IsErrConnectionFailed(err) {
		return fmt.Errorf("%w: %s: docker engine not reachable", sandbox.ErrUnavailable, what)
	}
	return fmt.Errorf("%w: %s: %v", sandbox.ErrUnavailable, what, err)
}
