package rpc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
	"github.com/codebeaker/codebeaker/sandbox"
)

// Background processes (process.*). A process runs in its session's
// sandbox beside the session's commands, not in their queue; the sandbox
// keeps its output (Limits.ProcessOutputBytes per stream). The log records
// its start, the input and signals clients send it, and its end, which a
// watcher per running process records as soon as the sandbox reports it.
// After a restart, attach adopts what the sandbox still runs (adopt).

// ErrProcessNotFound is a process id the session never had.
var ErrProcessNotFound = errors.New("process not found")

// Limits of a process call's fields.
const (
	maxReadBytes      = 1 << 20 // process.read's limit, default and most
	maxProcessEnv     = 256
	maxNameBytes      = 256
	maxTerminalSide   = 1000
	defaultWait       = 30 * time.Second
	processStartLimit = 30 * time.Second // how long a start may take in the sandbox
)

// signals are the signals a client may send, by the names it uses.
var signals = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "KILL": syscall.SIGKILL,
}

// signalName is a signal as clients name it (TERM), or its number.
func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	if name := strings.TrimPrefix(strings.ToUpper(sig.String()), "SIG"); name != "" && !strings.HasPrefix(name, "SIGNAL") {
		return name
	}
	return fmt.Sprint(int(sig))
}

type ptyParams struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

func (p *ptyParams) size() (sandbox.WinSize, error) {
	if p.Cols < 1 || p.Cols > maxTerminalSide || p.Rows < 1 || p.Rows > maxTerminalSide {
		return sandbox.WinSize{}, &invalidParams{fmt.Sprintf("cols and rows must be between 1 and %d", maxTerminalSide)}
	}
	return sandbox.WinSize{Cols: uint16(p.Cols), Rows: uint16(p.Rows)}, nil
}

// ProcessStartParams are process.start's params.
type ProcessStartParams struct {
	SessionID        string            `json:"sessionId"`
	CommandName      string            `json:"commandName"`
	Args             []string          `json:"args"`
	WorkingDirectory string            `json:"workingDirectory"`
	Env              map[string]string `json:"env"`
	Stdin            *string           `json:"stdin"`
	StdinEncoding    string            `json:"stdinEncoding"` // "base64" when stdin is
	TimeoutMs        *int64            `json:"timeoutMs"`
	PTY              *ptyParams        `json:"pty"`
	Name             string            `json:"name"`
}

type processStartResult struct {
	ProcessID string    `json:"processId"`
	StartedAt time.Time `json:"startedAt"`
}

// ProcessView is a process as process.list, process.wait and
// process.exited show it.
type ProcessView struct {
	ProcessID   string     `json:"processId"`
	Name        string     `json:"name"`
	CommandName string     `json:"commandName"`
	Args        []string   `json:"args"`
	PTY         bool       `json:"pty"`
	State       string     `json:"state"` // running or exited
	ExitCode    *int       `json:"exitCode"`
	Signal      *string    `json:"signal"`
	TimedOut    bool       `json:"timedOut"`
	OOMKilled   bool       `json:"oomKilled"`
	Lost        string     `json:"lost,omitempty"` // why its end is not known
	StartedAt   time.Time  `json:"startedAt"`
	EndedAt     *time.Time `json:"endedAt"`
	StdoutBytes int64      `json:"stdoutBytes"`
	StderrBytes int64      `json:"stderrBytes"`
}

// liveProcess returns the session's live handle and its sandbox's
// processes, taking the sandbox back if need be.
func (s *Service) sessionProcesses(ctx context.Context, sessionID string) (*liveSession, sandbox.Processes, error) {
	if sessionID == "" {
		return nil, nil, &invalidParams{`"sessionId" is required`}
	}
	s.mu.Lock()
	l := s.live[sessionID]
	closing := l != nil && l.closing
	s.mu.Unlock()
	switch {
	case l == nil:
		return nil, nil, s.missing(sessionID)
	case closing:
		return nil, nil, fmt.Errorf("%w: session %s is closing", ErrSessionClosed, sessionID)
	}
	box, err := s.attach(ctx, l)
	if err != nil {
		return nil, nil, err
	}
	procs, ok := box.(sandbox.Processes)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s sessions run no background processes", sandbox.ErrUnavailable, l.lang.Name)
	}
	return l, procs, nil
}

