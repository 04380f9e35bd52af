package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/errdefs"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/agent"
)

// Where the agent lives inside a container.
const (
	agentPath   = "/.codebeaker/agent" // the binary, bind-mounted read-only
	agentRunDir = "/.codebeaker/run"   // its socket's folder, root's alone
	agentSocket = agentRunDir + "/agent.sock"
	socketName  = "agent.sock"
	runDirExt   = ".agent" // the run folder is the workspace's path with it
)

// agentCaps are the capabilities the agent (root) keeps, and no other
// process of the container has: to start commands as the sandbox user, to
// kill them, and to empty their capability bounding set. A command's user
// loses them all at its exec, with an empty bounding set and
// no-new-privileges it can never get one back.
var agentCaps = []string{"SETUID", "SETGID", "KILL", "SETPCAP"}

// agentTimeout bounds a connection to the agent and its Hello, and how
// long a kill may take before the engine's restart does it.
const agentTimeout = 5 * time.Second

// agentCommand is the container's entrypoint: the agent, told the sandbox
// user, and to set HOME when the image has none (the engine would give the
// agent root's).
func agentCommand(info image.InspectResponse) []string {
	cmd := []string{agentPath, "--socket", agentSocket, "--uid", strconv.Itoa(sandbox.UID), "--gid", strconv.Itoa(sandbox.GID),
		"--workdir", sandbox.WorkspaceDir}
	if info.Config == nil || !slices.ContainsFunc(info.Config.Env, func(kv string) bool { return strings.HasPrefix(kv, "HOME=") }) {
		cmd = append(cmd, "--set-home")
	}
	return cmd
}

// makeRunDir makes the host folder of a sandbox's agent socket beside its
// workspace, for root alone: the sandbox user cannot reach the socket.
func makeRunDir(workspace string) (string, error) {
	dir := workspace + runDirExt
	os.RemoveAll(dir) // a stale socket of an earlier container
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o700) // whatever the umask
}

func removeRunDir(dir string) { os.RemoveAll(dir) }

// dial connects to the container's agent.
func (c *Container) dial(ctx context.Context) (*agent.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	return agent.Dial(ctx, filepath.Join(c.run, socketName))
}

// waitAgent waits until the container's agent answers, after a start: it
// makes its socket in a few milliseconds. A container that stops meanwhile
// (the agent could not start) is an error that says why.
func (c *Container) waitAgent(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	lastLook := time.Now()
	for delay := time.Millisecond; ; delay = min(2*delay, 20*time.Millisecond) {
		conn, err := c.dial(ctx)
		if err == nil {
			conn.Close()
			return nil
		}
		if agent.IsVersionMismatch(err) {
			return fmt.Errorf("%w: container %s: %v", errAgentVersion, shortID(c.id), err)
		}
		if time.Since(lastLook) > 250*time.Millisecond {
			lastLook = time.Now()
			if running, why := c.running(ctx); !running {
				return fmt.Errorf("%w: the sandbox's agent did not start: %s", sandbox.ErrUnavailable, why)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: the sandbox's agent did not answer: %v", sandbox.ErrUnavailable, err)
		case <-time.After(delay):
		}
	}
}

// errAgentVersion is an agent of another protocol version: a container
// made by another build of the server.
var errAgentVersion = errors.New("the sandbox's agent is of another version")

// running asks the engine whether the container runs, and if not, why.
func (c *Container) running(ctx context.Context) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	info, err := c.api.ContainerInspect(ctx, c.id)
	switch {
	case errdefs.IsNotFound(err):
		return false, "the container no longer exists"
	case err != nil:
		return true, "" // cannot tell; the caller's deadline decides
	case info.State == nil || !info.State.Running:
		why := "the container stopped"
		if info.State != nil {
			why = fmt.Sprintf("the container stopped (exit code %d%s)", info.State.ExitCode, strings.TrimSuffix(": "+info.State.Error, ": "))
		}
		return false, why
	}
	return true, ""
}

// agentGone words a failed connection to the agent: a container that no
// longer runs is sandbox.ErrGone, so the session takes it back.
func (c *Container) agentGone(ctx context.Context, what string, err error) error {
	if running, why := c.running(context.WithoutCancel(ctx)); !running {
		return fmt.Errorf("%w: %s: %s", sandbox.ErrGone, what, why)
	}
	return fmt.Errorf("%w: %s: the sandbox's agent does not answer: %v", sandbox.ErrUnavailable, what, err)
}

