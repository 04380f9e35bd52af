package projection

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
)

// State is a session's lifecycle state.
type State string

const (
	Creating State = "Creating"
	Active   State = "Active" // created and not yet used, or running a command
	Idle     State = "Idle"   // waiting for a command
	Closing  State = "Closing"
	Closed   State = "Closed"
)

// Session is the projected view of one session.
type Session struct {
	ID             string
	Language       string
	Runtime        string
	Config         eventlog.SessionConfig
	ContainerID    string
	Workspace      string
	CreatedAt      time.Time
	LastActivity   time.Time
	State          State
	Running        bool   // a command has started and not completed
	RunningCommand string // its command id
	ExecutionCount int
	CloseReason    string
	LastSeq        uint64
}

// IdleMinutes is how long the session has waited for a command at now.
func (s Session) IdleMinutes(now time.Time) float64 {
	if s.Running {
		return 0
	}
	return minutesSince(s.LastActivity, now)
}

// LifetimeMinutes is the session's age at now.
func (s Session) LifetimeMinutes(now time.Time) float64 { return minutesSince(s.CreatedAt, now) }

// IdleDeadline is when the idle timeout closes the session, if no command
// comes first.
func (s Session) IdleDeadline() time.Time {
	return s.LastActivity.Add(minutes(s.Config.IdleTimeoutMinutes))
}

// LifetimeDeadline is when the maximum lifetime closes the session.
func (s Session) LifetimeDeadline() time.Time {
	return s.CreatedAt.Add(minutes(s.Config.MaxLifetimeMinutes))
}

func minutes(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }

func minutesSince(t, now time.Time) float64 {
	if now.Before(t) {
		return 0
	}
	return now.Sub(t).Minutes()
}

// Sessions is the projection of every session that is not closed. Closed
// sessions leave it (their history stays in the log), so its size follows
// the open sessions, not the age of the log.
type Sessions struct {
	mu      sync.RWMutex
	open    map[string]*Session
	procs   map[string][]*Process // an open session's background processes, oldest first
	lastSeq uint64
}

// Process is a background process of an open session, as the log tells
// it.
type Process struct {
	ID          string
	Name        string
	CommandName string
	Args        []string
	PTY         bool
	StartedAt   time.Time
	Running     bool
	EndedAt     time.Time
	End         eventlog.ProcessExitedData // set once it ended
}

// MaxEndedProcesses is how many ended processes of a session the
// projection keeps (the oldest go first); every one stays in the log.
const MaxEndedProcesses = 64

// NewSessions returns an empty projection.
func NewSessions() *Sessions {
	return &Sessions{open: map[string]*Session{}, procs: map[string][]*Process{}}
}

