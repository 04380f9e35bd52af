package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
)

// eventSource is where replay and export read events: the data file, or a
// running server's session.history.
type eventSource interface {
	// each calls fn with the events after afterSeq, of one session or, for
	// "", of the whole log, in order, until fn returns errStop (each then
	// returns nil), another error, or the events end.
	each(ctx context.Context, sessionID string, afterSeq uint64, fn func(eventlog.Event) error) error
	Close() error
}

var errStop = errors.New("stop")

// sourceFlags are the flags that choose an eventSource.
type sourceFlags struct {
	dataDir *string
	server  *string
}

func addSourceFlags(fs *flag.FlagSet) sourceFlags {
	return sourceFlags{
		dataDir: dataDirFlag(fs),
		server:  fs.String("server", "", "read through a running server at this `URL` (ws://HOST:PORT/ws/jsonrpc) instead of the data file"),
	}
}

func (f sourceFlags) open(ctx context.Context, fs *flag.FlagSet) (eventSource, error) {
	if *f.server != "" {
		dataDirSet := false
		fs.Visit(func(fl *flag.Flag) { dataDirSet = dataDirSet || fl.Name == "data-dir" })
		if dataDirSet {
			return nil, errors.New("give --data-dir or --server, not both")
		}
		return dialServer(ctx, *f.server)
	}
	path := logPath(*f.dataDir)
	l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: auditLockTimeout})
	if err != nil {
		return nil, inUse(err, path, "stop it, or read through it with --server ws://HOST:PORT/ws/jsonrpc")
	}
	return localSource{l}, nil
}

// localSource reads the data file, read-only.
type localSource struct{ log *eventlog.Log }

func (s localSource) Close() error { return s.log.Close() }

func (s localSource) each(ctx context.Context, sessionID string, afterSeq uint64, fn func(eventlog.Event) error) error {
	var err error
	if sessionID == "" {
		err = s.log.Scan(afterSeq, func(e eventlog.Event) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(e)
		})
	} else {
		if ok, herr := s.log.HasSession(sessionID); herr != nil || !ok {
			return errors.Join(herr, fmt.Errorf("no session %q in the log", sessionID))
		}
		err = pages(ctx, afterSeq, fn, func(after uint64) ([]eventlog.Event, bool, error) {
			events, err := s.log.SessionEvents(sessionID, after, 1000)
			return events, len(events) == 1000, err
		})
	}
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// pages calls fn with the events of the pages next returns.
func pages(ctx context.Context, after uint64, fn func(eventlog.Event) error, next func(after uint64) ([]eventlog.Event, bool, error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		events, more, err := next(after)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		if !more || len(events) == 0 {
			return nil
		}
	}
}

// serverSource reads through a running server's session.history.
type serverSource struct {
	conn   *websocket.Conn
	nextID int
}

// dialServer connects to a server; addr may be a full ws:// URL or
// HOST:PORT.
func dialServer(ctx context.Context, addr string) (*serverSource, error) {
	if !strings.Contains(addr, "://") {
		addr = "ws://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", addr, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/ws/jsonrpc"
	}
	dialer := *websocket.DefaultDialer
	dialer.HandshakeTimeout = 10 * time.Second
	conn, _, err := dialer.DialContext(ctx, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("connect to the server at %s: %w", u, err)
	}
	conn.SetReadLimit(256 << 20)
	return &serverSource{conn: conn}, nil
}

func (s *serverSource) Close() error { return s.conn.Close() }

// rpcError is a JSON-RPC error the server answered.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (e *rpcError) Error() string {
	if len(e.Data) > 0 && string(e.Data) != "null" {
		var detail string
		if json.Unmarshal(e.Data, &detail) == nil {
			return fmt.Sprintf("%s: %s (JSON-RPC error %d)", e.Message, detail, e.Code)
		}
	}
	return fmt.Sprintf("%s (JSON-RPC error %d)", e.Message, e.Code)
}

// call makes one call and waits for its answer; calls are not concurrent.
func (s *serverSource) call(ctx context.Context, method string, params, result any) error {
	s.nextID++
	deadline := time.Now().Add(time.Minute)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.conn.SetWriteDeadline(deadline)
	s.conn.SetReadDeadline(deadline)
	if err := s.conn.WriteJSON(map[string]any{"jsonrpc": "2.0", "id": s.nextID, "method": method, "params": params}); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	for {
		var resp struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *rpcError       `json:"error"`
		}
		if err := s.conn.ReadJSON(&resp); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		if resp.ID != s.nextID {
			continue
		}
		if resp.Error != nil {
			return fmt.Errorf("%s: %w", method, resp.Error)
		}
		return json.Unmarshal(resp.Result, result)
	}
}

func (s *serverSource) each(ctx context.Context, sessionID string, afterSeq uint64, fn func(eventlog.Event) error) error {
	err := pages(ctx, afterSeq, fn, func(after uint64) ([]eventlog.Event, bool, error) {
		var res struct {
			Events []eventlog.Event `json:"events"`
			More   bool             `json:"more"`
		}
		params := map[string]any{"afterSeq": after, "limit": rpc.MaxHistoryLimit}
		if sessionID != "" {
			params["sessionId"] = sessionID
		}
		err := s.call(ctx, "session.history", params, &res)
		return res.Events, res.More, err
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}
