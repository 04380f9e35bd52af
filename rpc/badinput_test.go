package rpc_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// Every bad request gets a clear error, and the server goes on serving.
func TestBadInput(t *testing.T) {
	ts := newTestServer(t, func(cfg *rpc.Config, o *ws.Options) {
		o.MaxMessageBytes = 1 << 20
		cfg.Limits.MaxFileBytes = 64 << 10
	})
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	closed := c.create(map[string]any{"language": "python"})
	c.ok("session.close", map[string]any{"sessionId": closed}, nil)

	errCases := []struct {
		name   string
		method string
		params any
		code   int
		says   string
	}{
		{"unknown session", "session.execute", map[string]any{"sessionId": "nosuch", "command": map[string]any{"type": "read_file", "path": "a"}}, rpc.CodeSessionNotFound, "nosuch"},
		{"closed session", "session.execute", map[string]any{"sessionId": closed, "command": map[string]any{"type": "read_file", "path": "a"}}, rpc.CodeSessionClosed, "closed"},
		{"close unknown", "session.close", map[string]any{"sessionId": "nosuch"}, rpc.CodeSessionNotFound, "nosuch"},
		{"close twice", "session.close", map[string]any{"sessionId": closed}, rpc.CodeSessionClosed, "closed"},
		{"unknown command type", "session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "format_disk"}}, jsonrpc.CodeInvalidParams, "unknown command type"},
		{"no command", "session.execute", map[string]any{"sessionId": sid}, jsonrpc.CodeInvalidParams, "command"},
		{"command not an object", "session.execute", map[string]any{"sessionId": sid, "command": "ls"}, jsonrpc.CodeInvalidParams, "object"},
		{"no type", "session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"path": "a"}}, jsonrpc.CodeInvalidParams, "type"},
		{"write without content", "session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "write_file", "path": "a"}}, jsonrpc.CodeInvalidParams, "content"},
		{"shell without program", "session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "execute_shell"}}, jsonrpc.CodeInvalidParams, "commandName"},
		{"args of wrong type", "session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "execute_shell", "commandName": "ls", "args": "-la"}}, jsonrpc.CodeInvalidParams, "args"},
		{"bad write mode", "session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "write_file", "path": "a", "content": "", "mode": "Truncate"}}, jsonrpc.CodeInvalidParams, "mode"},
		{"no sessionId", "session.execute", map[string]any{"command": map[string]any{"type": "read_file", "path": "a"}}, jsonrpc.CodeInvalidParams, "sessionId"},
		{"sessionId of wrong type", "session.close", map[string]any{"sessionId": 42}, jsonrpc.CodeInvalidParams, "sessionId"},
		{"no language", "session.create", map[string]any{}, jsonrpc.CodeInvalidParams, "language"},
		{"unknown language", "session.create", map[string]any{"language": "cobol"}, jsonrpc.CodeInvalidParams, "cobol"},
		{"memory of wrong type", "session.create", map[string]any{"language": "python", "memoryLimitMB": "lots"}, jsonrpc.CodeInvalidParams, "memoryLimitMB"},
		{"memory too large", "session.create", map[string]any{"language": "python", "memoryLimitMB": 1 << 20}, jsonrpc.CodeInvalidParams, "memoryLimitMB"},
		{"negative idle timeout", "session.create", map[string]any{"language": "python", "idleTimeoutMinutes": -1}, jsonrpc.CodeInvalidParams, "idleTimeoutMinutes"},
		{"permissions on python", "session.create", map[string]any{"language": "python", "permissions": map[string]any{"allowNet": true}}, jsonrpc.CodeInvalidParams, "permissions"},
		{"missing image", "session.create", map[string]any{"language": "python", "dockerImage": "codebeaker-nosuch:latest"}, rpc.CodeRuntimeUnavailable, "codebeaker-nosuch:latest"},
		{"unknown method", "session.explode", map[string]any{}, jsonrpc.CodeMethodNotFound, ""},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			e := c.rpcErr(tc.method, tc.params, tc.code)
			text := e.Message + " " + string(e.Data)
			if !strings.Contains(text, tc.says) {
				t.Errorf("error %s does not mention %q", e, tc.says)
			}
			if strings.Contains(text, ts.svc.Log().Path()) || strings.Contains(text, "goroutine") || strings.Contains(text, ".go:") {
				t.Errorf("error leaks server internals: %s", e)
			}
		})
	}

	// Commands that ran and failed are success:false, not JSON-RPC errors.
	failCases := []struct {
		name    string
		command map[string]any
		says    string
	}{
		{"dot-dot escape", map[string]any{"type": "read_file", "path": "../../etc/passwd"}, "outside /workspace"},
		{"absolute escape", map[string]any{"type": "write_file", "path": "/etc/cron.d/x", "content": "x"}, "outside /workspace"},
		{"copy out", map[string]any{"type": "copy_file", "sourcePath": "/workspace/a", "destinationPath": "/tmp/a"}, "outside /workspace"},
		{"list out", map[string]any{"type": "list_directory", "path": "/"}, "outside /workspace"},
		{"working directory out", map[string]any{"type": "execute_shell", "commandName": "ls", "workingDirectory": "/etc"}, "outside /workspace"},
		{"missing program", map[string]any{"type": "execute_shell", "commandName": "no-such-program"}, "no-such-program"},
		{"delete workspace", map[string]any{"type": "delete_file", "path": "/workspace"}, "workspace"},
		{"bad base64", map[string]any{"type": "write_file", "path": "a", "content": "***", "encoding": "base64"}, "base64"},
		{"timeout too long", map[string]any{"type": "execute_shell", "commandName": "ls", "timeoutMs": 1 << 40}, "timeoutMs"},
		{"timeout that wraps in nanoseconds", map[string]any{"type": "execute_shell", "commandName": "ls", "timeoutMs": int64(18446744073710)}, "timeoutMs"},
	}
	for _, tc := range failCases {
		t.Run(tc.name, func(t *testing.T) {
			env := c.exec(sid, tc.command)
			if env.Success || env.Error == nil || !strings.Contains(*env.Error, tc.says) {
				t.Errorf("want failure mentioning %q, got %+v %s", tc.says, env, env.Result)
			}
		})
	}

	// A symlink planted by the program that points out of the workspace.
	c.shell(sid, "ln", "-s", "/etc/passwd", "/workspace/passwd")
	c.shell(sid, "ln", "-s", "/etc", "/workspace/etc")
	for _, p := range []string{"passwd", "etc/hostname"} {
		env := c.exec(sid, map[string]any{"type": "read_file", "path": p})
		if env.Success || env.Error == nil || !strings.Contains(*env.Error, "outside") {
			t.Errorf("read through symlink %s: %+v %s", p, env, env.Result)
		}
	}
	env := c.exec(sid, map[string]any{"type": "write_file", "path": "etc/evil", "content": "x"})
	if env.Success {
		t.Errorf("write through a symlink out of the workspace succeeded")
	}

	// A frame over the size limit is refused with an error, and the
	// connection keeps working.
	big := `{"jsonrpc":"2.0","id":99,"method":"session.execute","params":{"sessionId":"` + sid + `","command":{"type":"write_file","path":"big","content":"` + strings.Repeat("x", 1<<20) + `"}}}`
	c.send(big)
	var tooBig response
	json.Unmarshal(c.next(30*time.Second), &tooBig)
	if tooBig.Error == nil || tooBig.Error.Code != rpc.CodeMessageTooLarge {
		t.Errorf("oversized frame: %+v", tooBig)
	}
	// Content over the file limit inside a frame that fits.
	env = c.exec(sid, map[string]any{"type": "write_file", "path": "big", "content": strings.Repeat("x", 100<<10)})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, "limit") {
		t.Errorf("write over the file limit: %+v", env)
	}
	c.shell(sid, "sh", "-c", "head -c 100000 /dev/zero > big")
	env = c.exec(sid, map[string]any{"type": "read_file", "path": "big"})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, "limit") {
		t.Errorf("read over the file limit: %+v", env)
	}

	// Still serving.
	var list struct{ Count int }
	c.ok("session.list", map[string]any{}, &list)
	if list.Count != 1 {
		t.Errorf("after bad input, %d sessions listed, want 1", list.Count)
	}
	resp, err := http.Get(ts.http.URL + "/health")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("health after bad input: %v %v", resp, err)
	}
}