// start starts p through the agent; its output is copied as it comes.
func (c *Container) start(ctx context.Context, p sandbox.Process, stdout, stderr io.Writer) (*execution, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, c.agentGone(ctx, "start command", err)
	}
	if err := conn.Start(agent.StartMsg{Args: p.Args, Env: p.Env, Dir: p.Dir}, p.Stdin); err != nil {
		conn.Close()
		if errors.Is(err, agent.ErrFrameTooLarge) {
			// Beyond what Linux takes too (2 MiB); it says so in these words.
			return nil, fmt.Errorf("%w %q: argument list too long", sandbox.ErrCannotStart, p.Args[0])
		}
		return nil, c.agentGone(ctx, "start command", err)
	}
	x := &execution{ctx: ctx, c: c, conn: conn, program: p.Args[0], ended: make(chan struct{}), abandoned: make(chan struct{})}
	go func() {
		x.exit, x.err = conn.Wait(stdout, stderr)
		close(x.ended)
	}()
	return x, nil
}

// execution is a command the agent runs, as sandbox.Run drives it.
type execution struct {
	ctx       context.Context
	c         *Container
	conn      *agent.Conn
	program   string
	ended     chan struct{} // closed when exit and err are set
	exit      agent.ExitedMsg
	err       error
	abandoned chan struct{} // closed a second after Cut
	cutOnce   sync.Once
}

func (x *execution) Wait() error {
	select {
	case <-x.ended:
		return x.err
	case <-x.abandoned:
		return nil
	}
}

// Kill has the agent kill the command's process tree; when the agent does
// not confirm in time, the engine restarts the container.
func (x *execution) Kill() error {
	if x.conn.Kill() == nil {
		select {
		case <-x.ended:
			if x.err == nil {
				return nil
			}
		case <-time.After(agentTimeout):
		}
	}
	return x.c.killEverything(x.ctx)
}

// Cut hangs up, which ends the copy; Wait returns a second later all the
// same.
func (x *execution) Cut() {
	x.cutOnce.Do(func() {
		x.conn.Close()
		time.AfterFunc(time.Second, func() { close(x.abandoned) })
	})
}

// End takes the exit the agent reported.
func (x *execution) End(res *sandbox.Result, killed bool, waitErr error) error {
	defer x.conn.Close()
	if killed {
		res.ExitCode = 128 + int(syscall.SIGKILL)
		return nil
	}
	var re *agent.RemoteError
	if errors.As(waitErr, &re) && re.Code == agent.CodeStart {
		return fmt.Errorf("%w %q: %s", sandbox.ErrCannotStart, x.program, re.Message)
	}
	if waitErr != nil {
		// The command ran, so it is not retried: the session takes the
		// container back at its next command.
		if running, why := x.c.running(context.WithoutCancel(x.ctx)); !running {
			return fmt.Errorf("%w: the sandbox ended while the command ran: %s", sandbox.ErrUnavailable, why)
		}
		return fmt.Errorf("%w: lost the command: %v", sandbox.ErrUnavailable, waitErr)
	}
	res.ExitCode = x.exit.ExitCode
	res.OOMKilled = x.exit.OOMKilled
	return nil
}

// AgentName is the agent binary's file name, beside the server's.
const AgentName = "codebeaker-agent"

// FindAgent returns the agent binary that ships with this server: beside
// its own executable, else in PATH.
func FindAgent() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), AgentName)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(AgentName); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("%s is not beside the server's executable nor in PATH: build it with go build ./cmd/%s, or name it with --agent", AgentName, AgentName)
}

// InstallAgent copies the agent binary src into dir (a folder of the data
// dir, whose host path the engine knows, also when the server runs in a
// container) under a name made of its digest, and returns that path.
// Containers keep mounting the copy they were made with, so copies are
// never replaced in place.
func InstallAgent(src, dir string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read the agent binary: %w", err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return "", fmt.Errorf("the agent binary %s is not an executable", src)
	}
	sum := sha256.Sum256(b)
	dst := filepath.Join(dir, AgentName+"-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".agent-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp.Name(), dst)
}
