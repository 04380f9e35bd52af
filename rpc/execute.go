package rpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/eventlog"
)

// Envelope is the result of session.execute for every command type.
type Envelope struct {
	Success    bool    `json:"success"`
	Result     any     `json:"result"`
	Error      *string `json:"error"`
	DurationMs int64   `json:"durationMs"`
}

// job is one command waiting for its session's worker. It holds the
// decoded command only, not the frame it came in.
type job struct {
	cmd   *command
	reply chan jobResult
}

type jobResult struct {
	env Envelope
	err error
}

// Execute queues a command in its session and waits for its result, or
// for ctx to end (the command still runs and is recorded: it was accepted).
func (s *Service) Execute(ctx context.Context, sessionID string, raw json.RawMessage) (Envelope, error) {
	wait, err := s.Enqueue(sessionID, raw)
	if err != nil {
		return Envelope{}, err
	}
	type result struct {
		env Envelope
		err error
	}
	done := make(chan result, 1)
	go func() {
		env, err := wait()
		done <- result{env, err}
	}()
	select {
	case r := <-done:
		return r.env, r.err
	case <-ctx.Done():
		return Envelope{}, ctx.Err()
	}
}

// Enqueue parses a command and queues it in its session, without waiting
// for it; wait returns its result. Commands of one session run one at a
// time, in the order Enqueue took them, so a transport that keeps a
// client's order calls it in that order. Only the decoded command is kept.
func (s *Service) Enqueue(sessionID string, raw json.RawMessage) (wait func() (Envelope, error), err error) {
	cmd, err := parseCommand(raw, s.cfg.Limits)
	if err != nil {
		return nil, err
	}
	j := &job{cmd: cmd, reply: make(chan jobResult, 1)}
	if err := s.enqueue(sessionID, j); err != nil {
		return nil, err
	}
	// The command runs and is recorded even if nobody waits: it was
	// accepted.
	return func() (Envelope, error) {
		r := <-j.reply
		return r.env, r.err
	}, nil
}

func (s *Service) enqueue(sessionID string, j *job) error {
	s.mu.Lock()
	live := s.live[sessionID]
	var err error
	switch {
	case s.stopping:
		err = ErrShuttingDown
	case live == nil:
	case live.closing:
		err = fmt.Errorf("%w: session %s is closing", ErrSessionClosed, sessionID)
	default:
		select {
		case live.queue <- j:
		default:
			err = fmt.Errorf("%w: session %s already has %d commands waiting", ErrCapacity, sessionID, cap(live.queue))
		}
	}
	s.mu.Unlock()
	if live == nil && err == nil {
		return s.missing(sessionID) // reads the log: not under s.mu
	}
	return err
}

// worker runs a session's commands one at a time until the session closes.
func (s *Service) worker(l *liveSession) {
	defer s.wg.Done()
	defer close(l.done)
	for {
		select {
		case j := <-l.queue:
			j.reply <- s.runJob(l, j)
		case <-l.ctx.Done():
			for {
				select {
				case j := <-l.queue:
					err := fmt.Errorf("%w: session %s closed before the command ran", ErrSessionClosed, l.id)
					if s.ctx.Err() != nil {
						err = fmt.Errorf("%w: the command did not run; the session stays open", ErrShuttingDown)
					}
					j.reply <- jobResult{err: err}
				default:
					return
				}
			}
		}
	}
}

// runJob records the command's start, runs it and records its end; the
// reply goes out only after the end is durable.
func (s *Service) runJob(l *liveSession, j *job) jobResult {
	id := ulid.Make().String()
	ctx := l.log.With().Str("command", id).Logger().WithContext(l.ctx)
	if err := s.appendOpen(ctx, l, eventlog.Record{SessionID: l.id, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{
		CommandID: id, Type: j.cmd.Type, Command: j.cmd.audit,
	}}); err != nil {
		return jobResult{err: err}
	}
	start := time.Now()
	o, runErr := s.runCommand(ctx, l, j.cmd)
	took := time.Since(start)
	if runErr != nil {
		// The command could not be run (sandbox gone, engine down): the
		// client gets a failed command, the log gets why.
		o = outcome{err: "could not run the command: " + runErr.Error()}
		zerolog.Ctx(ctx).Error().Err(runErr).Str("type", j.cmd.Type).Msg("command failed to run")
	}
	if l.ctx.Err() != nil && !o.success {
		o.err = "the session was closed while the command ran"
		if s.ctx.Err() != nil {
			o.err = "the server is shutting down: the command was stopped (the session stays open)"
		}
	}
	env := Envelope{Success: o.success, Result: o.result, DurationMs: took.Milliseconds()}
	if !o.success {
		msg := o.err
		env.Error = &msg
	}
	rec := o.audit
	rec.CommandID, rec.Type, rec.Success, rec.Error, rec.DurationMs = id, j.cmd.Type, o.success, o.err, took.Milliseconds()
	rec.Error, _ = eventlog.Cut(rec.Error, s.cfg.Limits.StoredOutputBytes) // execute_code's error is its stderr
	rec.SetOutput(o.stdout, o.stderr, s.cfg.Limits.StoredOutputBytes)
	if err := s.appendOpen(context.WithoutCancel(ctx), l, eventlog.Record{SessionID: l.id, Type: eventlog.CommandCompleted, Data: rec}); err != nil {
		if errors.Is(err, ErrSessionClosed) { // the close recorded it interrupted
			msg := "the session was closed while the command ran"
			return jobResult{env: Envelope{Result: o.result, Error: &msg, DurationMs: took.Milliseconds()}}
		}
		return jobResult{err: err}
	}
	return jobResult{env: env}
}

// auditCopy is the command as the client sent it, for the log. Past limit
// bytes, strings longer than a quarter of it are cut wherever they are; a
// copy still larger than limit (many fields, long lists) is replaced by the
// command's type, size and digest, so no command makes a large event.
func auditCopy(raw json.RawMessage, typ string, limit int) json.RawMessage {
	if len(raw) <= limit {
		return bytes.Clone(raw)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil
	}
	out, _ := json.Marshal(cutStrings(v, limit/4))
	if len(out) > limit {
		sum := sha256.Sum256(raw)
		out, _ = json.Marshal(map[string]any{"type": typ, "cut": true, "bytes": len(raw), "sha256": hex.EncodeToString(sum[:])})
	}
	return out
}

func cutStrings(v any, n int) any {
	switch t := v.(type) {
	case string:
		if kept, cut := eventlog.Cut(t, n); cut {
			return fmt.Sprintf("%s... [%d bytes, cut]", kept, len(t))
		}
	case []any:
		for i := range t {
			t[i] = cutStrings(t[i], n)
		}
	case map[string]any:
		for k, x := range t {
			t[k] = cutStrings(x, n)
		}
	}
	return v
}
