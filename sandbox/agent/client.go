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
