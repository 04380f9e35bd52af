package projection

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
)

// Timeline is one session's history as an auditor reads it: its events in
// order, each command's start joined to its end, and the session's state
// after the last event applied, closed sessions included.
type Timeline struct {
	SessionID string
	Entries   []Entry

	view     *Sessions
	state    Session
	known    bool
	commands map[string]Command // started, by command id
}

// Entry is one event of a timeline.
type Entry struct {
	Seq  uint64        `json:"seq"`
	ID   string        `json:"id"`
	Time time.Time     `json:"time"`
	Type eventlog.Type `json:"type"`
	// Command is set for CommandStarted, CommandCompleted and
	// CommandInterrupted: what ran and, once it ended, how.
	Command *Command `json:"command,omitempty"`
	// Process is set for the events of a background process: its payload
	// (ProcessStartedData, ProcessInputData, ProcessSignalledData or
	// ProcessExitedData).
	Process any `json:"process,omitempty"`
	// Detail says what other events carry, in words.
	Detail string `json:"detail,omitempty"`
}

// Command is a command of a timeline.
type Command struct {
	ID      string `json:"commandId"`
	Type    string `json:"type"`
	Summary string `json:"summary"` // the program and its arguments, the path, the code's first line
	// Set when it ended.
	Success         *bool  `json:"success,omitempty"`
	Error           string `json:"error,omitempty"`
	ExitCode        *int   `json:"exitCode,omitempty"`
	DurationMs      *int64 `json:"durationMs,omitempty"`
	TimedOut        bool   `json:"timedOut,omitempty"`
	OOMKilled       bool   `json:"oomKilled,omitempty"`
	Interrupted     bool   `json:"interrupted,omitempty"` // the server stopped while it ran: it has no result
	StdoutBytes     int64  `json:"stdoutBytes,omitempty"`
	StderrBytes     int64  `json:"stderrBytes,omitempty"`
	OutputCompacted bool   `json:"outputCompacted,omitempty"`
}

// NewTimeline returns an empty timeline of one session.
func NewTimeline(sessionID string) *Timeline {
	return &Timeline{SessionID: sessionID, view: NewSessions(), commands: map[string]Command{}}
}

// Apply adds one event of the session, in sequence order; events of other
// sessions are ignored.
func (t *Timeline) Apply(e eventlog.Event) error {
	if e.SessionID != t.SessionID {
		return nil
	}
	if err := t.view.Apply(e); err != nil {
		return err
	}
	entry := Entry{Seq: e.Seq, ID: e.ID.String(), Time: e.Time, Type: e.Type}
	var err error
	switch e.Type {
	case eventlog.CommandStarted:
		var d eventlog.CommandStartedData
		if err = e.Decode(&d); err == nil {
			c := Command{ID: d.CommandID, Type: d.Type, Summary: CommandSummary(d.Type, d.Command)}
			t.commands[d.CommandID] = c
			entry.Command = &c
		}
	case eventlog.CommandCompleted:
		var d eventlog.CommandCompletedData
		if err = e.Decode(&d); err == nil {
			c := t.commands[d.CommandID]
			c.ID, c.Type = d.CommandID, d.Type
			success, duration := d.Success, d.DurationMs
			c.Success, c.Error, c.ExitCode, c.DurationMs = &success, d.Error, d.ExitCode, &duration
			c.TimedOut, c.OOMKilled, c.StdoutBytes, c.StderrBytes, c.OutputCompacted = d.TimedOut, d.OOMKilled, d.StdoutBytes, d.StderrBytes, d.OutputCompacted
			delete(t.commands, d.CommandID)
			entry.Command = &c
		}
	case eventlog.CommandInterrupted:
		var d eventlog.CommandInterruptedData
		if err = e.Decode(&d); err == nil {
			c := t.commands[d.CommandID]
			c.ID, c.Interrupted = d.CommandID, true
			delete(t.commands, d.CommandID)
			entry.Command = &c
		}
	case eventlog.ProcessStarted, eventlog.ProcessInput, eventlog.ProcessSignalled, eventlog.ProcessExited:
		entry.Process, entry.Detail, err = processEntry(e)
	default:
		entry.Detail, err = detail(e)
	}
	if err != nil {
		return fmt.Errorf("projection: event %d: %w", e.Seq, err)
	}
	t.Entries = append(t.Entries, entry)

	if s, ok := t.view.Get(t.SessionID); ok {
		t.state, t.known = s, true
		return nil
	}
	if t.known || e.Type == eventlog.SessionCreateFailed { // it has just closed
		t.state.State, t.state.Running, t.state.RunningCommand, t.state.LastSeq = Closed, false, "", e.Seq
		t.known = true
		switch e.Type {
		case eventlog.SessionClosed:
			var d eventlog.SessionClosedData
			if err := e.Decode(&d); err == nil {
				t.state.CloseReason = d.Reason
			}
		case eventlog.SessionCreateFailed:
			t.state.ID, t.state.CloseReason = t.SessionID, eventlog.ReasonCreateFailed
		}
	}
	return nil
}

