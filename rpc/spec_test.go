package rpc_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// The JSON-RPC 2.0 specification's examples over a real WebSocket, with
// test-only methods for the ones that need them. The codec's own tests
// cover every example in depth; this proves the transport carries them:
// batches come back as one frame, notifications get no frame at all.
func TestSpecificationOverWebSocket(t *testing.T) {
	ts := newTestServer(t)
	ts.server.Register("subtract", jsonrpc.HandlerFunc(func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		var pos []float64
		if err := json.Unmarshal(req.Params, &pos); err == nil && len(pos) == 2 {
			return pos[0] - pos[1], nil
		}
		var named struct{ Minuend, Subtrahend float64 }
		if err := jsonrpc.DecodeParams(req.Params, &named); err != nil {
			return nil, err
		}
		return named.Minuend - named.Subtrahend, nil
	}))
	ts.server.Register("sum", jsonrpc.HandlerFunc(func(ctx context.Context, req *jsonrpc.Request) (any, error) {
		var nums []float64
		if err := jsonrpc.DecodeParams(req.Params, &nums); err != nil {
			return nil, err
		}
		total := 0.0
		for _, n := range nums {
			total += n
		}
		return total, nil
	}))
	for _, m := range []string{"update", "notify_hello", "notify_sum"} {
		ts.server.Register(m, jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) { return nil, nil }))
	}
	ts.server.Register("get_data", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		return []any{"hello", 5}, nil
	}))
	c := ts.dial()

	cases := []struct{ send, want string }{
		{`{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}`, `{"jsonrpc": "2.0", "result": 19, "id": 1}`},
		{`{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}`, `{"jsonrpc": "2.0", "result": 19, "id": 3}`},
		{`{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": "two"}`, `{"jsonrpc": "2.0", "result": -19, "id": "two"}`},
		{`{"jsonrpc": "2.0", "method": "foobar", "id": "1"}`, `{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}`},
		{`{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]`, `{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}`},
		{`{"jsonrpc": "2.0", "method": 1, "params": "bar"}`, `{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}`},
		{`[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]`, `{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}`},
		{`[]`, `{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}`},
		{`[1]`, `[{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}]`},
		{`[1,2,3]`, `[{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}]`},
		{`[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"} 
    ]`, `[
        {"jsonrpc": "2.0", "result": 7, "id": "1"},
        {"jsonrpc": "2.0", "result": 19, "id": "2"},
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
        {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    ]`},
	}
	// Frames here carry ids the client does not track, so every reply
	// arrives through next(); notifications must produce none, which the
	// frame after them proves.
	notifications := []string{
		`{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}`,
		`{"jsonrpc": "2.0", "method": "foobar"}`,
		`[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`,
	}
	for _, n := range notifications {
		c.send(n)
	}
	for _, tc := range cases {
		c.send(tc.send)
		got := c.next(10 * time.Second)
		if !sameRPC(t, got, tc.want) {
			t.Errorf("sent %s\n got %s\nwant %s", tc.send, got, tc.want)
		}
	}
	var list struct{ Count int }
	if c.ok("session.list", map[string]any{}, &list); list.Count != 0 {
		t.Errorf("session.list count %d", list.Count)
	}
	select {
	case f := <-c.frames:
		t.Errorf("a notification was answered: %s", f)
	default:
	}
}

// sameRPC compares responses as JSON, ignoring error data (the server adds
// a reason the specification's examples do not show).
func sameRPC(t *testing.T, got []byte, want string) bool {
	t.Helper()
	norm := func(b []byte) string {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("not JSON: %s", b)
		}
		strip := func(m any) {
			if obj, ok := m.(map[string]any); ok {
				if e, ok := obj["error"].(map[string]any); ok {
					delete(e, "data")
				}
			}
		}
		if arr, ok := v.([]any); ok {
			for _, m := range arr {
				strip(m)
			}
		} else {
			strip(v)
		}
		out, _ := json.Marshal(v)
		return string(out)
	}
	return norm(got) == norm([]byte(want))
}