// knownProcess returns what the log says of a process of the session.
func (s *Service) knownProcess(sessionID, processID string) (projection.Process, error) {
	if processID == "" {
		return projection.Process{}, &invalidParams{`"processId" is required`}
	}
	p, ok := s.view.Process(sessionID, processID)
	if !ok {
		return p, fmt.Errorf("%w: session %s has no process %s", ErrProcessNotFound, sessionID, processID)
	}
	return p, nil
}

// StartProcess starts a background process and records it.
func (s *Service) StartProcess(ctx context.Context, p ProcessStartParams) (processStartResult, error) {
	lim := s.cfg.Limits
	spec, audit, err := s.processSpec(p)
	if err != nil {
		return processStartResult{}, err
	}
	l, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return processStartResult{}, err
	}
	if spec.Dir, err = l.ws.CheckDir(spec.Dir); err != nil {
		return processStartResult{}, &invalidParams{"workingDirectory: " + err.Error()}
	}

	// Counted and started under procMu, so that two starts at once do not
	// both take the last place.
	l.procMu.Lock()
	defer l.procMu.Unlock()
	running, terminals := 0, 0
	for _, proc := range s.view.Processes(l.id) {
		if proc.Running {
			running++
			if proc.PTY {
				terminals++
			}
		}
	}
	switch {
	case running >= lim.MaxProcesses:
		return processStartResult{}, fmt.Errorf("%w: session %s already runs %d processes, the most it may (--max-processes)", ErrCapacity, l.id, running)
	case spec.PTY != nil && terminals >= lim.MaxPTYs:
		return processStartResult{}, fmt.Errorf("%w: session %s already runs %d processes on a terminal, the most it may (--max-ptys)", ErrCapacity, l.id, terminals)
	}
	startCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), processStartLimit)
	defer cancel()
	st, err := procs.StartProcess(startCtx, spec)
	switch {
	case errors.Is(err, sandbox.ErrCannotStart):
		return processStartResult{}, &invalidParams{fmt.Sprintf("cannot start %s: %v", p.CommandName, err)}
	case errors.Is(err, sandbox.ErrTooManyProcesses):
		return processStartResult{}, fmt.Errorf("%w: %v", ErrCapacity, err)
	case err != nil:
		return processStartResult{}, err
	}
	if err := s.appendOpen(startCtx, l, eventlog.Record{SessionID: l.id, Type: eventlog.ProcessStarted, Data: audit}); err != nil {
		procs.Signal(startCtx, spec.ID, syscall.SIGKILL) // unrecorded: it must not run
		return processStartResult{}, err
	}
	l.log.Info().Str("process", spec.ID).Str("program", p.CommandName).Msg("process started")
	s.watch(l, procs, spec.ID)
	return processStartResult{ProcessID: spec.ID, StartedAt: st.StartedAt.UTC()}, nil
}