// State returns the session's state after the events applied: its view as
// session.list showed it then, or, once closed, with State Closed and the
// reason. ok is false when no event created the session.
func (t *Timeline) State() (s Session, ok bool) { return t.state, t.known }

func detail(e eventlog.Event) (string, error) {
	switch e.Type {
	case eventlog.SessionCreating:
		var d eventlog.SessionCreatingData
		if err := e.Decode(&d); err != nil {
			return "", err
		}
		c := d.Config
		return fmt.Sprintf("language %s (%s), idle timeout %g min, lifetime %g min, memory %d MB", d.Language, d.Runtime, c.IdleTimeoutMinutes, c.MaxLifetimeMinutes, c.MemoryLimitMB), nil
	case eventlog.SessionCreated:
		var d eventlog.SessionCreatedData
		err := e.Decode(&d)
		return "container " + d.ContainerID, err
	case eventlog.SessionCreateFailed:
		var d eventlog.SessionCreateFailedData
		err := e.Decode(&d)
		return "failed: " + d.Error, err
	case eventlog.SessionClosing:
		var d eventlog.SessionClosingData
		err := e.Decode(&d)
		return "reason " + d.Reason, err
	case eventlog.SessionClosed:
		var d eventlog.SessionClosedData
		err := e.Decode(&d)
		if d.Error != "" {
			return fmt.Sprintf("reason %s; cleanup failed: %s", d.Reason, d.Error), err
		}
		return "reason " + d.Reason, err
	case eventlog.SessionRecovered:
		var d eventlog.SessionRecoveredData
		err := e.Decode(&d)
		if d.Restored {
			return "container " + d.ContainerID + " (restored: a new sandbox on the same workspace)", err
		}
		return "container " + d.ContainerID + " (reattached)", err
	case eventlog.ContainerRemoved:
		var d eventlog.ContainerRemovedData
		err := e.Decode(&d)
		return fmt.Sprintf("container %s: %s", d.ContainerID, d.Reason), err
	}
	return "", nil
}

// processEntry is the payload of a process's event and its gist in words.
func processEntry(e eventlog.Event) (any, string, error) {
	switch e.Type {
	case eventlog.ProcessStarted:
		var d eventlog.ProcessStartedData
		err := e.Decode(&d)
		return &d, fmt.Sprintf("process %s started: %s", d.ProcessID,
			CommandSummary("execute_shell", mustJSON(map[string]any{"commandName": d.CommandName, "args": d.Args}))), err
	case eventlog.ProcessInput:
		var d eventlog.ProcessInputData
		err := e.Decode(&d)
		text := fmt.Sprintf("process %s: %d bytes of input", d.ProcessID, d.Bytes)
		if d.EOF {
			text += ", then its end"
		}
		return &d, text, err
	case eventlog.ProcessSignalled:
		var d eventlog.ProcessSignalledData
		err := e.Decode(&d)
		return &d, fmt.Sprintf("process %s sent SIG%s", d.ProcessID, d.Signal), err
	default:
		var d eventlog.ProcessExitedData
		err := e.Decode(&d)
		var how string
		switch {
		case d.Lost != "":
			how = "lost: " + d.Lost
		case d.Signal != "":
			how = "killed by SIG" + d.Signal
		case d.ExitCode != nil:
			how = fmt.Sprintf("exited with %d", *d.ExitCode)
		}
		if d.TimedOut {
			how += " (timed out)"
		}
		if d.OOMKilled {
			how += " (out of memory)"
		}
		return &d, fmt.Sprintf("process %s %s after %d ms", d.ProcessID, how, d.DurationMs), err
	}
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// CommandSummary says in one line what a command (as CommandStarted holds
// it) asked for: a program and its arguments, a path, or the first line of
// the code.
func CommandSummary(typ string, raw json.RawMessage) string {
	var c struct {
		CommandName     string   `json:"commandName"`
		Command         string   `json:"command"`
		Args            []string `json:"args"`
		Path            string   `json:"path"`
		SourcePath      string   `json:"sourcePath"`
		Source          string   `json:"source"`
		DestinationPath string   `json:"destinationPath"`
		Destination     string   `json:"destination"`
		Code            string   `json:"code"`
	}
	if len(raw) > 0 {
		json.Unmarshal(raw, &c) // a summary says what it can
	}
	first := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	switch {
	case first(c.CommandName, c.Command) != "":
		words := []string{quoteArg(first(c.CommandName, c.Command))}
		for _, a := range c.Args {
			words = append(words, quoteArg(a))
		}
		return cutSummary(strings.Join(words, " "))
	case first(c.SourcePath, c.Source) != "":
		return cutSummary(first(c.SourcePath, c.Source) + " -> " + first(c.DestinationPath, c.Destination))
	case c.Path != "":
		return cutSummary(c.Path)
	case c.Code != "":
		line, rest, _ := strings.Cut(strings.TrimSpace(c.Code), "\n")
		if rest != "" {
			line += " ..."
		}
		return cutSummary(line)
	case typ == "list_directory" || typ == "list_files":
		return "/workspace"
	}
	return ""
}

func quoteArg(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\$`;&|<>*?()") {
		return s
	}
	return strconv.Quote(s)
}

func cutSummary(s string) string {
	const limit = 120
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
