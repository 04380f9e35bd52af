package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/proc"
)

// Background processes: the agent keeps them in a proc.Table, each under a
// shim of its own as a command is, and keeps their output, so that they
// outlive the connection that started them and the server itself. A
// connection asks one thing of them and hangs up; a follow or a wait lasts
// as long as its answer, and ends with the connection without harm.

// startProcess is the table's StartFunc: a shim (a new one, so that a
// terminal can be its command's stdio) started with the process's spec.
func (a *agent) startProcess(spec sandbox.ProcessSpec) (*proc.Started, error) {
	dir := spec.Dir
	if dir == "" {
		dir = a.cfg.Workdir
	}
	var master, slave *os.File
	if spec.PTY != nil {
		var err error
		if master, slave, err = proc.OpenPTY(*spec.PTY); err != nil {
			return nil, fmt.Errorf("open a terminal: %w", err)
		}
		defer slave.Close() // the shim has it
	}
	p, err := startShim(a.cfg.shimPath, slave)
	if err != nil {
		if master != nil {
			master.Close()
		}
		return nil, err
	}
	st, err := a.launch(p, shimSpec{Args: spec.Args, Env: setEnv(a.env, spec.Env...), Dir: dir,
		UID: a.cfg.UID, GID: a.cfg.GID, TTY: master != nil})
	if err != nil {
		if master != nil {
			master.Close()
		}
		return nil, err
	}
	if master != nil {
		st.Stdout, st.Terminal = master, master
	} else {
		st.Stdin, st.Stdout, st.Stderr = p.stdin, p.stdout, p.stderr
	}
	return st, nil
}

// launch tells a shim its command and waits until it runs.
func (a *agent) launch(p *shimProc, spec shimSpec) (*proc.Started, error) {
	if err := p.send(spec); err != nil {
		p.discard()
		return nil, err
	}
	st, err := p.status()
	switch {
	case err != nil:
		p.kill()
		p.discard()
		return nil, err
	case st.Error != "":
		p.discard()
		return nil, fmt.Errorf("%w: %s", sandbox.ErrCannotStart, st.Error)
	}
	pid := st.PID
	oomBefore := oomKills()
	a.keepShim(p.pid, true)
	return &proc.Started{
		Wait: func() (proc.Exit, error) {
			end, err := p.status()
			a.keepShim(p.pid, false)
			if err != nil && oomKills() > oomBefore {
				end, err = shimStatus{Exited: true, Signal: int(syscall.SIGKILL)}, nil
			}
			// What the command left running is the session's from now on,
			// as a command's leftovers are.
			p.letGo()
			if err != nil {
				return proc.Exit{}, err
			}
			exit := proc.Exit{Code: end.Code, Signal: syscall.Signal(end.Signal)}
			if end.Signal != 0 {
				exit.Code = 128 + end.Signal
				exit.OOMKilled = end.Signal == int(syscall.SIGKILL) && oomKills() > oomBefore
			}
			return exit, nil
		},
		// The command leads its process group (or session, on a terminal):
		// a signal goes to the group, as a key typed on a terminal does.
		Signal: func(sig syscall.Signal) error { return syscall.Kill(-pid, sig) },
		Kill:   func() error { p.kill(); return nil },
	}, nil
}

// keepShim marks the shim of a running background process, which KillAll
// spares with everything under it, or forgets it.
func (a *agent) keepShim(pid int, keep bool) {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	if keep {
		a.bgShims[pid] = true
	} else {
		delete(a.bgShims, pid)
	}
}

// spared lists the background processes' shims, which KillAll spares.
func (a *agent) spared() []int {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	pids := make([]int, 0, len(a.bgShims))
	for pid := range a.bgShims {
		pids = append(pids, pid)
	}
	return pids
}

// serveProcess answers one request about background processes on conn.
func (a *agent) serveProcess(conn *net.UnixConn, fr *Reader, t FrameType, msg any) {
	if t == ProcList {
		msg = nil
	}
	w := &frameWriter{conn: conn}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The server hanging up ends a follow or a wait: nothing else comes on
	// a connection after its request.
	go func() {
		fr.Next()
		cancel()
	}()
	reply := func(err error, t FrameType, v any) {
		if err != nil {
			w.json(Error, errorMsg(err))
			return
		}
		if v == nil {
			w.frame(t, nil)
			return
		}
		w.json(t, v)
	}
	tab := a.procs
	switch m := msg.(type) {
	case *ProcStartMsg:
		st, err := tab.StartProcess(ctx, sandbox.ProcessSpec{ID: m.ID, Args: m.Args, Env: m.Env, Dir: m.Dir, Stdin: m.Stdin,
			Timeout: time.Duration(m.TimeoutMs) * time.Millisecond, PTY: m.PTY, Retain: m.Retain, Head: m.Head})
		reply(err, ProcState, &st)
	case nil: // ProcList
		list, err := tab.ListProcesses(ctx)
		for i := range list {
			// Heads would make the list large; Wait gives them.
			list[i].Output[0].Head, list[i].Output[1].Head = nil, nil
		}
		reply(err, ProcListed, ProcListMsg{Processes: list})
	case *ProcReadMsg:
		out, err := tab.ReadOutput(ctx, m.ID, m.Stream, m.Offset, m.Limit)
		reply(err, ProcData, ProcDataMsg{Data: out.Data, Offset: out.Offset, Next: out.Next, FirstRetained: out.FirstRetained, EOF: out.EOF})
	case *ProcFollowMsg:
		buf := make([]byte, 0, chunkHeader+proc.ChunkSize)
		st, err := tab.Follow(ctx, m.ID, m.From, func(c sandbox.Chunk) error {
			buf = AppendChunk(buf[:0], c)
			return w.frame(Chunk, buf)
		})
		if ctx.Err() == nil {
			reply(err, ProcState, &st)
		}
	case *ProcInputMsg:
		reply(tab.WriteInput(ctx, m.ID, m.Data, m.EOF), OK, nil)
	case *ProcSignalMsg:
		reply(tab.Signal(ctx, m.ID, syscall.Signal(m.Signal)), OK, nil)
	case *ProcResizeMsg:
		reply(tab.Resize(ctx, m.ID, m.Size), OK, nil)
	case *ProcRef: // ProcWait
		st, err := tab.Wait(ctx, m.ID)
		if ctx.Err() == nil {
			reply(err, ProcState, &st)
		}
	}
}

// errorMsg is err as an Error frame says it, with the code that tells the
// server which of sandbox's errors it is.
func errorMsg(err error) ErrorMsg {
	code := CodeInternal
	switch {
	case errors.Is(err, sandbox.ErrNoProcess):
		code = CodeNoProcess
	case errors.Is(err, sandbox.ErrProcessEnded):
		code = CodeEnded
	case errors.Is(err, sandbox.ErrTooManyProcesses):
		code = CodeTooMany
	case errors.Is(err, sandbox.ErrCannotStart):
		code = CodeStart
	}
	return ErrorMsg{Code: code, Message: err.Error()}
}
