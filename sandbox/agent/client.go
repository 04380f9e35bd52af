package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

// RemoteError is an Error frame the agent sent.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// IsVersionMismatch reports whether err says that the agent and the server
// speak different protocol versions.
func IsVersionMismatch(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == CodeVersion
}

// Conn is the server's side of one connection to an agent.
type Conn struct {
	conn  *net.UnixConn
	fr    *Reader
	w     frameWriter
	Agent string // the agent's build, from its Hello
}

// Dial connects to the agent listening on socket, a host path, and
// exchanges Hellos within ctx.
func Dial(ctx context.Context, socket string) (*Conn, error) {
	addr := socket
	// A socket's path must fit in 108 bytes; a longer one is reached
	// through its folder's descriptor.
	if len(addr) >= 100 {
		dir, err := os.Open(filepath.Dir(socket))
		if err != nil {
			return nil, err
		}
		defer dir.Close()
		addr = "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + filepath.Base(socket)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", addr)
	if err != nil {
		return nil, err
	}
	conn := nc.(*net.UnixConn)
	c := &Conn{conn: conn, fr: NewReader(conn), w: frameWriter{conn: conn}}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.w.json(Hello, HelloMsg{Version: Version}); err != nil {
		conn.Close()
		return nil, err
	}
	hello, err := c.expect(Hello)
	if err != nil {
		conn.Close()
		return nil, err
	}
	h := hello.(*HelloMsg)
	if h.Version != Version {
		conn.Close()
		return nil, &RemoteError{Code: CodeVersion, Message: fmt.Sprintf("the agent speaks protocol version %d, the server %d", h.Version, Version)}
	}
	c.Agent = h.Agent
	conn.SetDeadline(time.Time{})
	return c, nil
}

// expect reads the next frame, which must be of type t or an Error.
func (c *Conn) expect(t FrameType) (any, error) {
	f, err := c.fr.Next()
	if err != nil {
		return nil, err
	}
	msg, err := Decode(f)
	if err != nil {
		return nil, err
	}
	switch f.Type {
	case t:
		return msg, nil
	case Error:
		e := msg.(*ErrorMsg)
		return nil, &RemoteError{Code: e.Code, Message: e.Message}
	}
	return nil, fmt.Errorf("agent sent frame %q where %q was expected", f.Type, t)
}

// Close hangs up; a command still running is killed by the agent.
func (c *Conn) Close() error { return c.conn.Close() }

// Start asks for a command and feeds it stdin (then its end) in the
// background. It does not wait for the command to start, which can take
// as long as the command's user lets it (see RunShim): Wait says whether
// it started (a *RemoteError of code CodeStart when it could not), and
// Kill works from now on.
func (c *Conn) Start(m StartMsg, stdin []byte) error {
	if err := c.w.json(Start, m); err != nil {
		return err
	}
	go func() {
		for len(stdin) > 0 {
			n := min(len(stdin), MaxData)
			if c.w.frame(Stdin, stdin[:n]) != nil {
				return
			}
			stdin = stdin[n:]
		}
		c.w.frame(CloseStdin, nil)
	}()
	return nil
}

// Kill asks the agent to kill the command and everything it started.
func (c *Conn) Kill() error { return c.w.frame(Kill, nil) }

// Wait copies the command's output to stdout and stderr until it has
// ended, and says how.
func (c *Conn) Wait(stdout, stderr io.Writer) (ExitedMsg, error) {
	for {
		f, err := c.fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return ExitedMsg{}, fmt.Errorf("the sandbox's agent hung up: %w", err)
		}
		msg, err := Decode(f)
		if err != nil {
			return ExitedMsg{}, err
		}
		switch f.Type {
		case Started:
		case Stdout:
			stdout.Write(msg.([]byte))
		case Stderr:
			stderr.Write(msg.([]byte))
		case Exited:
			return *msg.(*ExitedMsg), nil
		case Error:
			e := msg.(*ErrorMsg)
			return ExitedMsg{}, &RemoteError{Code: e.Code, Message: e.Message}
		default:
			return ExitedMsg{}, fmt.Errorf("agent sent frame %q during a command", f.Type)
		}
	}
}

// KillAll asks the agent to kill every process of the sandbox but itself,
// and waits until it has.
func (c *Conn) KillAll(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.w.frame(KillAll, nil); err != nil {
		return err
	}
	_, err := c.expect(Done)
	return err
}

