package jsonrpc_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// specExamples are the "Examples" section of the JSON-RPC 2.0 specification,
// verbatim. An empty reply means no reply frame at all.
var specExamples = []struct{ name, request, reply string }{
	{"positional params", `{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}`,
		`{"jsonrpc": "2.0", "result": 19, "id": 1}`},
	{"positional params reversed", `{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}`,
		`{"jsonrpc": "2.0", "result": -19, "id": 2}`},
	{"named params", `{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}`,
		`{"jsonrpc": "2.0", "result": 19, "id": 3}`},
	{"named params reordered", `{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}`,
		`{"jsonrpc": "2.0", "result": 19, "id": 4}`},
	{"notification", `{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}`, ``},
	{"notification of a missing method", `{"jsonrpc": "2.0", "method": "foobar"}`, ``},
	{"non-existent method", `{"jsonrpc": "2.0", "method": "foobar", "id": "1"}`,
		`{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}`},
	{"invalid JSON", `{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]`,
		`{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}`},
	{"invalid Request object", `{"jsonrpc": "2.0", "method": 1, "params": "bar"}`,
		`{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}`},
	{"batch, invalid JSON", `[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]`, `{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}`},
	{"empty array", `[]`,
		`{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}`},
	{"invalid batch, not empty", `[1]`, `[
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}
]`},
	{"invalid batch", `[1,2,3]`, `[
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}
]`},
	{"batch", `[
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
	{"batch of notifications", `[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`, ``},
}

// specServer serves the specification's example methods and records the
// notifications it receives. "foobar" is deliberately not registered: the
// examples call it as the non-existent method.
type specServer struct {
	mu       sync.Mutex
	notified []string // method and params of every update and notify_hello
}

func (s *specServer) dispatcher() *jsonrpc.Dispatcher {
	d := &jsonrpc.Dispatcher{}
	d.Register("subtract", jsonrpc.HandlerFunc(subtract))
	d.Register("sum", jsonrpc.HandlerFunc(sum))
	d.Register("get_data", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		return []any{"hello", 5}, nil
	}))
	record := jsonrpc.HandlerFunc(func(_ context.Context, req *jsonrpc.Request) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.notified = append(s.notified, req.Method+" "+string(req.Params))
		return nil, nil
	})
	d.Register("update", record)
	d.Register("notify_hello", record)
	return d
}

func subtract(_ context.Context, req *jsonrpc.Request) (any, error) {
	if len(req.Params) > 0 && req.Params[0] == '[' {
		var p []float64
		if err := jsonrpc.DecodeParams(req.Params, &p); err != nil {
			return nil, err
		}
		if len(p) != 2 {
			return nil, jsonrpc.InvalidParams("subtract takes 2 numbers, not %d", len(p))
		}
		return p[0] - p[1], nil
	}
	var p struct{ Minuend, Subtrahend float64 }
	if err := jsonrpc.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	return p.Minuend - p.Subtrahend, nil
}

func sum(_ context.Context, req *jsonrpc.Request) (any, error) {
	var p []float64
	if err := jsonrpc.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	total := 0.0
	for _, x := range p {
		total += x
	}
	return total, nil
}

func TestSpecificationExamples(t *testing.T) {
	for _, ex := range specExamples {
		t.Run(ex.name, func(t *testing.T) {
			s := &specServer{}
			got := s.dispatcher().Handle(context.Background(), []byte(ex.request))
			assertReply(t, got, ex.reply)
		})
	}
}

func TestSpecificationNotificationsRun(t *testing.T) {
	s := &specServer{}
	d := s.dispatcher()
	for _, ex := range specExamples {
		d.Handle(context.Background(), []byte(ex.request))
	}
	slices.Sort(s.notified)
	want := []string{"notify_hello [7]", "notify_hello [7]", "update [1,2,3,4,5]"}
	if !slices.Equal(s.notified, want) {
		t.Errorf("notifications handled: %q, want %q", s.notified, want)
	}
}

// assertReply compares JSON semantically. The specification's examples show
// no "data" member; where one is expected to be absent, any data is ignored
// here (the package adds a short reason to Invalid Request errors) and is
// checked by its own tests.
func assertReply(t *testing.T, got []byte, want string) {
	t.Helper()
	if want == "" {
		if got != nil {
			t.Fatalf("reply %s, want none", got)
		}
		return
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("reply %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation %q: %v", want, err)
	}
	dropUnexpectedData(g, w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("reply\n%s\nwant\n%s", got, want)
	}
}

func dropUnexpectedData(got, want any) {
	switch w := want.(type) {
	case []any:
		if g, ok := got.([]any); ok && len(g) == len(w) {
			for i := range g {
				dropUnexpectedData(g[i], w[i])
			}
		}
	case map[string]any:
		g, _ := got.(map[string]any)
		ge, _ := g["error"].(map[string]any)
		we, _ := w["error"].(map[string]any)
		if ge != nil && we != nil && we["data"] == nil {
			delete(ge, "data")
		}
	}
}
