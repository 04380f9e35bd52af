package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// A peer that answers pings keeps its connection however idle it is; one
// that does not is dropped after PongTimeout.
func TestDeadPeersAreDropped(t *testing.T) {
	ts := newTestServer(t, func(_ *rpc.Config, o *ws.Options) { o.PongTimeout = 300 * time.Millisecond })
	alive := ts.dial() // reads all the time, so it answers pings
	silent, _, err := websocket.DefaultDialer.Dial(ts.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(1500 * time.Millisecond)

	alive.ok("session.list", map[string]any{}, nil)
	// Reading now answers the pings too late: the server has closed it.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = silent.ReadMessage()
	var netErr net.Error
	if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) {
		t.Errorf("the silent connection is still open: %v", err)
	}
}

// A connection with no request for IdleTimeout is closed with the reason,
// also when it answers pings; a request still running keeps it open.
func TestIdleConnectionsAreClosed(t *testing.T) {
	ts := newTestServer(t, func(_ *rpc.Config, o *ws.Options) { o.IdleTimeout = 500 * time.Millisecond })
	ts.server.Register("test.sleep", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		time.Sleep(1500 * time.Millisecond)
		return "slept", nil
	}))
	ws, _, err := websocket.DefaultDialer.Dial(ts.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"test.sleep"}`)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, reply, err := ws.ReadMessage(); err != nil || !strings.Contains(string(reply), "slept") {
		t.Fatalf("a request running longer than the idle timeout got %s, %v", reply, err)
	}
	replied := time.Now()
	_, _, err = ws.ReadMessage()
	var closeErr *websocket.CloseError
	if !errors.As(err, &closeErr) || closeErr.Code != websocket.CloseNormalClosure || closeErr.Text != "no request for 500ms" {
		t.Fatalf("an idle connection ended with %v, want a close frame saying why", err)
	}
	if idle := time.Since(replied); idle < 400*time.Millisecond || idle > 3*time.Second {
		t.Errorf("closed %s after the last reply, idle timeout 500ms", idle)
	}
}

// A reader that waits for a free handler slot (MaxInFlightPerConn frames
// running) longer than PongTimeout has read no pong meanwhile; the peer
// is there all the same and keeps its connection.
func TestAWaitForAHandlerSlotIsNoDeadPeer(t *testing.T) {
	ts := newTestServer(t, func(_ *rpc.Config, o *ws.Options) {
		o.PongTimeout = 600 * time.Millisecond
		o.MaxInFlightPerConn = 1
	})
	ts.server.Register("test.sleep", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		time.Sleep(1500 * time.Millisecond)
		return "slept", nil
	}))
	c := ts.dial() // reads all the time, so it answers pings
	for i := range 3 {
		c.send(`{"jsonrpc":"2.0","id":"s` + string(rune('0'+i)) + `","method":"test.sleep"}`)
	}
	for i := range 3 {
		if reply := c.next(10 * time.Second); !strings.Contains(string(reply), "slept") {
			t.Fatalf("reply %d: %s", i, reply)
		}
	}
	c.ok("session.list", map[string]any{}, nil)
}

// Internal errors are logged with the request's id; an id is the
// client's and may be as long as a frame, so a log line names the request
// by its first bytes only.
func TestInternalErrorsAreLoggedWithTheRequestID(t *testing.T) {
	var logs syncBuffer
	ts := newTestServer(t, func(_ *rpc.Config, o *ws.Options) { o.Logger = zerolog.New(&logs) })
	ts.server.Register("test.fail", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		return nil, errors.New("an internal failure")
	}))
	c := ts.dial()
	long := `"id-` + strings.Repeat("x", 1<<20) + `"`
	for _, tc := range []struct{ id, logged string }{
		{`7`, `"request":7,`},
		{long, `"request":"\"id-xxx`},
	} {
		c.send(`{"jsonrpc":"2.0","id":` + tc.id + `,"method":"test.fail"}`)
		if reply := c.next(10 * time.Second); !strings.Contains(string(reply), tc.id) {
			t.Fatalf("the reply does not echo the id: %.200s", reply)
		}
		var line string
		for deadline := time.Now().Add(10 * time.Second); line == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			for l := range strings.Lines(logs.String()) {
				if strings.Contains(l, "internal error") {
					line = l
				}
			}
		}
		logs.Reset()
		t.Logf("log line of %d bytes: %.300s", len(line), line)
		if !strings.Contains(line, tc.logged) || len(line) > 1<<10 {
			t.Errorf("want a log line with %s, got %d bytes: %.300s", tc.logged, len(line), line)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