// processSpec checks process.start's params and builds the process and its
// record (without the sandbox's working directory check).
func (s *Service) processSpec(p ProcessStartParams) (sandbox.ProcessSpec, eventlog.ProcessStartedData, error) {
	lim := s.cfg.Limits
	spec := sandbox.ProcessSpec{ID: ulid.Make().String(), Dir: p.WorkingDirectory, Retain: lim.ProcessOutputBytes, Head: lim.StoredOutputBytes}
	audit := eventlog.ProcessStartedData{ProcessID: spec.ID, Name: p.Name, CommandName: p.CommandName, Args: p.Args, Dir: p.WorkingDirectory}
	bad := func(format string, args ...any) (sandbox.ProcessSpec, eventlog.ProcessStartedData, error) {
		return spec, audit, &invalidParams{fmt.Sprintf(format, args...)}
	}
	if p.CommandName == "" {
		return bad(`"commandName" is required`)
	}
	spec.Args = append([]string{p.CommandName}, p.Args...)
	for _, a := range spec.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return bad("the program name and arguments cannot contain NUL bytes")
		}
	}
	if len(p.Name) > maxNameBytes || !utf8.ValidString(p.Name) {
		return bad("name must be UTF-8 text of at most %d bytes", maxNameBytes)
	}
	if spec.Dir == "" {
		spec.Dir = sandbox.WorkspaceDir
	}
	if p.TimeoutMs != nil {
		most := time.Duration(lim.MaxLifetimeMinutes * float64(time.Minute))
		if ms := *p.TimeoutMs; ms <= 0 || ms > most.Milliseconds() {
			return bad("timeoutMs must be between 1 and %d (or absent: until killed or the session ends)", most.Milliseconds())
		}
		spec.Timeout = time.Duration(*p.TimeoutMs) * time.Millisecond
		audit.TimeoutMs = *p.TimeoutMs
	}
	if len(p.Env) > maxProcessEnv {
		return bad("env has %d variables; at most %d", len(p.Env), maxProcessEnv)
	}
	for k, v := range p.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return bad("env variable %q is not a valid name", k)
		}
		spec.Env = append(spec.Env, k+"="+v)
		audit.EnvNames = append(audit.EnvNames, k)
	}
	sort.Strings(spec.Env)
	sort.Strings(audit.EnvNames)
	if p.Stdin != nil {
		in, err := decodeData(*p.Stdin, p.StdinEncoding, "stdinEncoding")
		if err != nil {
			return spec, audit, err
		}
		if int64(len(in)) > lim.MaxFileBytes {
			return bad("stdin of %d bytes is over the %d-byte limit", len(in), lim.MaxFileBytes)
		}
		spec.Stdin = in
		audit.StdinBytes, audit.StdinSha256 = len(in), digest(in)
	}
	if p.PTY != nil {
		size, err := p.PTY.size()
		if err != nil {
			return spec, audit, err
		}
		spec.PTY = &size
		audit.PTY = &eventlog.PTYSize{Cols: p.PTY.Cols, Rows: p.PTY.Rows}
	}
	return spec, audit, nil
}

// decodeData decodes data sent as text or, with encoding "base64", as
// base64; field names the encoding's member for errors.
func decodeData(data, encoding, field string) ([]byte, error) {
	switch encoding {
	case "", "utf8", "utf-8":
		return []byte(data), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, &invalidParams{fmt.Sprintf("data is not valid base64: %v", err)}
		}
		return b, nil
	}
	return nil, &invalidParams{fmt.Sprintf(`%s must be "base64" or absent, not %q`, field, encoding)}
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// watch records the process's end once the sandbox reports it. It stops
// without a record when the session closes (the close records the
// processes still running) or the service stops (the next start adopts
// them).
func (s *Service) watch(l *liveSession, procs sandbox.Processes, id string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		st, err := procs.Wait(l.ctx, id)
		switch {
		case err == nil:
			s.recordExit(l, procs, st, "")
		case l.ctx.Err() == nil:
			l.log.Warn().Err(err).Str("process", id).Msg("cannot wait for a process; its end is recorded as lost")
			s.recordExit(l, procs, sandbox.ProcessState{ID: id}, "its sandbox could not say how it ended: "+err.Error())
		}
	}()
}

