package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
)

// replay is `codebeaker audit replay`: the sessions rebuilt from the log
// alone, up to a point.
func (c *Command) replay(ctx context.Context, args []string) error {
	fs := c.flagSet("replay", "(--data-dir DIR | --server URL) [--session ID] [--until SEQ|TIME] [--format text|json]")
	source := c.addSourceFlags(fs)
	session := fs.String("session", "", "show this session's timeline and state, instead of every open session")
	var point until
	fs.Var(&point, "until", "replay up to and including event `SEQ`, or the events up to an RFC 3339 TIME")
	format := fs.String("format", "text", "output `format`: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--format must be text or json, not %q", *format)
	}
	src, err := source.open(ctx, fs)
	if err != nil {
		return err
	}
	defer src.Close()
	if *session != "" {
		return c.replaySession(ctx, src, *session, point, *format)
	}
	return c.replayService(ctx, src, point, *format)
}

// serviceState is the whole service at a point: session.list's result,
// and where in the log that is.
type serviceState struct {
	AtSeq    uint64                   `json:"atSeq"` // the last event replayed
	At       time.Time                `json:"at"`    // the time idle and lifetime minutes are computed at
	Count    int                      `json:"count"`
	Sessions []projection.SessionView `json:"sessions"`
}

// at is the time a replay up to point describes: the time given, the time
// of event point.seq when the log reaches it, or now.
func at(point until, last eventlog.Event) time.Time {
	switch {
	case !point.time.IsZero():
		return point.time
	case point.seq > 0 && last.Seq == point.seq:
		return last.Time
	}
	return time.Now()
}

func (c *Command) replayService(ctx context.Context, src eventSource, point until, format string) error {
	p := projection.NewSessions()
	var last eventlog.Event
	if err := src.each(ctx, "", 0, func(e eventlog.Event) error {
		if point.past(e) {
			return errStop
		}
		last = e
		return p.Apply(e)
	}); err != nil {
		return err
	}
	state := serviceState{AtSeq: last.Seq, At: at(point, last).UTC(), Sessions: []projection.SessionView{}}
	for _, s := range p.List() {
		state.Sessions = append(state.Sessions, projection.ViewOf(s, state.At))
	}
	state.Count = len(state.Sessions)
	if format == "json" {
		return writeJSON(c.Stdout, state)
	}
	fmt.Fprintf(c.Stdout, "%d open sessions after event %d, at %s\n", state.Count, state.AtSeq, state.At.Format(time.RFC3339Nano))
	if state.Count == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tLANGUAGE\tSTATE\tCOMMANDS\tCREATED\tLAST ACTIVITY\tIDLE MIN\tLIFETIME MIN")
	for _, s := range state.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%.1f\t%.1f\n", s.SessionID, s.Language, s.State, s.ExecutionCount,
			s.CreatedAt.Format(time.RFC3339), s.LastActivity.Format(time.RFC3339), s.IdleMinutes, s.LifetimeMinutes)
	}
	return tw.Flush()
}

// sessionReplay is one session at a point.
type sessionReplay struct {
	SessionID string             `json:"sessionId"`
	AtSeq     uint64             `json:"atSeq"`
	At        time.Time          `json:"at"`
	Events    []projection.Entry `json:"events"`
	State     sessionState       `json:"state"`
}

type sessionState struct {
	projection.SessionView
	Running     bool   `json:"running"`
	CloseReason string `json:"closeReason,omitempty"`
}

func (c *Command) replaySession(ctx context.Context, src eventSource, id string, point until, format string) error {
	tl := projection.NewTimeline(id)
	if err := src.each(ctx, id, 0, func(e eventlog.Event) error {
		if point.past(e) {
			return errStop
		}
		return tl.Apply(e)
	}); err != nil {
		return err
	}
	s, ok := tl.State()
	if len(tl.Entries) == 0 || !ok {
		return fmt.Errorf("session %s has no events up to %s", id, point.String())
	}
	// The point in the whole log: event point.seq, if the log has it.
	var last eventlog.Event
	if point.seq > 0 {
		if err := src.each(ctx, "", point.seq-1, func(e eventlog.Event) error { last = e; return errStop }); err != nil {
			return err
		}
	}
	r := sessionReplay{SessionID: id, AtSeq: tl.Entries[len(tl.Entries)-1].Seq, At: at(point, last).UTC(), Events: tl.Entries}
	if last.Seq == point.seq && point.seq > 0 {
		r.AtSeq = point.seq
	}
	r.State = sessionState{SessionView: projection.ViewOf(s, r.At), Running: s.Running, CloseReason: s.CloseReason}
	if s.State == projection.Closed {
		r.State.IdleMinutes, r.State.LifetimeMinutes = 0, 0
	}
	if format == "json" {
		return writeJSON(c.Stdout, r)
	}
	return writeTimeline(c.Stdout, r)
}

func writeTimeline(w io.Writer, r sessionReplay) error {
	st := r.State
	fmt.Fprintf(w, "session %s (%s), after event %d, at %s\n\n", r.SessionID, st.Language, r.AtSeq, r.At.Format(time.RFC3339Nano))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSEQ\tEVENT\tWHAT")
	for _, e := range r.Events {
		what := e.Detail
		if e.Command != nil {
			what = commandText(e.Type, e.Command)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339Nano), e.Seq, e.Type, what)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nstate: %s", st.State)
	if st.State == projection.Closed {
		fmt.Fprintf(w, " (reason %s)", st.CloseReason)
	} else if st.CloseReason != "" {
		fmt.Fprintf(w, " (closing, reason %s)", st.CloseReason)
	}
	fmt.Fprintf(w, ", %d commands run", st.ExecutionCount)
	if st.Running {
		fmt.Fprint(w, ", one running")
	}
	fmt.Fprintf(w, ", created %s, last activity %s", st.CreatedAt.Format(time.RFC3339), st.LastActivity.Format(time.RFC3339))
	if st.State != projection.Closed {
		fmt.Fprintf(w, ", idle %.1f min, lifetime %.1f min", st.IdleMinutes, st.LifetimeMinutes)
	}
	fmt.Fprintln(w)
	return nil
}

// commandText is a command's line of a timeline.
func commandText(typ eventlog.Type, c *projection.Command) string {
	text := c.Type
	if c.Summary != "" {
		text += ": " + c.Summary
	}
	switch {
	case c.Interrupted:
		return text + " -> interrupted: the server stopped while it ran, no result"
	case typ != eventlog.CommandCompleted || c.Success == nil:
		return text
	}
	var parts []string
	if c.ExitCode != nil {
		parts = append(parts, fmt.Sprintf("exit %d", *c.ExitCode))
	}
	if c.DurationMs != nil {
		parts = append(parts, fmt.Sprintf("%d ms", *c.DurationMs))
	}
	if *c.Success {
		parts = append(parts, "success")
	} else {
		parts = append(parts, "failed: "+firstLine(c.Error))
	}
	if c.TimedOut {
		parts = append(parts, "timed out")
	}
	if c.OOMKilled {
		parts = append(parts, "out of memory")
	}
	if c.OutputCompacted {
		parts = append(parts, "output compacted")
	}
	return text + " -> " + strings.Join(parts, ", ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
