package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/codebeaker/codebeaker/cmd/codebeaker/audit"
	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
)

// auditCommand is `codebeaker audit`, reading a running server through
// this WebSocket client, so that the audit package needs no WebSocket.
func auditCommand(stdout, stderr io.Writer) *audit.Command {
	dataDir := defaultDataDir
	if v, ok := os.LookupEnv(envName("data-dir")); ok {
		dataDir = v
	}
	return &audit.Command{Stdout: stdout, Stderr: stderr, DataDir: dataDir, DialServer: dialServer}
}

// serverSource reads through a running server's session.history.
type serverSource struct {
	conn   *websocket.Conn
	nextID int
}

// dialServer connects to a server; addr may be a full ws:// URL or
// HOST:PORT.
func dialServer(ctx context.Context, addr string) (audit.Source, error) {
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

// Page is one session.history call, of the largest page the server gives.
func (s *serverSource) Page(ctx context.Context, sessionID string, afterSeq uint64) ([]eventlog.Event, bool, error) {
	var res struct {
		Events []eventlog.Event `json:"events"`
		More   bool             `json:"more"`
	}
	params := map[string]any{"afterSeq": afterSeq, "limit": rpc.MaxHistoryLimit}
	if sessionID != "" {
		params["sessionId"] = sessionID
	}
	err := s.call(ctx, "session.history", params, &res)
	return res.Events, res.More, err
}
