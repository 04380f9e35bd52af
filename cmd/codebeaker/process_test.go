package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/sandbox/docker"
)

// A Docker session's background process outlives the server's kill -9:
// the agent in its container keeps it and its output, and the restarted
// server finds it running, with what it printed meanwhile.
func TestProcessSurvivesKillNine(t *testing.T) {
	api := needDocker(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	t.Cleanup(func() { removeInstance(t, api, docker.Instance(dataDir)) })
	srv := startServer(t, dataDir)
	c, err := dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	must := func(c *conn, method string, params, result any) {
		t.Helper()
		if e, err := c.call(method, params, result); err != nil || e != nil {
			t.Fatalf("%s: %v %v", method, e, err)
		}
	}
	var created struct{ SessionID string }
	must(c, "session.create", map[string]any{"language": "python"}, &created)
	id := created.SessionID
	var started struct{ ProcessID string }
	must(c, "process.start", map[string]any{"sessionId": id, "commandName": "python3", "args": []string{"-u", "-c",
		"import time\nfor i in range(100000):\n    print('count', i)\n    time.sleep(0.1)"}}, &started)
	pid := started.ProcessID
	type read struct {
		Data                string
		Offset, NextOffset  int64
		FirstRetainedOffset int64
	}
	var before read
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(before.Data, "count 3\n"); time.Sleep(50 * time.Millisecond) {
		must(c, "process.read", map[string]any{"sessionId": id, "processId": pid}, &before)
		if time.Now().After(deadline) {
			t.Fatalf("no count 3 within 10 s: %q", before.Data)
		}
	}
	c.ws.Close()
	srv.kill()
	killedAt := time.Now()
	time.Sleep(time.Second) // the process counts on with no server

	srv = startServer(t, dataDir)
	t.Logf("server back %s after the kill", time.Since(killedAt))
	c, err = dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.ws.Close()
	var list struct {
		Processes []struct {
			ProcessID, State string
			StdoutBytes      int64
		}
	}
	must(c, "process.list", map[string]any{"sessionId": id}, &list)
	if len(list.Processes) != 1 || list.Processes[0].ProcessID != pid || list.Processes[0].State != "running" {
		t.Fatalf("after the restart process.list shows %+v", list.Processes)
	}
	var after read
	must(c, "process.read", map[string]any{"sessionId": id, "processId": pid}, &after)
	if after.FirstRetainedOffset != 0 {
		t.Fatalf("the agent dropped output: first retained offset %d", after.FirstRetainedOffset)
	}
	// No gap: every count from 0 on, one after another, past those printed
	// while the server was down.
	lines := strings.Split(strings.TrimSuffix(after.Data, "\n"), "\n")
	for i, line := range lines {
		if line != fmt.Sprintf("count %d", i) {
			t.Fatalf("line %d of the retained output is %q: %q", i, line, after.Data)
		}
	}
	if grown := len(lines) - strings.Count(before.Data, "\n"); grown < 8 {
		t.Fatalf("only %d lines more than before the kill: the process did not count on while the server was down", grown)
	}
	t.Logf("before the kill %d lines, after the restart %d", strings.Count(before.Data, "\n"), len(lines))
	// It still counts, and its end is recorded when it is killed.
	must(c, "process.signal", map[string]any{"sessionId": id, "processId": pid, "signal": "KILL"}, nil)
	var ended struct {
		State  string
		Signal *string
	}
	must(c, "process.wait", map[string]any{"sessionId": id, "processId": pid, "timeoutMs": 30000}, &ended)
	if ended.State != "exited" || ended.Signal == nil || *ended.Signal != "KILL" {
		t.Fatalf("after KILL: %+v", ended)
	}
	must(c, "session.close", map[string]any{"sessionId": id}, nil)
}