// Apply folds one event in. Events must come in sequence order; an event at
// or below the last applied sequence is ignored, so a replay that overlaps
// live updates is harmless.
func (p *Sessions) Apply(e eventlog.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Seq <= p.lastSeq {
		return nil
	}
	p.lastSeq = e.Seq
	if e.Type == eventlog.SessionCreating {
		var d eventlog.SessionCreatingData
		if err := e.Decode(&d); err != nil {
			return fmt.Errorf("projection: event %d: %w", e.Seq, err)
		}
		p.open[e.SessionID] = &Session{
			ID: e.SessionID, Language: d.Language, Runtime: d.Runtime, Config: d.Config,
			CreatedAt: e.Time, LastActivity: e.Time, State: Creating, LastSeq: e.Seq,
		}
		return nil
	}
	s := p.open[e.SessionID]
	if s == nil {
		return nil // a closed session's late event, or one of another kind of subject
	}
	s.LastSeq = e.Seq
	switch e.Type {
	case eventlog.SessionCreated:
		var d eventlog.SessionCreatedData
		if err := e.Decode(&d); err != nil {
			return fmt.Errorf("projection: event %d: %w", e.Seq, err)
		}
		s.ContainerID, s.Workspace = d.ContainerID, d.Workspace
		s.State, s.LastActivity = Active, e.Time
	case eventlog.SessionRecovered:
		var d eventlog.SessionRecoveredData
		if err := e.Decode(&d); err != nil {
			return fmt.Errorf("projection: event %d: %w", e.Seq, err)
		}
		s.ContainerID = d.ContainerID
	case eventlog.CommandInterrupted:
		s.Running, s.RunningCommand = false, ""
		if s.State == Active {
			s.State = Idle
		}
	case eventlog.CommandStarted:
		var d eventlog.CommandStartedData
		if err := e.Decode(&d); err != nil {
			return fmt.Errorf("projection: event %d: %w", e.Seq, err)
		}
		s.Running, s.RunningCommand, s.LastActivity = true, d.CommandID, e.Time
		if s.State != Closing { // a command taken just before the close began
			s.State = Active
		}
	case eventlog.CommandCompleted:
		s.Running, s.RunningCommand, s.LastActivity = false, "", e.Time
		s.ExecutionCount++
		if s.State == Active {
			s.State = Idle
		}
	case eventlog.SessionClosing:
		var d eventlog.SessionClosingData
		if err := e.Decode(&d); err != nil {
			return fmt.Errorf("projection: event %d: %w", e.Seq, err)
		}
		s.State, s.CloseReason = Closing, d.Reason
	case eventlog.SessionClosed, eventlog.SessionCreateFailed:
		delete(p.open, e.SessionID)
		delete(p.procs, e.SessionID)
	case eventlog.ProcessStarted, eventlog.ProcessInput, eventlog.ProcessSignalled, eventlog.ProcessExited:
		if err := p.applyProcess(s, e); err != nil {
			return fmt.Errorf("projection: event %d: %w", e.Seq, err)
		}
	}
	return nil
}

// applyProcess folds in an event of a session's background process. A
// client's start, input or signal is activity: it keeps the session from
// its idle timeout as a command does.
func (p *Sessions) applyProcess(s *Session, e eventlog.Event) error {
	switch e.Type {
	case eventlog.ProcessStarted:
		var d eventlog.ProcessStartedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		s.LastActivity = e.Time
		p.procs[s.ID] = append(p.procs[s.ID], &Process{ID: d.ProcessID, Name: d.Name, CommandName: d.CommandName,
			Args: d.Args, PTY: d.PTY != nil, StartedAt: e.Time, Running: true})
	case eventlog.ProcessInput, eventlog.ProcessSignalled:
		s.LastActivity = e.Time
	case eventlog.ProcessExited:
		var d eventlog.ProcessExitedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		procs := p.procs[s.ID]
		ended := 0
		for _, proc := range procs {
			if proc.ID == d.ProcessID && proc.Running {
				proc.Running, proc.EndedAt, proc.End = false, e.Time, d
			}
			if !proc.Running {
				ended++
			}
		}
		for i := 0; ended > MaxEndedProcesses && i < len(procs); {
			if procs[i].Running {
				i++
				continue
			}
			procs = append(procs[:i], procs[i+1:]...)
			ended--
		}
		p.procs[s.ID] = procs
	}
	return nil
}

// Processes returns copies of an open session's processes, oldest first.
func (p *Sessions) Processes(sessionID string) []Process {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]Process, 0, len(p.procs[sessionID]))
	for _, proc := range p.procs[sessionID] {
		out = append(out, *proc)
	}
	return out
}

// Process returns a copy of one process of an open session.
func (p *Sessions) Process(sessionID, processID string) (Process, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, proc := range p.procs[sessionID] {
		if proc.ID == processID {
			return *proc, true
		}
	}
	return Process{}, false
}

// Get returns a copy of an open session's view.
func (p *Sessions) Get(id string) (Session, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, ok := p.open[id]
	if !ok {
		return Session{}, false
	}
	return *s, true
}

// List returns copies of every open session, oldest first.
func (p *Sessions) List() []Session {
	p.mu.RLock()
	out := make([]Session, 0, len(p.open))
	for _, s := range p.open {
		out = append(out, *s)
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// LastSeq is the sequence number of the last event applied.
func (p *Sessions) LastSeq() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.lastSeq
}

// Rebuild replays the whole log into a new projection.
func Rebuild(log *eventlog.Log) (*Sessions, error) {
	p := NewSessions()
	if err := log.Scan(0, p.Apply); err != nil {
		return nil, err
	}
	return p, nil
}
