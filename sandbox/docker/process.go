package docker

import (
	"context"
	"errors"
	"syscall"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/agent"
)

// A container's background processes live in its agent (see
// sandbox/agent/procs.go), which keeps them and their output whatever
// becomes of the server; each call here is one connection to it.

var _ sandbox.Processes = (*Container)(nil)

// withAgent runs one request on a connection of its own. A container
// found gone is sandbox.ErrGone.
func withAgent[T any](ctx context.Context, c *Container, what string, do func(*agent.Conn) (T, error)) (T, error) {
	var zero T
	conn, err := c.dial(ctx)
	if err != nil {
		return zero, c.agentGone(ctx, what, err)
	}
	defer conn.Close()
	v, err := do(conn)
	var re *agent.RemoteError
	if err != nil && ctx.Err() == nil && !errors.As(err, &re) {
		return zero, c.agentGone(ctx, what, err)
	}
	return v, err
}

func (c *Container) StartProcess(ctx context.Context, spec sandbox.ProcessSpec) (sandbox.ProcessState, error) {
	return withAgent(ctx, c, "start process", func(conn *agent.Conn) (sandbox.ProcessState, error) {
		return conn.StartProcess(ctx, agent.ProcStartMsg{ID: spec.ID, Args: spec.Args, Env: spec.Env, Dir: spec.Dir, Stdin: spec.Stdin,
			TimeoutMs: spec.Timeout.Milliseconds(), PTY: spec.PTY, Retain: spec.Retain, Head: spec.Head})
	})
}

func (c *Container) ListProcesses(ctx context.Context) ([]sandbox.ProcessState, error) {
	return withAgent(ctx, c, "list processes", func(conn *agent.Conn) ([]sandbox.ProcessState, error) {
		return conn.ListProcesses(ctx)
	})
}

func (c *Container) ReadOutput(ctx context.Context, id string, s sandbox.Stream, offset int64, limit int) (sandbox.Output, error) {
	return withAgent(ctx, c, "read process output", func(conn *agent.Conn) (sandbox.Output, error) {
		return conn.ReadOutput(ctx, agent.ProcReadMsg{ID: id, Stream: s, Offset: offset, Limit: limit})
	})
}

func (c *Container) Follow(ctx context.Context, id string, from [2]int64, fn func(sandbox.Chunk) error) (sandbox.ProcessState, error) {
	return withAgent(ctx, c, "follow process output", func(conn *agent.Conn) (sandbox.ProcessState, error) {
		return conn.Follow(ctx, agent.ProcFollowMsg{ID: id, From: from}, fn)
	})
}

func (c *Container) WriteInput(ctx context.Context, id string, data []byte, eof bool) error {
	_, err := withAgent(ctx, c, "write to a process", func(conn *agent.Conn) (struct{}, error) {
		for {
			n := min(len(data), inputPiece)
			last := n == len(data)
			if err := conn.WriteInput(ctx, agent.ProcInputMsg{ID: id, Data: data[:n], EOF: eof && last}); err != nil || last {
				return struct{}{}, err
			}
			data = data[n:]
		}
	})
	return err
}

// inputPiece is the most stdin one frame carries, base64 in JSON.
const inputPiece = 1 << 20

func (c *Container) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	_, err := withAgent(ctx, c, "signal a process", func(conn *agent.Conn) (struct{}, error) {
		return struct{}{}, conn.Signal(ctx, agent.ProcSignalMsg{ID: id, Signal: int(sig)})
	})
	return err
}

func (c *Container) Resize(ctx context.Context, id string, size sandbox.WinSize) error {
	_, err := withAgent(ctx, c, "resize a terminal", func(conn *agent.Conn) (struct{}, error) {
		return struct{}{}, conn.Resize(ctx, agent.ProcResizeMsg{ID: id, Size: size})
	})
	return err
}

// Wait waits on the agent for the process's end; when ctx ends first it
// returns the process's state then.
func (c *Container) Wait(ctx context.Context, id string) (sandbox.ProcessState, error) {
	st, err := withAgent(ctx, c, "wait for a process", func(conn *agent.Conn) (sandbox.ProcessState, error) {
		return conn.WaitProcess(ctx, id)
	})
	if ctx.Err() != nil {
		list, _ := c.ListProcesses(context.WithoutCancel(ctx))
		for _, now := range list {
			if now.ID == id {
				return now, ctx.Err()
			}
		}
		return sandbox.ProcessState{ID: id, Running: true}, ctx.Err()
	}
	return st, err
}
