package rpc_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// The limits a client runs into, end to end: each leaves the session usable.
func TestLimits(t *testing.T) {
	ts := newTestServer(t, func(cfg *rpc.Config, _ *ws.Options) {
		cfg.Limits.OutputLimit = 64 << 10
		cfg.Limits.PidsLimit = 64
		cfg.Limits.StoredOutputBytes = 16 << 10
	})
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python", "memoryLimitMB": 64})

	run := func(t *testing.T, command map[string]any) (envelope, shellResult) {
		t.Helper()
		env := c.exec(sid, command)
		var sh shellResult
		json.Unmarshal(env.Result, &sh)
		return env, sh
	}

	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		env, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "echo before; sleep 60"}, "timeoutMs": 1000})
		if env.Success || !sh.TimedOut || sh.Stdout != "before\n" || env.Error == nil || !strings.Contains(*env.Error, "timed out") {
			t.Errorf("timeout: %+v %s", env, env.Result)
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("a 1 s timeout took %s", took)
		}
	})
	t.Run("execute_code timeout", func(t *testing.T) {
		env, _ := run(t, map[string]any{"type": "execute_code", "code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "timeoutMs": 1000})
		if env.Success || string(env.Result) != `"started"` || env.Error == nil || !strings.Contains(*env.Error, "timed out") {
			t.Errorf("execute_code timeout: %+v %s", env, env.Result)
		}
	})
	t.Run("memory", func(t *testing.T) {
		env, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "python3", "args": []string{"-c", "b = bytearray(256 << 20)\nprint('survived')"}})
		if env.Success || !sh.OOMKilled || env.Error == nil || !strings.Contains(*env.Error, "memory") {
			t.Errorf("memory limit: %+v %s", env, env.Result)
		}
	})
	t.Run("output cap", func(t *testing.T) {
		env, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "head -c 5000000 /dev/zero | tr '\\0' x; echo done >&2"}})
		if !env.Success || len(sh.Stdout) != 64<<10 || !sh.StdoutTruncated || sh.Stderr != "done\n" {
			t.Errorf("output cap: stdout %d bytes, truncated %v, stderr %q", len(sh.Stdout), sh.StdoutTruncated, sh.Stderr)
		}
		events, err := ts.svc.Log().SessionEvents(sid, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var last eventlog.CommandCompletedData
		events[len(events)-1].Decode(&last)
		if last.StdoutBytes != 5000000 || !last.StdoutTruncated || !last.StoredCut || len(last.Stdout) != 16<<10 {
			t.Errorf("the log's record of the flood: bytes %d truncated %v cut %v stored %d", last.StdoutBytes, last.StdoutTruncated, last.StoredCut, len(last.Stdout))
		}
	})
	t.Run("fork bomb", func(t *testing.T) {
		// With 64 pids the bomb stalls instead of taking the host down; the
		// timeout then kills all of it.
		env, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "f() { f | f & }; f; sleep 5"}, "timeoutMs": 5000})
		if env.Success || !sh.TimedOut {
			t.Errorf("fork bomb: %+v %s", env, env.Result)
		}
		_, sh = run(t, map[string]any{"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "ls /proc | grep -c '^[0-9]'"}})
		if n := strings.TrimSpace(sh.Stdout); n == "" || len(n) > 1 {
			t.Errorf("%s processes left in the sandbox after the fork bomb was killed", n)
		}
	})
	t.Run("no network", func(t *testing.T) {
		_, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "ls", "args": []string{"/sys/class/net"}})
		if sh.Stdout != "lo\n" {
			t.Errorf("network interfaces in the sandbox: %q", sh.Stdout)
		}
	})
	t.Run("a planted sh does not stop the kill", func(t *testing.T) {
		// ~/.local/bin comes first in the python image's PATH and the
		// sandbox user can write there.
		run(t, map[string]any{"type": "execute_shell", "commandName": "/bin/sh", "args": []string{"-c",
			"mkdir -p ~/.local/bin && printf '#!/bin/sh\nexit 0\n' > ~/.local/bin/sh && chmod +x ~/.local/bin/sh && printf '#!/bin/sh\nexit 0\n' > ~/.local/bin/cat && chmod +x ~/.local/bin/cat"}})
		start := time.Now()
		env, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "python3", "args": []string{"-c", "import time; time.sleep(60)"}, "timeoutMs": 1000})
		if env.Success || !sh.TimedOut || time.Since(start) > 30*time.Second {
			t.Errorf("with a planted sh: %+v %s after %s", env, env.Result, time.Since(start))
		}
		_, sh = run(t, map[string]any{"type": "execute_shell", "commandName": "/bin/sh", "args": []string{"-c", "rm -r ~/.local/bin; for p in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $p; echo; done | grep -c '^python3 -c' || true"}})
		if strings.TrimSpace(sh.Stdout) != "0" {
			t.Errorf("python processes left after the kill: %q", sh.Stdout)
		}
	})
	t.Run("the log keeps commands small", func(t *testing.T) {
		env := map[string]string{}
		for i := range 100 {
			env[fmt.Sprintf("V%d", i)] = strings.Repeat("v", 60<<10)
		}
		run(t, map[string]any{"type": "execute_shell", "commandName": "true", "env": env, "extra": map[string]any{"nested": []string{strings.Repeat("n", 1<<20)}}})
		events, err := ts.svc.Log().SessionEvents(sid, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events[len(events)-2:] {
			if len(e.Data) > 20<<10 {
				t.Errorf("%s event of %d bytes for a command of 7 MB", e.Type, len(e.Data))
			}
		}
	})
	t.Run("still usable", func(t *testing.T) {
		env, sh := run(t, map[string]any{"type": "execute_shell", "commandName": "echo", "args": []string{"ok"}})
		if !env.Success || sh.Stdout != "ok\n" {
			t.Errorf("after the limits: %+v %s", env, env.Result)
		}
	})
}

func TestIdleTimeoutAndLifetime(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	idle := c.create(map[string]any{"language": "python", "idleTimeoutMinutes": 0.02}) // 1.2 s
	busy := c.create(map[string]any{"language": "python", "maxLifetimeMinutes": 0.05}) // 3 s

	// A command running past the lifetime is cut short by the close.
	env := c.exec(busy, map[string]any{"type": "execute_shell", "commandName": "sleep", "args": []string{"30"}})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, "closed") {
		t.Errorf("command cut by the lifetime: %+v", env)
	}
	for _, tc := range []struct{ id, reason string }{{idle, eventlog.ReasonIdleTimeout}, {busy, eventlog.ReasonMaxLifetime}} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, open := ts.svc.View().Get(tc.id); !open {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s still open", tc.reason)
			}
			time.Sleep(100 * time.Millisecond)
		}
		events, _ := ts.svc.Log().SessionEvents(tc.id, 0, 0)
		last := events[len(events)-1]
		var closed eventlog.SessionClosedData
		last.Decode(&closed)
		if last.Type != eventlog.SessionClosed || closed.Reason != tc.reason || closed.Error != "" {
			t.Errorf("last event %s %s, want SessionClosed %s", last.Type, last.Data, tc.reason)
		}
		eventually(t, tc.reason+" removes the container", func() bool { return len(containersOf(t, tc.id)) == 0 })
		c.rpcErr("session.execute", map[string]any{"sessionId": tc.id, "command": map[string]any{"type": "list_directory"}}, rpc.CodeSessionClosed)
	}
}