// recordExit records how a process ended, once. lost, when set, says why
// its end is not known.
func (s *Service) recordExit(l *liveSession, procs sandbox.Processes, st sandbox.ProcessState, lost string) {
	proc, ok := s.view.Process(l.id, st.ID)
	if !ok || !proc.Running {
		return
	}
	d := eventlog.ProcessExitedData{ProcessID: st.ID, Lost: lost}
	if lost == "" {
		code := st.ExitCode
		d.ExitCode, d.TimedOut, d.OOMKilled, d.Killed = &code, st.TimedOut, st.OOMKilled, st.Killed
		if st.Signal != 0 {
			d.Signal = signalName(st.Signal)
		}
		d.DurationMs = st.EndedAt.Sub(st.StartedAt).Milliseconds()
	} else {
		d.DurationMs = time.Since(proc.StartedAt).Milliseconds()
	}
	limit := s.cfg.Limits.StoredOutputBytes
	for i, out := range st.Output {
		if i == int(sandbox.Stdout) {
			d.StdoutBytes, d.StdoutSha256 = out.Bytes, hex.EncodeToString(out.SHA256)
		} else {
			d.StderrBytes, d.StderrSha256 = out.Bytes, hex.EncodeToString(out.SHA256)
		}
		var tail []byte
		if out.Bytes > int64(len(out.Head)) && procs != nil {
			from := max(out.Bytes-int64(limit), out.FirstRetained, int64(len(out.Head)))
			if got, err := procs.ReadOutput(context.Background(), st.ID, sandbox.Stream(i), from, limit); err == nil {
				tail = got.Data
			}
		}
		d.SetOutput(i, out.Head, tail, limit)
	}
	l.procMu.Lock()
	defer l.procMu.Unlock()
	if proc, _ := s.view.Process(l.id, st.ID); !proc.Running {
		return
	}
	if err := s.appendOpen(context.Background(), l, eventlog.Record{SessionID: l.id, Type: eventlog.ProcessExited, Data: d}); err != nil {
		if !errors.Is(err, ErrSessionClosed) {
			l.log.Error().Err(err).Str("process", st.ID).Msg("cannot record a process's end")
		}
		return
	}
	l.log.Info().Str("process", st.ID).Int("exitCode", st.ExitCode).Str("lost", lost).Msg("process ended")
}

// adopt settles the processes the log says run in a sandbox just taken
// back: those the sandbox still runs are watched again, those it has
// ended or lost are recorded ended, and those it runs that the log does
// not know (started just before a crash, never recorded) are killed.
func (s *Service) adopt(ctx context.Context, l *liveSession, box sandbox.Sandbox, restored bool) {
	var running []projection.Process
	for _, p := range s.view.Processes(l.id) {
		if p.Running {
			running = append(running, p)
		}
	}
	procs, ok := box.(sandbox.Processes)
	listed := map[string]sandbox.ProcessState{}
	if ok && !restored {
		states, err := procs.ListProcesses(ctx)
		if err != nil {
			l.log.Warn().Err(err).Msg("cannot list the sandbox's processes")
		}
		for _, st := range states {
			listed[st.ID] = st
		}
	}
	lost := "its sandbox was gone when the server took the session back, and was made again"
	if _, reattaches := l.runtime.(sandbox.Reattacher); !reattaches {
		lost = fmt.Sprintf("the server restarted; a %s session's processes end with it", l.lang.Name)
	}
	for _, p := range running {
		st, found := listed[p.ID]
		delete(listed, p.ID)
		switch {
		case !found:
			s.recordExit(l, nil, sandbox.ProcessState{ID: p.ID}, lost)
		case st.Running:
			s.watch(l, procs, p.ID)
		default:
			if full, err := procs.Wait(ctx, p.ID); err == nil { // with its heads, which a list leaves out
				st = full
			}
			s.recordExit(l, procs, st, "")
		}
	}
	for id, st := range listed {
		if st.Running && !slices.ContainsFunc(running, func(p projection.Process) bool { return p.ID == id }) {
			l.log.Warn().Str("process", id).Msg("killing a process the log does not know (started as the server stopped)")
			procs.Signal(ctx, id, syscall.SIGKILL)
		}
	}
}

