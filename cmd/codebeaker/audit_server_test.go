package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
)

// The audit package's own tests read data files; these run the audit
// command as main builds it, with its WebSocket client for --server.

// runAudit runs `codebeaker audit args...` in the test's process.
func runAudit(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"audit"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustAudit(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runAudit(t, args...)
	if err != nil {
		t.Fatalf("codebeaker audit %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// listView is session.list's result.
type listView struct {
	Count    int                      `json:"count"`
	Sessions []projection.SessionView `json:"sessions"`
}

// replayedService is what `audit replay --format json` prints without
// --session.
type replayedService struct {
	AtSeq uint64    `json:"atSeq"`
	At    time.Time `json:"at"`
	listView
}

// Against a real server: replay to a past point shows what session.list
// showed then; the file is in use while the server runs (say so, and read
// through --server instead); the same replay offline once it stopped.
func TestAuditReplayPastPoint(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, dataDir)
	url := "ws://" + srv.addr + "/ws/jsonrpc"
	c, err := dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method string, params, result any) {
		t.Helper()
		if e, err := c.call(method, params, result); err != nil || e != nil {
			t.Fatalf("%s: %v %v", method, e, err)
		}
	}
	create := func() string {
		var created struct{ SessionID string }
		call("session.create", map[string]any{"language": "python"}, &created)
		return created.SessionID
	}
	shell := func(sid string, args ...string) {
		call("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "execute_shell", "commandName": "sh", "args": append([]string{"-c"}, args...)}}, nil)
	}
	lastSeq := func() uint64 {
		var after uint64
		for {
			var page struct {
				NextAfterSeq uint64
				More         bool
			}
			call("session.history", map[string]any{"afterSeq": after, "limit": 1000}, &page)
			after = page.NextAfterSeq
			if !page.More {
				return after
			}
		}
	}

	a, b := create(), create()
	shell(a, "echo one")
	shell(b, "echo two; exit 4")
	shell(a, "sleep 0.2")
	time.Sleep(300 * time.Millisecond) // some idleness to see in the minutes
	var then listView
	call("session.list", map[string]any{}, &then)
	listedAt := time.Now()
	point := lastSeq()

	// More happens after the point.
	shell(a, "echo three")
	call("session.close", map[string]any{"sessionId": b}, nil)
	d := create()
	shell(d, "echo four")

	check := func(how string, out string) {
		t.Helper()
		var replayed replayedService
		if err := json.Unmarshal([]byte(out), &replayed); err != nil {
			t.Fatalf("%s: %v\n%s", how, err, out)
		}
		if replayed.AtSeq != point || replayed.Count != then.Count || len(replayed.Sessions) != len(then.Sessions) {
			t.Fatalf("%s: replay at %d has %d sessions, session.list showed %d at %d:\n%s", how, replayed.AtSeq, replayed.Count, then.Count, point, out)
		}
		slack := listedAt.Sub(replayed.At).Minutes()
		for i, got := range replayed.Sessions {
			want := then.Sessions[i]
			// Minutes: the replay computes them at event `point`'s time,
			// session.list a little later.
			if got.IdleMinutes > want.IdleMinutes || want.IdleMinutes-got.IdleMinutes > slack ||
				got.LifetimeMinutes > want.LifetimeMinutes || want.LifetimeMinutes-got.LifetimeMinutes > slack {
				t.Errorf("%s: session %s idle/lifetime %f/%f minutes, session.list showed %f/%f %f minutes later",
					how, got.SessionID, got.IdleMinutes, got.LifetimeMinutes, want.IdleMinutes, want.LifetimeMinutes, slack)
			}
			got.IdleMinutes, got.LifetimeMinutes, want.IdleMinutes, want.LifetimeMinutes = 0, 0, 0, 0
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: replayed %+v\nsession.list showed %+v", how, got, want)
			}
		}
	}
	through := mustAudit(t, "replay", "--server", url, "--until", fmt.Sprint(point), "--format", "json")
	check("replay --server", through)

	// The file is the server's while it runs.
	_, _, err = runAudit(t, "verify", "--data-dir", dataDir)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in use by a running codebeaker server (pid %d)", srv.cmd.Process.Pid)) {
		t.Errorf("verify while the server runs = %v, want it to name the server's pid %d", err, srv.cmd.Process.Pid)
	}
	_, _, err = runAudit(t, "replay", "--data-dir", dataDir)
	if err == nil || !strings.Contains(err.Error(), "--server ws://") {
		t.Errorf("replay of the file while the server runs = %v, want it to offer --server", err)
	}
	exported := mustAudit(t, "export", "--server", url)
	timeline := mustAudit(t, "replay", "--server", url, "--session", b)
	for _, want := range []string{"SessionCreating", "execute_shell: sh -c \"echo two; exit 4\" -> exit 4", "failed: exit code 4", "SessionClosed", "state: Closed (reason client), 1 commands run"} {
		if !strings.Contains(timeline, want) {
			t.Errorf("timeline of session b lacks %q:\n%s", want, timeline)
		}
	}
	if _, _, err := runAudit(t, "replay", "--server", url, "--session", "nobody"); err == nil || !strings.Contains(err.Error(), "-32001") {
		t.Errorf("replay --server of an unknown session = %v, want the server's -32001", err)
	}

	call("session.close", map[string]any{"sessionId": a}, nil)
	call("session.close", map[string]any{"sessionId": d}, nil)
	srv.stop()

	// Offline, the same.
	offline := mustAudit(t, "replay", "--data-dir", dataDir, "--until", fmt.Sprint(point), "--format", "json")
	if offline != through {
		t.Errorf("replay of the file differs from replay through the server:\n%s\n%s", offline, through)
	}
	if all := mustAudit(t, "export", "--data-dir", dataDir); !strings.HasPrefix(all, exported) || len(all) == len(exported) {
		t.Error("export of the file does not begin with what export through the server gave")
	}
	if out := mustAudit(t, "verify", "--data-dir", dataDir); !strings.HasPrefix(out, "ok: ") {
		t.Errorf("verify after the server stopped: %q", out)
	}
	if out := mustAudit(t, "replay", "--data-dir", dataDir); !strings.HasPrefix(out, "0 open sessions") {
		t.Errorf("replay to the end: %q", out)
	}
}

// The binary wires the audit command: its exit codes, --data-dir's default
// from CODEBEAKER_DATA_DIR (the flag wins), and --server through the
// WebSocket client.
func TestAuditCommandLine(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("../../testdata/layout1.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, eventlog.FileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("../../testdata/layout1.replay.golden")
	if err != nil {
		t.Fatal(err)
	}
	codebeaker := func(env string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		var out, errOut bytes.Buffer
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "CODEBEAKER_DATA_DIR="+env)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}

	if out, _, code := codebeaker(dir, "audit", "--help"); code != 0 || !strings.HasPrefix(out, "Usage: codebeaker audit COMMAND") {
		t.Errorf("audit --help: exit %d, printed %q", code, out)
	}
	if out, errOut, code := codebeaker(dir, "audit", "replay", "--until", "32", "--format", "json"); code != 0 || out == "" || !strings.HasPrefix(string(golden), out) {
		t.Errorf("audit replay with CODEBEAKER_DATA_DIR: exit %d, printed %q %q; want the golden replay", code, out, errOut)
	}
	empty := t.TempDir()
	if _, errOut, code := codebeaker(dir, "audit", "verify", "--data-dir", empty); code != 1 || !strings.HasPrefix(errOut, "codebeaker: eventlog: stat "+empty) {
		t.Errorf("audit verify --data-dir of an empty folder: exit %d, printed %q; want exit 1 and the empty folder named", code, errOut)
	}
	if _, errOut, code := codebeaker(empty, "audit", "replay", "--server", "127.0.0.1:1"); code != 1 ||
		!strings.HasPrefix(errOut, "codebeaker: connect to the server at ws://127.0.0.1:1/ws/jsonrpc: ") {
		t.Errorf("audit replay --server of a closed port: exit %d, printed %q", code, errOut)
	}
}
