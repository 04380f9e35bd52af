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

type listResult struct {
	Count    int                      `json:"count"`
	Sessions []projection.SessionView `json:"sessions"`
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

// Register adds the session methods to d. Every transport serves the same
// methods through its own dispatcher.
func (s *Service) Register(d *jsonrpc.Dispatcher) {
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
	d.Register("session.execute", admission(func(p executeParams) (func() (any, error), error) {
		if p.SessionID == "" {
			return nil, &invalidParams{`"sessionId" is required`}
		}
		wait, err := s.Enqueue(p.SessionID, p.Command)
		if err != nil {
			return nil, err
		}
		return func() (any, error) { return wait() }, nil
	}))
	d.Register("session.list", method(func(ctx context.Context, _ struct{}) (any, error) {
		now := time.Now()
		sessions := s.view.List()
		out := listResult{Count: len(sessions), Sessions: make([]projection.SessionView, 0, len(sessions))}
		for _, sess := range sessions {
			out.Sessions = append(out.Sessions, projection.ViewOf(sess, now))
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
	s.registerProcesses(d)
	d.Register("session.history", jsonrpc.HandlerFunc(func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		// The page must fit in the reply with its id and other members.
		room := MaxHistoryPageBytes
		if d.MaxReplyBytes > 0 {
			room = d.MaxReplyBytes - len(req.ID) - len(`{"jsonrpc":"2.0","id":,"result":{"events":[],"nextAfterSeq":18446744073709551615,"more":false}}`)
		}
		return method(func(ctx context.Context, p HistoryParams) (any, error) { return s.History(ctx, p, room) }).ServeRPC(ctx, req)
	}))
}

// method adapts a typed function to a JSON-RPC handler: params are decoded
// into P, errors are mapped to JSON-RPC errors.
func method[P any](f func(ctx context.Context, p P) (any, error)) jsonrpc.HandlerFunc {
	return func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		var p P
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		res, err := f(ctx, p)
		return res, toRPC(err)
	}
}

// admission adapts a function that queues work to a jsonrpc.Admitter: it
// runs when the call is admitted, in the order of the connection's frames;
// the function it returns waits for the work.
func admission[P any](f func(p P) (finish func() (any, error), err error)) jsonrpc.Admitter {
	return admitter(func(ctx context.Context, req *jsonrpc.Request) (func() (any, error), error) {
		var p P
		if err := decode(req, &p); err != nil {
			return nil, err
		}
		finish, err := f(p)
		if err != nil {
			return nil, toRPC(err)
		}
		return func() (any, error) {
			res, err := finish()
			return res, toRPC(err)
		}, nil
	})
}

type admitter func(ctx context.Context, req *jsonrpc.Request) (func() (any, error), error)

func (a admitter) Admit(ctx context.Context, req *jsonrpc.Request) (func() (any, error), error) {
	return a(ctx, req)
}

func (a admitter) ServeRPC(ctx context.Context, req *jsonrpc.Request) (any, error) {
	finish, err := a(ctx, req)
	if err != nil {
		return nil, err
	}
	return finish()
}

// decode decodes a call's params, then drops them from the request: a
// call that waits long must not keep a large one.
func decode(req *jsonrpc.Request, p any) *jsonrpc.Error {
	if err := jsonrpc.DecodeParams(req.Params, p); err != nil {
		return err
	}
	req.Params = nil
	return nil
}