// recordClosedProcesses records the end of every process still running in
// a closing session: the sandbox's removal ends them. The caller holds
// l.recMu, the session sealed.
func (s *Service) recordClosedProcesses(ctx context.Context, l *liveSession) {
	for _, p := range s.view.Processes(l.id) {
		if !p.Running {
			continue
		}
		d := eventlog.ProcessExitedData{ProcessID: p.ID, Lost: "the session closed", Killed: true, DurationMs: time.Since(p.StartedAt).Milliseconds()}
		if _, err := s.log.Append(ctx, eventlog.Record{SessionID: l.id, Type: eventlog.ProcessExited, Data: d}); err != nil {
			l.log.Error().Err(err).Str("process", p.ID).Msg("cannot record a process's end")
		}
	}
}

// view joins what the log says of a process with what its sandbox says
// now (st, when it has it).
func processView(p projection.Process, st *sandbox.ProcessState) ProcessView {
	v := ProcessView{ProcessID: p.ID, Name: p.Name, CommandName: p.CommandName, Args: p.Args, PTY: p.PTY,
		State: "running", StartedAt: p.StartedAt.UTC()}
	if v.Args == nil {
		v.Args = []string{}
	}
	if st != nil {
		v.StdoutBytes, v.StderrBytes = st.Output[sandbox.Stdout].Bytes, st.Output[sandbox.Stderr].Bytes
	}
	switch {
	case st != nil && !st.Running:
		v.State = "exited"
		code := st.ExitCode
		v.ExitCode, v.TimedOut, v.OOMKilled = &code, st.TimedOut, st.OOMKilled
		if st.Signal != 0 {
			name := signalName(st.Signal)
			v.Signal = &name
		}
		end := st.EndedAt.UTC()
		v.EndedAt = &end
	case !p.Running:
		e := p.End
		v.State, v.ExitCode, v.TimedOut, v.OOMKilled, v.Lost = "exited", e.ExitCode, e.TimedOut, e.OOMKilled, e.Lost
		if e.Signal != "" {
			v.Signal = &e.Signal
		}
		end := p.EndedAt.UTC()
		v.EndedAt = &end
		v.StdoutBytes, v.StderrBytes = e.StdoutBytes, e.StderrBytes
	}
	return v
}

type processListParams struct {
	SessionID string `json:"sessionId"`
}

type processListResult struct {
	Processes []ProcessView `json:"processes"`
}

// ListProcesses lists a session's processes: running ones and the ones
// that ended most recently.
func (s *Service) ListProcesses(ctx context.Context, p processListParams) (processListResult, error) {
	_, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return processListResult{}, err
	}
	states, err := procs.ListProcesses(ctx)
	if err != nil {
		return processListResult{}, err
	}
	byID := make(map[string]*sandbox.ProcessState, len(states))
	for i := range states {
		byID[states[i].ID] = &states[i]
	}
	out := processListResult{Processes: []ProcessView{}}
	for _, proc := range s.view.Processes(p.SessionID) {
		out.Processes = append(out.Processes, processView(proc, byID[proc.ID]))
	}
	return out, nil
}

type processRef struct {
	SessionID string `json:"sessionId"`
	ProcessID string `json:"processId"`
}

type processReadParams struct {
	processRef
	Stream string `json:"stream"`
	Offset int64  `json:"offset"`
	Limit  *int   `json:"limit"`
}

type processReadResult struct {
	Data                string `json:"data"`
	Encoding            string `json:"encoding,omitempty"`
	Offset              int64  `json:"offset"`
	NextOffset          int64  `json:"nextOffset"`
	FirstRetainedOffset int64  `json:"firstRetainedOffset"`
	EOF                 bool   `json:"eof"`
}

func parseStream(name string) (sandbox.Stream, error) {
	switch name {
	case "", "stdout":
		return sandbox.Stdout, nil
	case "stderr":
		return sandbox.Stderr, nil
	}
	return 0, &invalidParams{fmt.Sprintf(`stream must be "stdout" or "stderr", not %q`, name)}
}

