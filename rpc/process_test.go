package rpc_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// Background processes (process.*) end to end: a real WebSocket, real
// Docker sessions, the agent in each container.

type processView struct {
	ProcessID   string   `json:"processId"`
	Name        string   `json:"name"`
	CommandName string   `json:"commandName"`
	Args        []string `json:"args"`
	PTY         bool     `json:"pty"`
	State       string   `json:"state"`
	ExitCode    *int     `json:"exitCode"`
	Signal      *string  `json:"signal"`
	TimedOut    bool     `json:"timedOut"`
	StdoutBytes int64    `json:"stdoutBytes"`
	StderrBytes int64    `json:"stderrBytes"`
	Lost        string   `json:"lost"`
}

type readResult struct {
	Data                string `json:"data"`
	Encoding            string `json:"encoding"`
	Offset              int64  `json:"offset"`
	NextOffset          int64  `json:"nextOffset"`
	FirstRetainedOffset int64  `json:"firstRetainedOffset"`
	EOF                 bool   `json:"eof"`
}

func (r readResult) bytes(t testing.TB) []byte {
	if r.Encoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return []byte(r.Data)
}

// startProcess starts a process and returns its id.
func (c *wsClient) startProcess(sessionID string, params map[string]any) string {
	c.t.Helper()
	params["sessionId"] = sessionID
	var res struct {
		ProcessID string    `json:"processId"`
		StartedAt time.Time `json:"startedAt"`
	}
	c.ok("process.start", params, &res)
	if res.ProcessID == "" || res.StartedAt.IsZero() {
		c.t.Fatalf("process.start gave no processId or startedAt: %+v", res)
	}
	return res.ProcessID
}

func (c *wsClient) readProcess(sessionID, processID, stream string, offset int64) readResult {
	c.t.Helper()
	var r readResult
	c.ok("process.read", map[string]any{"sessionId": sessionID, "processId": processID, "stream": stream, "offset": offset}, &r)
	return r
}

