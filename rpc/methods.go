package rpc

import (
	"context"
	"encoding/json"
	"time"

	"github.com/codebeaker/codebeaker/projection"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// Wire shapes of the session methods, with the usage guide's field names.

type sessionConfigView struct {
	IdleTimeoutMinutes float64 `json:"idleTimeoutMinutes"`
	MaxLifetimeMinutes float64 `json:"maxLifetimeMinutes"`
	MemoryLimitMB      int     `json:"memoryLimitMB"`
	CPUShares          int     `json:"cpuShares"`
	PidsLimit          int     `json:"pidsLimit"`
	Image              string  `json:"dockerImage,omitempty"`
}

type createResult struct {
	SessionID   string            `json:"sessionId"`
	ContainerID string            `json:"containerId"`
	Language    string            `json:"language"`
	CreatedAt   time.Time         `json:"createdAt"`
	State       projection.State  `json:"state"`
	Config      sessionConfigView `json:"config"`
}

// SessionView is a session as session.list shows it. Auditors' replay shows
// the same shape for a point in the past.
type SessionView struct {
	SessionID       string           `json:"sessionId"`
	ContainerID     string           `json:"containerId"`
	Language        string           `json:"language"`
	CreatedAt       time.Time        `json:"createdAt"`
	LastActivity    time.Time        `json:"lastActivity"`
	State           projection.State `json:"state"`
	ExecutionCount  int              `json:"executionCount"`
	IdleMinutes     float64          `json:"idleMinutes"`
	LifetimeMinutes float64          `json:"lifetimeMinutes"`
}

// ViewOf is the session.list view of s at time at.
func ViewOf(s projection.Session, at time.Time) SessionView {
	return SessionView{
		SessionID: s.ID, ContainerID: s.ContainerID, Language: s.Language,
		CreatedAt: s.CreatedAt.UTC(), LastActivity: s.LastActivity.UTC(), State: s.State,
		ExecutionCount: s.ExecutionCount, IdleMinutes: s.IdleMinutes(at), LifetimeMinutes: s.LifetimeMinutes(at),
	}
}

type listResult struct {
	Count    int           `json:"count"`
	Sessions []SessionView `json:"sessions"`
}

type executeParams struct {
	SessionID string          `json:"sessionId"`
	Command   json.RawMessage `json:"command"`
}

type closeParams struct {
	SessionID string `json:"sessionId"`
}

type closeResult struct {
	SessionID string `json:"sessionId"`
	Closed    bool   `json:"closed"`
}

// register adds the session methods to d, whose replies are at most
// maxReply bytes (0: no cap).
func (s *Service) register(d *jsonrpc.Dispatcher, maxReply int) {
	d.Register("session.create", method(func(ctx context.Context, p CreateParams) (any, error) {
		sess, err := s.Create(ctx, p)
		if err != nil {
			return nil, err
		}
		c := sess.Config
		return createResult{
			SessionID: sess.ID, ContainerID: sess.ContainerID, Language: sess.Language,
			CreatedAt: sess.CreatedAt.UTC(), State: projection.Active,
			Config: sessionConfigView{c.IdleTimeoutMinutes, c.MaxLifetimeMinutes, c.MemoryLimitMB, c.CPUShares, c.PidsLimit, c.Image},
		}, nil
	}))
	d.Register("session.execute", orderedMethod(func(ctx context.Context, p executeParams) (any, error) {
		if p.SessionID == "" {
			return nil, &invalidParams{`"sessionId" is required`}
		}
		return s.Execute(ctx, p.SessionID, p.Command)
	}))
	d.Register("session.list", method(func(ctx context.Context, _ struct{}) (any, error) {
		now := time.Now()
		sessions := s.view.List()
		out := listResult{Count: len(sessions), Sessions: make([]SessionView, 0, len(sessions))}
		for _, sess := range sessions {
			out.Sessions = append(out.Sessions, ViewOf(sess, now))
		}
		return out, nil
	}))
	d.Register("session.close", method(func(ctx context.Context, p closeParams) (any, error) {
		if p.SessionID == "" {
			return nil, &invalidParams{`"sessionId" is required`}
		}
		if err := s.CloseSession(ctx, p.SessionID); err != nil {
			return nil, err
		}
		return closeResult{SessionID: p.SessionID, Closed: true}, nil
	}))
	d.Register("session.history", jsonrpc.HandlerFunc(func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		// The page must fit in the reply with its id and other members.
		room := MaxHistoryPageBytes
		if maxReply > 0 {
			room = maxReply - len(req.ID) - len(`{"jsonrpc":"2.0","id":,"result":{"events":[],"nextAfterSeq":18446744073709551615,"more":false}}`)
		}
		return method(func(ctx context.Context, p HistoryParams) (any, error) { return s.History(ctx, p, room) }).ServeRPC(ctx, req)
	}))
}

// method adapts a typed function to a JSON-RPC handler: params are decoded
// into P, errors are mapped to JSON-RPC errors. Its call does not take part
// in the connection's command order, so the next frame may go at once.
func method[P any](f func(ctx context.Context, p P) (any, error)) jsonrpc.HandlerFunc {
	ordered := orderedMethod(f)
	return func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		turnOf(ctx).admitted()
		return ordered(ctx, req)
	}
}

// orderedMethod is method for calls that queue work in a session: f must
// call turnOf(ctx).wait before queueing and admitted after.
func orderedMethod[P any](f func(ctx context.Context, p P) (any, error)) jsonrpc.HandlerFunc {
	return func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		var p P
		if err := jsonrpc.DecodeParams(req.Params, &p); err != nil {
			return nil, err
		}
		req.Params = nil // decoded: a call that waits long must not keep it
		res, err := f(ctx, p)
		return res, toRPC(err)
	}
}