// ReadProcess reads a process's retained output from an offset.
func (s *Service) ReadProcess(ctx context.Context, p processReadParams) (processReadResult, error) {
	stream, err := parseStream(p.Stream)
	if err != nil {
		return processReadResult{}, err
	}
	limit := maxReadBytes
	if p.Limit != nil {
		if *p.Limit < 1 || *p.Limit > maxReadBytes {
			return processReadResult{}, &invalidParams{fmt.Sprintf("limit must be between 1 and %d", maxReadBytes)}
		}
		limit = *p.Limit
	}
	if p.Offset < 0 {
		return processReadResult{}, &invalidParams{"offset must not be negative"}
	}
	_, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return processReadResult{}, err
	}
	known, err := s.knownProcess(p.SessionID, p.ProcessID)
	if err != nil {
		return processReadResult{}, err
	}
	out, err := procs.ReadOutput(ctx, p.ProcessID, stream, p.Offset, limit)
	if errors.Is(err, sandbox.ErrNoProcess) && !known.Running {
		// Ended and no longer retained (lost with its sandbox, or
		// forgotten): nothing is left to read.
		end := known.End.StdoutBytes
		if stream == sandbox.Stderr {
			end = known.End.StderrBytes
		}
		return processReadResult{Offset: max(p.Offset, end), NextOffset: max(p.Offset, end), FirstRetainedOffset: end, EOF: true}, nil
	}
	if err != nil {
		return processReadResult{}, err
	}
	// A read never ends inside a character: its end waits for the next.
	data := out.Data
	if keep := wholeUTF8(data); keep < len(data) && !out.EOF {
		data = data[:keep]
	}
	text, enc := wireText(data)
	return processReadResult{Data: text, Encoding: enc, Offset: out.Offset, NextOffset: out.Offset + int64(len(data)),
		FirstRetainedOffset: out.FirstRetained, EOF: out.EOF && len(data) == len(out.Data)}, nil
}

// wholeUTF8 is the length of b without an incomplete character at its end
// (one that more bytes could complete).
func wholeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// wireText is output as the protocol carries it: UTF-8 text as is, other
// bytes as base64 with encoding "base64".
func wireText(b []byte) (data, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

type processWriteParams struct {
	processRef
	Data     string `json:"data"`
	Encoding string `json:"encoding"`
	EOF      bool   `json:"eof"`
}

// WriteProcess feeds a process's stdin.
func (s *Service) WriteProcess(ctx context.Context, p processWriteParams) (map[string]int, error) {
	data, err := decodeData(p.Data, p.Encoding, "encoding")
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > s.cfg.Limits.MaxFileBytes {
		return nil, &invalidParams{fmt.Sprintf("data of %d bytes is over the %d-byte limit", len(data), s.cfg.Limits.MaxFileBytes)}
	}
	l, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return nil, err
	}
	if _, err := s.knownProcess(p.SessionID, p.ProcessID); err != nil {
		return nil, err
	}
	if err := procs.WriteInput(ctx, p.ProcessID, data, p.EOF); err != nil {
		return nil, err
	}
	rec := eventlog.ProcessInputData{ProcessID: p.ProcessID, Bytes: len(data), Sha256: digest(data), EOF: p.EOF}
	if err := s.appendOpen(context.WithoutCancel(ctx), l, eventlog.Record{SessionID: l.id, Type: eventlog.ProcessInput, Data: rec}); err != nil {
		return nil, err
	}
	return map[string]int{"bytes": len(data)}, nil
}

type processSignalParams struct {
	processRef
	Signal string `json:"signal"`
}

