//go:build disruptive

// This test restarts the machine's Docker engine, so it is built only with
// -tags disruptive and run on its own (scripts/test.sh does, after the other
// tests): an engine restart would break tests running beside it.

package rpc_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
)

func TestEngineRestart(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "a.txt", "content": "before"})

	pidText, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		t.Fatalf("cannot find dockerd: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("stop dockerd: %v", err)
	}
	eventually(t, "dockerd stopped", func() bool { return syscall.Kill(pid, 0) != nil })
	if out, err := exec.Command("../scripts/ensure-docker.sh").CombinedOutput(); err != nil {
		t.Fatalf("start dockerd again: %v\n%s", err, out)
	}
	time.Sleep(time.Second)

	// The container stopped with the engine; the next command starts it
	// again, on the same files.
	if sh := c.shell(sid, "cat", "a.txt"); sh.Stdout != "before" {
		t.Fatalf("after the engine restarted: %q %q", sh.Stdout, sh.Stderr)
	}
	events, _ := ts.svc.Log().SessionEvents(sid, 0, 0)
	if !hasEvent(events, eventlog.SessionRecovered, nil) {
		t.Error("no SessionRecovered after the engine restart")
	}
}
