package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/codebeaker/codebeaker/sandbox/proc"
)

// Config is what the agent is started with (its flags).
type Config struct {
	Socket   string // the Unix socket it listens on
	UID, GID int    // every command runs as them
	Workdir  string // a command's working directory when it names none
	SetHome  bool   // HOME is the sandbox user's, from /etc/passwd (the image sets none)
	Build    string // the agent's build, told in Hello
	// Background processes: how many may run, and how many ended ones are
	// kept (0: proc's defaults).
	MaxProcesses, MaxEnded int
	shimPath               string // the program run as the shim: the agent itself
}

// helloTimeout bounds how long a connection may take to say Hello and what
// it wants.
const helloTimeout = 10 * time.Second

// Serve runs the agent until it is told to stop (SIGTERM, SIGINT): it
// reaps every orphan of the sandbox, as its PID 1 must, and serves
// connections on cfg.Socket.
func Serve(cfg Config) error {
	// Our own files (the socket) are for root alone.
	unix.Umask(0o077)
	go reapOrphans()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	os.Remove(cfg.Socket) // a socket left by this container's previous start
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	go func() {
		<-stop
		ln.Close()
	}()
	return serveOn(ln, cfg)
}

// serveOn serves connections on ln until it is closed.
func serveOn(ln *net.UnixListener, cfg Config) error {
	if cfg.shimPath == "" {
		cfg.shimPath = "/proc/self/exe"
	}
	a := &agent{cfg: cfg, env: commandBase(cfg), spare: make(chan *shimProc, 1), bgShims: map[int]bool{}}
	a.procs = proc.NewTable(a.startProcess, proc.Limits{MaxProcesses: cfg.MaxProcesses, MaxEnded: cfg.MaxEnded})
	a.startSpare()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		go a.serveConn(conn)
	}
}

type agent struct {
	cfg Config
	env []string // the environment every command starts from

	spare    chan *shimProc // a shim started ahead, waiting for a command
	starting atomic.Bool    // a spare is being started

	procs   *proc.Table // background processes
	bgMu    sync.Mutex
	bgShims map[int]bool // pids of the running background processes' shims
}

// commandBase is the environment a command starts from: the agent's own,
// which is the image's and the container's, with HOME set for the sandbox
// user when the image sets none (the engine gave the agent root's).
func commandBase(cfg Config) []string {
	env := os.Environ()
	if !cfg.SetHome {
		return env
	}
	return setEnv(env, "HOME="+homeOf(cfg.UID))
}

// homeOf is uid's home folder in /etc/passwd, or "/" as runc has it.
func homeOf(uid int) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 6 && fields[2] == strconv.Itoa(uid) && fields[5] != "" {
			return fields[5]
		}
	}
	return "/"
}

// setEnv returns env with each KEY=VALUE of over set, replacing the KEY's
// earlier entries: a program sees one value per name.
func setEnv(env []string, over ...string) []string {
	out := make([]string, 0, len(env)+len(over))
	replaced := make(map[string]bool, len(over))
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		replaced[k] = true
	}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !replaced[k] {
			out = append(out, kv)
		}
	}
	seen := make(map[string]int, len(over))
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := seen[k]; ok {
			out[i] = kv
			continue
		}
		seen[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// reapOrphans waits for every child the agent gets: as the sandbox's PID 1
// it inherits each process whose parent died, and the shims it starts.
func reapOrphans() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		<-sigs
	}
}

// peerAllowed is the agent's door: only a process with the agent's own uid
// (root: the server, through the socket's folder that only root may
// enter) may talk to it. The sandbox user never gets past here, even if
// the folder were open to it.
func peerAllowed(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return credErr
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("uid %d may not use the agent", cred.Uid)
	}
	return nil
}

// serveConn serves one connection: Hello both ways, then one request
// (Start or KillAll).
func (a *agent) serveConn(conn *net.UnixConn) {
	defer conn.Close()
	if err := peerAllowed(conn); err != nil {
		WriteJSON(conn, Error, ErrorMsg{Code: CodeProtocol, Message: err.Error()})
		return
	}
	conn.SetReadDeadline(time.Now().Add(helloTimeout))
	fr := NewReader(conn)
	fail := func(code, format string, args ...any) {
		WriteJSON(conn, Error, ErrorMsg{Code: code, Message: fmt.Sprintf(format, args...)})
	}
	hello, err := readMsg[*HelloMsg](fr, Hello)
	if err != nil {
		fail(CodeProtocol, "%v", err)
		return
	}
	if hello.Version != Version {
		fail(CodeVersion, "the agent speaks protocol version %d, the server %d", Version, hello.Version)
		return
	}
	if err := WriteJSON(conn, Hello, HelloMsg{Version: Version, Agent: a.cfg.Build}); err != nil {
		return
	}
	f, err := fr.Next()
	if err != nil {
		return
	}
	msg, err := Decode(f)
	if err != nil {
		fail(CodeProtocol, "%v", err)
		return
	}
	conn.SetReadDeadline(time.Time{})
	switch f.Type {
	case Start:
		a.run(conn, fr, msg.(*StartMsg))
	case ProcStart, ProcList, ProcRead, ProcFollow, ProcInput, ProcSignal, ProcResize, ProcWait:
		a.serveProcess(conn, fr, f.Type, msg)
	case KillAll:
		a.dropSpare()
		if err := killAll(a.spared()); err != nil {
			fail(CodeInternal, "%v", err)
			return
		}
		a.startSpare()
		WriteFrame(conn, Done, nil)
	default:
		fail(CodeProtocol, "frame %q where Start or KillAll was expected", f.Type)
	}
}

// readMsg reads one frame of type t and decodes it.
func readMsg[M any](fr *Reader, t FrameType) (M, error) {
	var zero M
	f, err := fr.Next()
	if err != nil {
		return zero, err
	}
	if f.Type != t {
		return zero, fmt.Errorf("frame %q where %q was expected", f.Type, t)
	}
	msg, err := Decode(f)
	if err != nil {
		return zero, err
	}
	return msg.(M), nil
}

// frameWriter serializes the frames of one connection.
type frameWriter struct {
	mu   sync.Mutex
	conn io.Writer
	err  error
}

func (w *frameWriter) frame(t FrameType, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = WriteFrame(w.conn, t, payload)
	}
	return w.err
}

func (w *frameWriter) json(t FrameType, v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	return w.frame(t, b)
}
