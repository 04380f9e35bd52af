package rpc

import (
	"context"
	"fmt"

	"github.com/codebeaker/codebeaker/eventlog"
)

// History paging limits of session.history.
const (
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
)

// HistoryParams are the params of session.history.
type HistoryParams struct {
	// SessionID names the session; empty means the whole log, every
	// session (closed ones too) and the events of no session.
	SessionID string `json:"sessionId"`
	// AfterSeq returns the events after this seq: 0 for the first page,
	// then the previous page's NextAfterSeq.
	AfterSeq uint64 `json:"afterSeq"`
	// Limit is the most events returned: DefaultHistoryLimit when absent,
	// at most MaxHistoryLimit.
	Limit *int `json:"limit"`
}

// HistoryResult is the result of session.history. Events are the stored
// envelopes (seq, id, sessionId, time, type, v, data, hash), with data in
// the current payload shape.
type HistoryResult struct {
	Events       []eventlog.Event `json:"events"`
	NextAfterSeq uint64           `json:"nextAfterSeq"` // the afterSeq of the next page
	More         bool             `json:"more"`         // whether events came after this page when it was read
}

// History returns a page of a session's events, or of the whole log, from
// the event log: it works for closed sessions as for open ones.
func (s *Service) History(ctx context.Context, p HistoryParams) (HistoryResult, error) {
	limit := DefaultHistoryLimit
	if p.Limit != nil {
		limit = *p.Limit
		if limit < 1 || limit > MaxHistoryLimit {
			return HistoryResult{}, &invalidParams{fmt.Sprintf(`"limit" must be between 1 and %d`, MaxHistoryLimit)}
		}
	}
	var (
		events []eventlog.Event
		err    error
	)
	// One more than asked tells whether there are more.
	if p.SessionID == "" {
		events, err = s.log.Events(p.AfterSeq, limit+1)
	} else {
		var known bool
		if known, err = s.log.HasSession(p.SessionID); err == nil && !known {
			return HistoryResult{}, fmt.Errorf("%w: no session with id %q", ErrSessionNotFound, p.SessionID)
		}
		if err == nil {
			events, err = s.log.SessionEvents(p.SessionID, p.AfterSeq, limit+1)
		}
	}
	if err != nil {
		return HistoryResult{}, err
	}
	res := HistoryResult{Events: events, NextAfterSeq: p.AfterSeq}
	if len(events) > limit {
		res.Events, res.More = events[:limit], true
	}
	if res.Events == nil {
		res.Events = []eventlog.Event{}
	}
	if n := len(res.Events); n > 0 {
		res.NextAfterSeq = res.Events[n-1].Seq
	}
	return res, nil
}
