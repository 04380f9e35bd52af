package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stdinBuffered bounds the stdin the agent holds for a command that does
// not read it yet.
const stdinBuffered = 512 // chunks of at most MaxData: 16 MiB

// outputGrace is how long output may keep flowing once a killed command's
// shim is gone: a process outside the command (an earlier command's, to
// which it passed its stdout) may hold the pipe open.
const outputGrace = time.Second

// shimSpec is what the agent tells a shim on its control pipe, one JSON
// line, before anything else.
type shimSpec struct {
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Dir      string   `json:"dir"`
	UID, GID int
	TTY      bool `json:"tty,omitempty"` // stdio is a terminal: the command gets a session of its own with it
}

// shimStatus is one line a shim writes on its status pipe: first the
// command's pid or why it could not start, then how it ended.
type shimStatus struct {
	PID    int    `json:"pid,omitempty"`
	Error  string `json:"error,omitempty"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal int    `json:"signal,omitempty"`
}

// run runs one command for a connection: a shim is started for it (see
// the package comment), its output is sent as it comes, stdin frames are
// fed to it, and Kill, or the connection's end, kills it.
func (a *agent) run(conn *net.UnixConn, fr *Reader, start *StartMsg) {
	w := &frameWriter{conn: conn}
	fail := func(code string, err error) { w.json(Error, ErrorMsg{Code: code, Message: err.Error()}) }

	dir := start.Dir
	if dir == "" {
		dir = a.cfg.Workdir
	}
	spec := shimSpec{Args: start.Args, Env: setEnv(a.env, start.Env...), Dir: dir, UID: a.cfg.UID, GID: a.cfg.GID}
	p, err := a.shim(spec)
	if err != nil {
		fail(CodeInternal, err)
		return
	}
	defer p.release()
	oomBefore := oomKills()

	// Requests: stdin, its end, Kill, heard from the start on (a start
	// can hang; see RunShim). The connection's end kills too: the server
	// that asked is gone, and nobody would hear the result.
	var killOnce sync.Once
	killed := make(chan struct{})
	kill := func() { killOnce.Do(func() { close(killed); p.kill() }) }
	stdin := make(chan []byte, stdinBuffered)
	go func() {
		var stdinClosed bool
		closeStdin := func() {
			if !stdinClosed {
				stdinClosed = true
				close(stdin)
			}
		}
		defer closeStdin()
		for {
			f, err := fr.Next()
			if err != nil {
				kill()
				return
			}
			msg, err := Decode(f)
			if err != nil {
				fail(CodeProtocol, err)
				kill()
				return
			}
			switch f.Type {
			case Stdin:
				if stdinClosed {
					fail(CodeProtocol, errors.New("stdin after its end"))
					kill()
					return
				}
				select {
				case stdin <- append([]byte(nil), msg.([]byte)...):
				default:
					fail(CodeProtocol, errors.New("stdin sent faster than the command reads it, beyond what the agent holds"))
					kill()
					return
				}
			case CloseStdin:
				closeStdin()
			case Kill:
				kill()
				return
			default:
				fail(CodeProtocol, fmt.Errorf("frame %q during a command", f.Type))
				kill()
				return
			}
		}
	}()
	go func() {
		defer p.stdin.Close()
		for b := range stdin {
			if _, err := p.stdin.Write(b); err != nil {
				for range stdin {
				}
				return
			}
		}
	}()

	st, err := p.status()
	switch {
	case err != nil:
		fail(CodeInternal, err)
		kill()
		return
	case st.Error != "":
		fail(CodeStart, errors.New(st.Error))
		return
	}
	if w.json(Started, StartedMsg{PID: st.PID}) != nil {
		kill()
		return
	}

	var outputs sync.WaitGroup
	for _, o := range []struct {
		t FrameType
		r *os.File
	}{{Stdout, p.stdout}, {Stderr, p.stderr}} {
		outputs.Go(func() {
			buf := make([]byte, MaxData)
			for {
				n, err := o.r.Read(buf)
				if n > 0 && w.frame(o.t, buf[:n]) != nil {
					kill() // the server is gone
				}
				if err != nil {
					return
				}
			}
		})
	}

	end, err := p.status()
	if err != nil && oomKills() > oomBefore {
		// The memory killer took the shim, and with it the command.
		end, err = shimStatus{Exited: true, Signal: int(syscall.SIGKILL)}, nil
	}
	if err != nil {
		fail(CodeInternal, err)
		kill()
		return
	}
	outputDone := make(chan struct{})
	go func() { outputs.Wait(); close(outputDone) }()
	select {
	case <-outputDone:
	case <-killed:
		// The shim is gone once it has killed, and with it every process of
		// the command; what still holds the output is not the command's.
		p.waitShim()
		select {
		case <-outputDone:
		case <-time.After(outputGrace):
			p.stdout.Close()
			p.stderr.Close()
			<-outputDone
		}
	}
	var wasKilled bool
	select {
	case <-killed:
		wasKilled = true
	default:
	}
	exit := ExitedMsg{ExitCode: end.Code, Signal: end.Signal, Killed: wasKilled}
	if end.Signal != 0 {
		exit.ExitCode = 128 + end.Signal
	}
	if end.Signal == int(syscall.SIGKILL) && !wasKilled {
		exit.OOMKilled = oomKills() > oomBefore
	}
	// Released before the server hears the end: its hanging up then kills
	// nothing that the command left running on purpose.
	p.release()
	w.json(Exited, exit)
	a.startSpare()
}

// oomKills is how many processes the sandbox's memory cgroup has killed
// (cgroup v2, then v1); -1 when it cannot be read.
func oomKills() int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return -1
}

// shimProc is a started shim and the agent's ends of its pipes.
type shimProc struct {
	pid            int      // the shim's
	control        *os.File // write: 'K' kills, closing releases
	statusR        *bufio.Reader
	statusF        *os.File
	stdin          *os.File
	stdout, stderr *os.File

	controlMu     sync.Mutex
	controlClosed bool
}

// startShim starts a shim, which waits for its command on its control
// pipe. With a terminal (its slave side), the command's stdin, stdout and
// stderr are the terminal, and the shim's pipes for them are not made.
func startShim(path string, terminal *os.File) (*shimProc, error) {
	// Five pipes: control, status, stdin, stdout, stderr. The shim gets
	// one end of each, the agent keeps the other.
	var shimEnds, ours [5]*os.File
	closeAll := func(files []*os.File) {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	defer func() { // the shim has its copies once started
		if terminal != nil {
			closeAll(shimEnds[:2])
		} else {
			closeAll(shimEnds[:])
		}
	}()
	for i := range 5 {
		if terminal != nil && i >= 2 {
			shimEnds[i] = terminal
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(ours[:])
			return nil, err
		}
		if i == 0 || i == 2 { // control and stdin: the shim reads
			shimEnds[i], ours[i] = r, w
		} else {
			shimEnds[i], ours[i] = w, r
		}
	}
	proc, err := os.StartProcess(path, []string{"codebeaker-agent", ShimArg}, &os.ProcAttr{
		Env:   []string{},
		Files: []*os.File{shimEnds[0], shimEnds[1], os.Stderr, shimEnds[2], shimEnds[3], shimEnds[4]},
	})
	if err != nil {
		closeAll(ours[:])
		return nil, fmt.Errorf("start the command's shim: %w", err)
	}
	pid := proc.Pid
	proc.Release() // the agent reaps it with every other child
	return &shimProc{pid: pid, control: ours[0], statusR: bufio.NewReader(ours[1]), statusF: ours[1],
		stdin: ours[2], stdout: ours[3], stderr: ours[4]}, nil
}

// send tells a waiting shim its command.
func (p *shimProc) send(spec shimSpec) error {
	b, _ := marshal(spec)
	if _, err := p.control.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("tell the shim the command: %w", err)
	}
	return nil
}

// discard ends a shim that was never given a command.
func (p *shimProc) discard() {
	p.release()
	if p.stdin != nil {
		p.stdin.Close()
	}
}

// shim returns a started shim that has been told spec. A shim started
// ahead (the spare) is taken, waited for if it is being started, so that a
// command seldom waits for a Go program's start; a new spare is started
// once the command has ended (startSpare), not while it runs on a busy
// machine.
func (a *agent) shim(spec shimSpec) (*shimProc, error) {
	var spare *shimProc
	select {
	case spare = <-a.spare:
	default:
		if a.starting.Load() {
			select {
			case spare = <-a.spare:
			case <-time.After(time.Second):
			}
		}
	}
	if spare != nil {
		if spare.send(spec) == nil {
			return spare, nil
		}
		spare.discard() // killed meanwhile (KillAll): start one now
	}
	p, err := startShim(a.cfg.shimPath, nil)
	if err != nil {
		return nil, err
	}
	if err := p.send(spec); err != nil {
		p.discard()
		return nil, err
	}
	return p, nil
}

// startSpare starts a shim for the next command in the background, unless
// one is ready or being started.
func (a *agent) startSpare() {
	if !a.starting.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer a.starting.Store(false)
		if len(a.spare) > 0 {
			return
		}
		p, err := startShim(a.cfg.shimPath, nil)
		if err != nil {
			return
		}
		select {
		case a.spare <- p:
		default:
			p.discard()
		}
	}()
}

// dropSpare discards the spare shim, if any: KillAll would kill it anyway.
func (a *agent) dropSpare() {
	select {
	case p := <-a.spare:
		p.discard()
	default:
	}
}

// status reads the shim's next status line.
func (p *shimProc) status() (shimStatus, error) {
	var st shimStatus
	line, err := p.statusR.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return st, errors.New("the command's shim ended without saying how the command did")
		}
		return st, err
	}
	if err := json.Unmarshal(line, &st); err != nil {
		return st, fmt.Errorf("the shim's status: %w", err)
	}
	return st, nil
}

// waitShim returns once the shim has exited (its status pipe ends).
func (p *shimProc) waitShim() {
	io.Copy(io.Discard, p.statusR)
}

func (p *shimProc) kill() {
	p.controlMu.Lock()
	defer p.controlMu.Unlock()
	if !p.controlClosed {
		p.control.Write([]byte{'K'})
	}
}

// release lets the shim go: processes the command left running (detached,
// with its output closed) are the session's from now on, the agent's
// children. It also frees the agent's ends of the pipes.
func (p *shimProc) release() {
	p.controlMu.Lock()
	if !p.controlClosed {
		p.controlClosed = true
		p.control.Close()
	}
	p.controlMu.Unlock()
	p.statusF.Close()
	if p.stdout != nil {
		p.stdout.Close()
		p.stderr.Close()
	}
}

// letGo lets the shim go once its command has ended, as release does, but
// leaves the output to the process table, which drains and closes it.
func (p *shimProc) letGo() {
	p.controlMu.Lock()
	defer p.controlMu.Unlock()
	if !p.controlClosed {
		p.controlClosed = true
		p.control.Close()
	}
}
