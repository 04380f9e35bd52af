package rpc

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// History paging limits of session.history.
const (
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
	// MaxHistoryPageBytes bounds the events of one page, encoded (the
	// reply cap too, when lower): a page ends early with more: true
	// rather than pass it.
	MaxHistoryPageBytes = 4 << 20
	// historyConcurrency is how many session.history calls build pages at
	// once; more wait their turn.
	historyConcurrency = 4
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
// the event log: it works for closed sessions as for open ones. The page
// stops growing before its events, encoded, pass MaxHistoryPageBytes or
// maxBytes: it ends early with More set. An event that alone is over
// maxBytes cannot be sent; when it comes first, the call fails with -32005
// naming its seq.
func (s *Service) History(ctx context.Context, p HistoryParams, maxBytes int) (HistoryResult, error) {
	limit := DefaultHistoryLimit
	if p.Limit != nil {
		limit = *p.Limit
		if limit < 1 || limit > MaxHistoryLimit {
			return HistoryResult{}, &invalidParams{fmt.Sprintf(`"limit" must be between 1 and %d`, MaxHistoryLimit)}
		}
	}
	read := func(after uint64, n int) ([]eventlog.Event, error) { return s.log.Events(after, n) }
	if p.SessionID != "" {
		known, err := s.log.HasSession(p.SessionID)
		if err != nil {
			return HistoryResult{}, err
		}
		if !known {
			return HistoryResult{}, fmt.Errorf("%w: no session with id %q", ErrSessionNotFound, p.SessionID)
		}
		read = func(after uint64, n int) ([]eventlog.Event, error) { return s.log.SessionEvents(p.SessionID, after, n) }
	}
	// Pages are built a few at a time, so that many calls cannot hold many
	// pages.
	select {
	case s.historySlots <- struct{}{}:
		defer func() { <-s.historySlots }()
	case <-ctx.Done():
		return HistoryResult{}, ctx.Err()
	}
	pageBytes := min(maxBytes, MaxHistoryPageBytes)
	res := HistoryResult{Events: []eventlog.Event{}, NextAfterSeq: p.AfterSeq}
	size := 0
	for after := p.AfterSeq; ; {
		// Read a few events at a time, and one more than asked to tell
		// whether there are more.
		want := min(historyChunk, limit+1-len(res.Events))
		chunk, err := read(after, want)
		if err != nil {
			return HistoryResult{}, err
		}
		for _, e := range chunk {
			n, err := encodedSize(e)
			if err != nil {
				return HistoryResult{}, err
			}
			if len(res.Events) == limit || len(res.Events) > 0 && size+n > pageBytes {
				res.More = true
				return res, nil
			}
			if n > maxBytes {
				return HistoryResult{}, jsonrpc.NewError(CodeMessageTooLarge, "reply too large",
					map[string]any{"bytes": n, "maxBytes": maxBytes, "seq": e.Seq})
			}
			res.Events = append(res.Events, e)
			res.NextAfterSeq = e.Seq
			size += n + 1
		}
		if len(chunk) < want {
			return res, nil
		}
		after = chunk[len(chunk)-1].Seq
	}
}

// historyChunk is how many events History reads at once: what it may read
// past a page that ends early.
const historyChunk = 16

// encodedSize is how many bytes v takes in a reply.
func encodedSize(v any) (int, error) {
	var n countingWriter
	enc := json.NewEncoder(&n)
	enc.SetEscapeHTML(false) // as the dispatcher encodes replies
	err := enc.Encode(v)
	return int(n) - 1, err // Encode adds a newline
}

type countingWriter int

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