// SignalProcess sends a process a signal; KILL ends it and every process
// it started.
func (s *Service) SignalProcess(ctx context.Context, p processSignalParams) (map[string]bool, error) {
	name := strings.TrimPrefix(strings.ToUpper(p.Signal), "SIG")
	if name == "" {
		name = "TERM"
	}
	sig, ok := signals[name]
	if !ok {
		return nil, &invalidParams{fmt.Sprintf("signal must be one of INT, TERM, HUP, QUIT, USR1, USR2, KILL, not %q", p.Signal)}
	}
	l, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return nil, err
	}
	if _, err := s.knownProcess(p.SessionID, p.ProcessID); err != nil {
		return nil, err
	}
	if err := procs.Signal(ctx, p.ProcessID, sig); err != nil {
		return nil, err
	}
	if err := s.appendOpen(context.WithoutCancel(ctx), l, eventlog.Record{SessionID: l.id, Type: eventlog.ProcessSignalled,
		Data: eventlog.ProcessSignalledData{ProcessID: p.ProcessID, Signal: name}}); err != nil {
		return nil, err
	}
	return map[string]bool{"sent": true}, nil
}

type processResizeParams struct {
	processRef
	ptyParams
}

// ResizeProcess sets the size of a process's terminal.
func (s *Service) ResizeProcess(ctx context.Context, p processResizeParams) (ptyParams, error) {
	size, err := p.size()
	if err != nil {
		return ptyParams{}, err
	}
	_, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return ptyParams{}, err
	}
	known, err := s.knownProcess(p.SessionID, p.ProcessID)
	if err != nil {
		return ptyParams{}, err
	}
	if !known.PTY {
		return ptyParams{}, &invalidParams{fmt.Sprintf("process %s has no terminal: start it with pty to resize it", p.ProcessID)}
	}
	if err := procs.Resize(ctx, p.ProcessID, size); err != nil {
		return ptyParams{}, err
	}
	return p.ptyParams, nil
}

type processWaitParams struct {
	processRef
	TimeoutMs *int64 `json:"timeoutMs"`
}

// WaitProcess waits for a process's end, or for the timeout, and returns
// it as process.list shows it.
func (s *Service) WaitProcess(ctx context.Context, p processWaitParams) (ProcessView, error) {
	wait := defaultWait
	if p.TimeoutMs != nil {
		if ms := *p.TimeoutMs; ms < 0 || ms > s.cfg.Limits.MaxTimeout.Milliseconds() {
			return ProcessView{}, &invalidParams{fmt.Sprintf("timeoutMs must be between 0 and %d", s.cfg.Limits.MaxTimeout.Milliseconds())}
		}
		wait = time.Duration(*p.TimeoutMs) * time.Millisecond
	}
	_, procs, err := s.sessionProcesses(ctx, p.SessionID)
	if err != nil {
		return ProcessView{}, err
	}
	known, err := s.knownProcess(p.SessionID, p.ProcessID)
	if err != nil {
		return ProcessView{}, err
	}
	if !known.Running {
		return processView(known, nil), nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := procs.Wait(waitCtx, p.ProcessID)
	switch {
	case errors.Is(err, sandbox.ErrNoProcess):
		known, _ = s.view.Process(p.SessionID, p.ProcessID)
		return processView(known, nil), nil
	case err != nil && ctx.Err() != nil:
		return ProcessView{}, ctx.Err()
	}
	return processView(known, &st), nil
}

// registerProcesses adds the process.* methods to d.
func (s *Service) registerProcesses(d *jsonrpc.Dispatcher) {
	d.Register("process.start", method(func(ctx context.Context, p ProcessStartParams) (any, error) { return s.StartProcess(ctx, p) }))
	d.Register("process.list", method(func(ctx context.Context, p processListParams) (any, error) { return s.ListProcesses(ctx, p) }))
	d.Register("process.read", method(func(ctx context.Context, p processReadParams) (any, error) { return s.ReadProcess(ctx, p) }))
	d.Register("process.write", method(func(ctx context.Context, p processWriteParams) (any, error) { return s.WriteProcess(ctx, p) }))
	d.Register("process.signal", method(func(ctx context.Context, p processSignalParams) (any, error) { return s.SignalProcess(ctx, p) }))
	d.Register("process.resize", method(func(ctx context.Context, p processResizeParams) (any, error) { return s.ResizeProcess(ctx, p) }))
	d.Register("process.wait", method(func(ctx context.Context, p processWaitParams) (any, error) { return s.WaitProcess(ctx, p) }))
}