// readUntil reads a process's stdout from 0 until it holds want.
func (c *wsClient) readUntil(sessionID, processID, want string, within time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var got string
	for time.Now().Before(deadline) {
		got = string(c.readProcess(sessionID, processID, "stdout", 0).bytes(c.t))
		if strings.Contains(got, want) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("process %s's stdout has no %q within %s: %q", processID, want, within, got)
	return got
}

func (c *wsClient) listProcesses(sessionID string) map[string]processView {
	c.t.Helper()
	var res struct {
		Processes []processView `json:"processes"`
	}
	c.ok("process.list", map[string]any{"sessionId": sessionID}, &res)
	out := map[string]processView{}
	for _, p := range res.Processes {
		out[p.ProcessID] = p
	}
	return out
}

func (c *wsClient) waitProcess(sessionID, processID string) processView {
	c.t.Helper()
	var v processView
	c.ok("process.wait", map[string]any{"sessionId": sessionID, "processId": processID, "timeoutMs": 60000}, &v)
	if v.State != "exited" {
		c.t.Fatalf("process %s still %s after process.wait", processID, v.State)
	}
	return v
}

func TestProcessStdinToCat(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	id := c.create(map[string]any{"language": "python"})
	pid := c.startProcess(id, map[string]any{"commandName": "cat", "stdin": "first\n", "name": "echoer"})
	c.ok("process.write", map[string]any{"sessionId": id, "processId": pid, "data": "second\n"}, nil)
	var w struct {
		Bytes int `json:"bytes"`
	}
	c.ok("process.write", map[string]any{"sessionId": id, "processId": pid, "data": base64.StdEncoding.EncodeToString([]byte{0xff, '\n'}), "encoding": "base64", "eof": true}, &w)
	if w.Bytes != 2 {
		t.Fatalf("process.write wrote %d bytes, want 2", w.Bytes)
	}
	v := c.waitProcess(id, pid)
	if v.ExitCode == nil || *v.ExitCode != 0 || v.Name != "echoer" || v.CommandName != "cat" {
		t.Fatalf("cat ended as %+v", v)
	}
	r := c.readProcess(id, pid, "stdout", 0)
	if got := string(r.bytes(t)); got != "first\nsecond\n\xff\n" || r.Encoding != "base64" || !r.EOF || r.NextOffset != 15 {
		t.Fatalf("cat's stdout: %+v (%q)", r, got)
	}
	// From an offset: what follows it.
	if r := c.readProcess(id, pid, "stdout", 6); string(r.bytes(t)) != "second\n\xff\n" || r.Offset != 6 {
		t.Fatalf("read from 6: %+v", r)
	}
	if p := c.listProcesses(id)[pid]; p.State != "exited" || p.StdoutBytes != 15 {
		t.Fatalf("process.list shows %+v", p)
	}
	// An unknown process is -32001, as an unknown session.
	c.rpcErr("process.read", map[string]any{"sessionId": id, "processId": "01NOPE"}, rpc.CodeSessionNotFound)
	c.rpcErr("process.write", map[string]any{"sessionId": "01NOPE", "processId": pid, "data": "x"}, rpc.CodeSessionNotFound)
}

func TestProcessPythonREPLOnATerminal(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	id := c.create(map[string]any{"language": "python"})
	pid := c.startProcess(id, map[string]any{"commandName": "python3", "args": []string{"-i", "-q"}, "pty": map[string]any{"cols": 80, "rows": 24}})
	c.ok("process.write", map[string]any{"sessionId": id, "processId": pid, "data": "x = 21\n"}, nil)
	c.ok("process.write", map[string]any{"sessionId": id, "processId": pid, "data": "print(x*2)\n"}, nil)
	c.readUntil(id, pid, "42", 20*time.Second)
	c.ok("process.write", map[string]any{"sessionId": id, "processId": pid, "data": "import os, sys; print('tty', os.isatty(0), os.isatty(1))\n"}, nil)
	c.readUntil(id, pid, "tty True True", 10*time.Second)

	// stty shows the size, and a resize changes it.
	c.ok("process.resize", map[string]any{"sessionId": id, "processId": pid, "cols": 100, "rows": 30}, nil)
	c.ok("process.write", map[string]any{"sessionId": id, "processId": pid, "data": "import subprocess; subprocess.run(['stty', 'size'])\n"}, nil)
	c.readUntil(id, pid, "30 100", 10*time.Second)

	c.ok("process.signal", map[string]any{"sessionId": id, "processId": pid, "signal": "KILL"}, nil)
	if v := c.waitProcess(id, pid); v.Signal == nil || *v.Signal != "KILL" || !v.PTY {
		t.Fatalf("the REPL ended as %+v", v)
	}
	// A process without a terminal has none to resize.
	cat := c.startProcess(id, map[string]any{"commandName": "cat"})
	c.rpcErr("process.resize", map[string]any{"sessionId": id, "processId": cat, "cols": 10, "rows": 10}, -32602)
}

func TestProcessServerReachedByACommand(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	id := c.create(map[string]any{"language": "python"})
	c.mustSucceed(id, map[string]any{"type": "write_file", "path": "index.html", "content": "served from the sandbox"})
	pid := c.startProcess(id, map[string]any{"commandName": "python3", "args": []string{"-m", "http.server", "8000", "--bind", "127.0.0.1"}})
	fetch := "import time, urllib.request\n" +
		"for _ in range(100):\n" +
		"    try:\n" +
		"        print(urllib.request.urlopen('http://127.0.0.1:8000/index.html').read().decode()); break\n" +
		"    except OSError: time.sleep(0.1)\n"
	env := c.mustSucceed(id, map[string]any{"type": "execute_code", "code": fetch})
	if got := codeResult(t, env); !strings.Contains(got, "served from the sandbox") {
		t.Fatalf("the command did not reach the background server: %q", got)
	}
	if p := c.listProcesses(id)[pid]; p.State != "running" {
		t.Fatalf("the server is %s after the command", p.State)
	}
	c.readProcessUntilStderr(id, pid, "GET /index.html")
}

func (c *wsClient) readProcessUntilStderr(sessionID, processID, want string) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		got = string(c.readProcess(sessionID, processID, "stderr", 0).bytes(c.t))
		if strings.Contains(got, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("stderr has no %q: %q", want, got)
}

// procScan lists the command lines of the sandbox's processes.
const procScan = `import os
for p in os.listdir('/proc'):
    if p.isdigit():
        try: print(open('/proc/%s/cmdline' % p).read().replace('\0', ' '))
        except OSError: pass
`

func TestProcessKillEndsItsTreeAlone(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	id := c.create(map[string]any{"language": "python"})
	// The child leaves the process group and the session; the kill finds
	// it all the same.
	tree := c.startProcess(id, map[string]any{"commandName": "sh", "args": []string{"-c", "setsid sleep 1001 & sleep 1002"}})
	other := c.startProcess(id, map[string]any{"commandName": "sleep", "args": []string{"1003"}})
	running := func() string {
		return codeResult(t, c.mustSucceed(id, map[string]any{"type": "execute_code", "code": procScan}))
	}
	deadline := time.Now().Add(10 * time.Second)
	for ps := running(); !strings.Contains(ps, "sleep 1001"); ps = running() {
		if time.Now().After(deadline) {
			t.Fatalf("the setsid child never ran: %s", ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.ok("process.signal", map[string]any{"sessionId": id, "processId": tree, "signal": "KILL"}, nil)
	c.waitProcess(id, tree)
	ps := running()
	for _, gone := range []string{"sleep 1001", "sleep 1002"} {
		if strings.Contains(ps, gone) {
			t.Errorf("%s survived the KILL of its process:\n%s", gone, ps)
		}
	}
	if !strings.Contains(ps, "sleep 1003") {
		t.Errorf("the KILL of one process ended another:\n%s", ps)
	}
	if p := c.listProcesses(id)[other]; p.State != "running" {
		t.Errorf("the other process is %s", p.State)
	}
	// TERM, the default, reaches a process that handles it.
	c.ok("process.signal", map[string]any{"sessionId": id, "processId": other}, nil)
	if v := c.waitProcess(id, other); v.Signal == nil || *v.Signal != "TERM" {
		t.Fatalf("sleep after TERM: %+v", v)
	}
	c.rpcErr("process.signal", map[string]any{"sessionId": id, "processId": other, "signal": "STOP"}, -32602)
	c.rpcErr("process.signal", map[string]any{"sessionId": id, "processId": other, "signal": "TERM"}, rpc.CodeProcessEnded)
}

func TestProcessOutlivesItsConnection(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	id := c.create(map[string]any{"language": "python"})
	pid := c.startProcess(id, map[string]any{"commandName": "python3", "args": []string{"-u", "-c",
		"import time\nfor i in range(100000):\n    print('count', i)\n    time.sleep(0.05)"}})
	c.readUntil(id, pid, "count 3\n", 10*time.Second)
	c.conn.Close()
	<-c.done

	again := ts.dial()
	time.Sleep(300 * time.Millisecond)
	p := again.listProcesses(id)[pid]
	if p.State != "running" || p.StdoutBytes == 0 {
		t.Fatalf("after its client left the process is %+v", p)
	}
	from := int64(len("count 0\ncount 1\n"))
	r := again.readProcess(id, pid, "stdout", from)
	if !strings.HasPrefix(r.Data, "count 2\ncount 3\n") || r.Offset != from {
		t.Fatalf("read from offset %d: %+v", from, r)
	}
}

func TestProcessLimitsAndErrors(t *testing.T) {
	ts := newTestServer(t, func(cfg *rpc.Config, _ *ws.Options) { cfg.Limits.MaxProcesses = 2 })
	c := ts.dial()
	id := c.create(map[string]any{"language": "python"})
	c.startProcess(id, map[string]any{"commandName": "sleep", "args": []string{"100"}})
	c.startProcess(id, map[string]any{"commandName": "sleep", "args": []string{"100"}})
	e := c.rpcErr("process.start", map[string]any{"sessionId": id, "commandName": "sleep", "args": []string{"100"}}, rpc.CodeCapacityExhausted)
	if !strings.Contains(string(e.Data), "2 processes") {
		t.Fatalf("the limit's error says %s", e)
	}
	c.rpcErr("process.start", map[string]any{"sessionId": id}, -32602)
	c.rpcErr("process.start", map[string]any{"sessionId": "01NOPE", "commandName": "true"}, rpc.CodeSessionNotFound)

	// A program that cannot start is the client's error, and takes no place.
	other := c.create(map[string]any{"language": "python"})
	c.rpcErr("process.start", map[string]any{"sessionId": other, "commandName": "no-such-program"}, -32602)
	pid := c.startProcess(other, map[string]any{"commandName": "sleep", "args": []string{"100"}, "timeoutMs": 300})
	if v := c.waitProcess(other, pid); !v.TimedOut {
		t.Fatalf("sleep with a 300 ms timeout: %+v", v)
	}

	// Closing the session ends its processes, and the log says so.
	c.ok("session.close", map[string]any{"sessionId": id}, nil)
	var hist struct {
		Events []struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	c.ok("session.history", map[string]any{"sessionId": id}, &hist)
	var started, exited int
	for _, e := range hist.Events {
		switch e.Type {
		case "ProcessStarted":
			started++
		case "ProcessExited":
			exited++
			if !strings.Contains(string(e.Data), "the session closed") {
				t.Errorf("a process's end at the close: %s", e.Data)
			}
		}
	}
	if started != 2 || exited != 2 {
		t.Fatalf("history holds %d ProcessStarted and %d ProcessExited, want 2 and 2", started, exited)
	}
}