// remoteErr turns an agent's Error frame into the error a runtime reports:
// the process errors of package sandbox are told by their codes.
func remoteErr(e *ErrorMsg) error {
	re := &RemoteError{Code: e.Code, Message: e.Message}
	for code, err := range map[string]error{CodeNoProcess: sandbox.ErrNoProcess, CodeEnded: sandbox.ErrProcessEnded,
		CodeTooMany: sandbox.ErrTooManyProcesses, CodeStart: sandbox.ErrCannotStart} {
		if e.Code == code {
			return fmt.Errorf("%w: %w", err, re)
		}
	}
	return re
}

// call sends one request about background processes and reads its
// answer, of type want, decoded into out (when not nil).
func (c *Conn) call(ctx context.Context, t FrameType, req any, want FrameType) (any, error) {
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var err error
	if req == nil {
		err = c.w.frame(t, nil)
	} else {
		err = c.w.json(t, req)
	}
	if err != nil {
		return nil, err
	}
	return c.answer(ctx, want)
}

// answer reads the next frame, which must be of type want or an Error.
func (c *Conn) answer(ctx context.Context, want FrameType) (any, error) {
	f, err := c.fr.Next()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the sandbox's agent hung up: %w", err)
	}
	msg, err := Decode(f)
	switch {
	case err != nil:
		return nil, err
	case f.Type == want:
		return msg, nil
	case f.Type == Error:
		return nil, remoteErr(msg.(*ErrorMsg))
	}
	return nil, fmt.Errorf("agent sent frame %q where %q was expected", f.Type, want)
}

// StartProcess starts a background process.
func (c *Conn) StartProcess(ctx context.Context, m ProcStartMsg) (sandbox.ProcessState, error) {
	msg, err := c.call(ctx, ProcStart, m, ProcState)
	if err != nil {
		return sandbox.ProcessState{}, err
	}
	return *msg.(*sandbox.ProcessState), nil
}

// ListProcesses lists the agent's background processes (without heads).
func (c *Conn) ListProcesses(ctx context.Context) ([]sandbox.ProcessState, error) {
	msg, err := c.call(ctx, ProcList, nil, ProcListed)
	if err != nil {
		return nil, err
	}
	return msg.(*ProcListMsg).Processes, nil
}

// ReadOutput reads a process's retained output.
func (c *Conn) ReadOutput(ctx context.Context, m ProcReadMsg) (sandbox.Output, error) {
	msg, err := c.call(ctx, ProcRead, m, ProcData)
	if err != nil {
		return sandbox.Output{}, err
	}
	d := msg.(*ProcDataMsg)
	return sandbox.Output{Data: d.Data, Offset: d.Offset, Next: d.Next, FirstRetained: d.FirstRetained, EOF: d.EOF}, nil
}

// Follow streams a process's output to fn until it has ended.
func (c *Conn) Follow(ctx context.Context, m ProcFollowMsg, fn func(sandbox.Chunk) error) (sandbox.ProcessState, error) {
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.w.json(ProcFollow, m); err != nil {
		return sandbox.ProcessState{}, err
	}
	for {
		f, err := c.fr.Next()
		if err != nil {
			if ctx.Err() != nil {
				return sandbox.ProcessState{}, ctx.Err()
			}
			return sandbox.ProcessState{}, fmt.Errorf("the sandbox's agent hung up: %w", err)
		}
		msg, err := Decode(f)
		if err != nil {
			return sandbox.ProcessState{}, err
		}
		switch f.Type {
		case Chunk:
			if err := fn(msg.(sandbox.Chunk)); err != nil {
				return sandbox.ProcessState{}, err
			}
		case ProcState:
			return *msg.(*sandbox.ProcessState), nil
		case Error:
			return sandbox.ProcessState{}, remoteErr(msg.(*ErrorMsg))
		default:
			return sandbox.ProcessState{}, fmt.Errorf("agent sent frame %q during a follow", f.Type)
		}
	}
}

// WriteInput queues bytes for a process's stdin.
func (c *Conn) WriteInput(ctx context.Context, m ProcInputMsg) error {
	_, err := c.call(ctx, ProcInput, m, OK)
	return err
}

// Signal signals a process; SIGKILL kills its tree.
func (c *Conn) Signal(ctx context.Context, m ProcSignalMsg) error {
	_, err := c.call(ctx, ProcSignal, m, OK)
	return err
}

// Resize resizes a process's terminal.
func (c *Conn) Resize(ctx context.Context, m ProcResizeMsg) error {
	_, err := c.call(ctx, ProcResize, m, OK)
	return err
}

// WaitProcess waits for a process's end.
func (c *Conn) WaitProcess(ctx context.Context, id string) (sandbox.ProcessState, error) {
	msg, err := c.call(ctx, ProcWait, ProcRef{ID: id}, ProcState)
	if err != nil {
		return sandbox.ProcessState{}, err
	}
	return *msg.(*sandbox.ProcessState), nil
}
