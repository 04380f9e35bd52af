//go:build disruptive

// These tests restart or stop the machine's Docker engine, so they are
// built only with -tags disruptive and run on their own (scripts/test.sh
// does, after the other tests): they would break tests running beside them.

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
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

func TestEngineRestart(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "a.txt", "content": "before"})

	pid := dockerdPid(t)
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

func dockerdPid(t *testing.T) int {
	t.Helper()
	pidText, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		t.Fatalf("cannot find dockerd: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatalf("dockerd's pid file: %v", err)
	}
	return pid
}

// TestCloseWhileEngineStopped is TestCloseWhileEngineHangs with the real
// engine stopped (SIGSTOP to dockerd) rather than a proxy holding its
// traffic.
func TestCloseWhileEngineStopped(t *testing.T) {
	ts := newTestServer(t, func(cfg *rpc.Config, _ *ws.Options) { cfg.ReconcileInterval = 500 * time.Millisecond })
	pid := dockerdPid(t)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) }) // whatever happens; before the server's cleanup
	closeWhileEngineHangs(t, ts, func() {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("stop dockerd: %v", err)
		}
	}, func() {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("continue dockerd: %v", err)
		}
	})
}
