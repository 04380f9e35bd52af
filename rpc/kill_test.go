package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// Bounds of the kill tests: how long after its timeout a killed command may
// answer, and how long session.close may take. Generous for a busy
// machine; a kill that the program can stop never answers at all.
const (
	killBound  = 20 * time.Second
	closeBound = 10 * time.Second
)

// stopStorm stops every other process of the sandbox user, the way the
// review found the kill disarmed.
const stopStorm = "echo storming; while :; do kill -STOP -1 2>/dev/null; done"

// pending is a request sent and not yet answered.
type pending struct {
	c      *wsClient
	method string
	sent   time.Time
	reply  chan json.RawMessage
}

// start sends a request without waiting for its reply.
func (c *wsClient) start(method string, params any) *pending {
	c.t.Helper()
	id := fmt.Sprint(c.nextID.Add(1))
	p := &pending{c: c, method: method, reply: make(chan json.RawMessage, 1)}
	c.mu.Lock()
	c.waiting[id] = p.reply
	c.mu.Unlock()
	req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(id), "method": method, "params": params})
	p.sent = time.Now()
	c.send(string(req))
	return p
}

// wait returns the reply and how long after the request it came; the test
// fails if it does not come within bound.
func (p *pending) wait(bound time.Duration) (response, time.Duration) {
	p.c.t.Helper()
	select {
	case frame := <-p.reply:
		took := time.Since(p.sent)
		var r response
		if err := json.Unmarshal(frame, &r); err != nil {
			p.c.t.Fatalf("bad response %s: %v", frame, err)
		}
		return r, took
	case <-time.After(bound - time.Since(p.sent)):
		p.c.t.Fatalf("%s: no reply within %v", p.method, bound)
		return response{}, 0
	}
}

// shellOf decodes a session.execute reply of execute_shell or execute_code.
func shellOf(t *testing.T, r response) (envelope, shellResult) {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("session.execute: error %s", r.Error)
	}
	var env envelope
	var sh shellResult
	if err := json.Unmarshal(r.Result, &env); err != nil {
		t.Fatalf("envelope %s: %v", r.Result, err)
	}
	json.Unmarshal(env.Result, &sh)
	return env, sh
}

// assertAgentOnly fails unless the session's container holds its agent's
// processes alone (the agent and its shims, root's), as the engine sees it (not through a command that a leftover
// could stop).
func assertAgentOnly(t *testing.T, sessionID, after string) {
	t.Helper()
	ids := containersOf(t, sessionID)
	if len(ids) != 1 {
		t.Fatalf("after %s, session %s has containers %v; want one", after, sessionID, ids)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	top, err := dockerAPI(t).ContainerTop(ctx, ids[0], nil)
	if err != nil {
		t.Fatalf("after %s, list the container's processes: %v", after, err)
	}
	if left := docker.NotAgents(top); len(left) != 0 {
		t.Errorf("after %s, the container holds processes besides its agent's:\n%s", after, strings.Join(left, "\n"))
	}
}

// assertNothingAfterClose fails unless SessionClosed is the session's last
// event.
func assertNothingAfterClose(t *testing.T, ts *testServer, sessionID string) {
	t.Helper()
	events, err := ts.svc.Log().SessionEvents(sessionID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	closedAt := -1
	for i, e := range events {
		if e.Type == eventlog.SessionClosed {
			closedAt = i
		}
	}
	if closedAt < 0 {
		t.Fatalf("no SessionClosed among %d events", len(events))
	}
	for _, e := range events[closedAt+1:] {
		if e.Type != eventlog.ContainerRemoved {
			t.Errorf("event %s (seq %d) recorded after SessionClosed", e.Type, e.Seq)
		}
	}
}

func TestStopStormEndsAtTimeout(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	storm := map[string]any{"type": "execute_shell", "commandName": "sh", "args": []string{"-c", stopStorm}, "timeoutMs": 3000}

	r, took := c.start("session.execute", map[string]any{"sessionId": sid, "command": storm}).wait(3*time.Second + killBound)
	t.Logf("a stop storm with timeoutMs 3000 answered after %v", took.Round(time.Millisecond))
	if _, sh := shellOf(t, r); !sh.TimedOut || sh.Stdout != "storming\n" {
		t.Errorf("stop storm: timedOut %v, exit %d, stdout %q; want a timeout after %q", sh.TimedOut, sh.ExitCode, sh.Stdout, "storming\n")
	}
	assertAgentOnly(t, sid, "the stop storm's timeout")
	if sh := c.shell(sid, "echo", "alive"); sh.Stdout != "alive\n" {
		t.Fatalf("after the stop storm: %q %q", sh.Stdout, sh.Stderr)
	}

	// A storm running when the session closes: the close answers, and so
	// does the command.
	storm["timeoutMs"] = 600000
	running := c.start("session.execute", map[string]any{"sessionId": sid, "command": storm})
	eventually(t, "the storm running", func() bool { v, _ := ts.svc.View().Get(sid); return v.Running })
	time.Sleep(time.Second)
	r, took = c.start("session.close", map[string]any{"sessionId": sid}).wait(closeBound)
	t.Logf("session.close during a stop storm answered after %v", took.Round(time.Millisecond))
	if r.Error != nil {
		t.Fatalf("session.close: %s", r.Error)
	}
	if r, _ := running.wait(killBound); r.Error == nil {
		if env, _ := shellOf(t, r); env.Success {
			t.Errorf("the storm the close ended succeeded: %s", r.Result)
		}
	}
	eventually(t, "the container removed", func() bool { return len(containersOf(t, sid)) == 0 })
	assertNothingAfterClose(t, ts, sid)
}

func TestSpawnStormEndsAtTimeout(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	r, took := c.start("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{
		"type": "execute_shell", "commandName": "python3", "args": []string{"-c", sandboxtest.PythonScripts[sandboxtest.SpawnStorm]}, "timeoutMs": 2000}}).wait(2*time.Second + killBound)
	t.Logf("a spawn storm with timeoutMs 2000 answered after %v", took.Round(time.Millisecond))
	if _, sh := shellOf(t, r); !sh.TimedOut || sh.Stdout != "spawning\n" {
		t.Errorf("spawn storm: timedOut %v, exit %d, stdout %q; want a timeout after %q", sh.TimedOut, sh.ExitCode, sh.Stdout, "spawning\n")
	}
	assertAgentOnly(t, sid, "the spawn storm's timeout")
	if sh := c.shell(sid, "echo", "alive"); sh.Stdout != "alive\n" {
		t.Fatalf("after the spawn storm: %q %q", sh.Stdout, sh.Stderr)
	}
}
