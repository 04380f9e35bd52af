package jsonrpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

func FuzzHandle(f *testing.F) {
	for _, ex := range specExamples {
		f.Add([]byte(ex.request))
	}
	f.Add([]byte(`{"jsonrpc":"2.0","method":"echo","params":{"a":[1,"<&>"]},"id":1e3}`))
	f.Add([]byte(`[{"jsonrpc":"2.0","method":"panics","id":-1.5},{"jsonrpc":"2.0","method":"fail","id":null}]`))

	s := &specServer{}
	d := s.dispatcher()
	d.OnInternalError = func(context.Context, *jsonrpc.Request, error) {}
	d.Register("echo", jsonrpc.HandlerFunc(echo))
	d.Register("panics", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) { panic("boom") }))
	d.Register("fail", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		return nil, jsonrpc.NewError(-32000, "failed", map[string]any{"why": "because"})
	}))

	f.Fuzz(func(t *testing.T, frame []byte) {
		reply := d.Handle(context.Background(), frame)
		s.mu.Lock()
		s.notified = nil // bound memory over a long run
		s.mu.Unlock()
		if reply == nil {
			return
		}
		if !json.Valid(reply) || !utf8.Valid(reply) {
			t.Fatalf("reply %q to %q is not valid UTF-8 JSON", reply, frame)
		}
		var batch []json.RawMessage
		if json.Unmarshal(reply, &batch) == nil {
			if trimmed := bytes.TrimLeft(frame, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '[' || len(batch) == 0 {
				t.Fatalf("array reply %s to %q", reply, frame)
			}
		} else {
			batch = []json.RawMessage{reply}
		}
		for _, r := range batch {
			checkResponse(t, r)
		}
	})
}

// checkResponse asserts the shape every response must have.
func checkResponse(t *testing.T, raw json.RawMessage) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("response %s is not an object: %v", raw, err)
	}
	_, hasResult := m["result"]
	_, hasError := m["error"]
	if string(m["jsonrpc"]) != `"2.0"` || m["id"] == nil || len(m) != 3 || hasResult == hasError {
		t.Fatalf("response %s does not have exactly jsonrpc 2.0, id and one of result or error", raw)
	}
	if hasError {
		var e struct {
			Code    *int
			Message *string
		}
		if err := json.Unmarshal(m["error"], &e); err != nil || e.Code == nil || e.Message == nil {
			t.Fatalf("response %s has a malformed error", raw)
		}
	}
}
