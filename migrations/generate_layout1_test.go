//go:build generate

// Built only with -tags generate: it writes testdata, it does not test.

package migrations_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/migrations"
	"github.com/codebeaker/codebeaker/projection"
)

// envGenerateLayout1 names the folder TestGenerateLayout1 writes
// layout1.db and layout1.projection.json to. testdata/README.md gives the
// exact command: the generator must run against the code of layout 1, so it
// is copied into a checkout of that commit and run there.
const envGenerateLayout1 = "CODEBEAKER_GENERATE_LAYOUT1"

// TestGenerateLayout1 writes a data file through the real eventlog API, a
// few sessions with every event type, and the projection that code rebuilds
// from it. It refuses to run on code whose
// layout is not 1.
func TestGenerateLayout1(t *testing.T) {
	dir := os.Getenv(envGenerateLayout1)
	if dir == "" {
		t.Fatal("set " + envGenerateLayout1 + "=DIR to write DIR/layout1.db (see testdata/README.md)")
	}
	if v := migrations.LayoutVersion(); v != 1 {
		t.Fatalf("this code writes layout %d: run the generator on the layout-1 commit as testdata/README.md says", v)
	}
	path := filepath.Join(dir, "layout1.db")
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	l, err := eventlog.Open(path, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	add := func(session string, typ eventlog.Type, data any) {
		t.Helper()
		if _, err := l.Append(ctx, eventlog.Record{SessionID: session, Type: typ, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	exit := func(n int) *int { return &n }
	cfg := func(idle, life float64, mem int) eventlog.SessionConfig {
		return eventlog.SessionConfig{IdleTimeoutMinutes: idle, MaxLifetimeMinutes: life, MemoryLimitMB: mem, CPUShares: 1024, PidsLimit: 256}
	}

	// A python session that ran three commands and was closed by its client.
	const py = "01jfpy0000000000000000000a"
	pyCfg := cfg(30, 120, 512)
	pyCfg.Image = "codebeaker-python:latest"
	add(py, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python", Runtime: "docker", Config: pyCfg})
	add(py, eventlog.SessionCreated, eventlog.SessionCreatedData{ContainerID: "c0ffee01", Workspace: "/var/lib/codebeaker/workspaces/" + py})
	add(py, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000001", Type: "write_file",
		Command: json.RawMessage(`{"type":"write_file","path":"/workspace/hello.py","content":"print('Hello, World!')"}`)})
	add(py, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "01JFCMD0000000000000000001", Type: "write_file", Success: true, DurationMs: 1})
	add(py, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000002", Type: "execute_shell",
		Command: json.RawMessage(`{"type":"execute_shell","commandName":"python3","args":["/workspace/hello.py"]}`)})
	add(py, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "01JFCMD0000000000000000002", Type: "execute_shell", Success: true,
		ExitCode: exit(0), DurationMs: 98, StdoutBytes: 14, Stdout: "Hello, World!\n"})
	add(py, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000003", Type: "execute_shell",
		Command: json.RawMessage(`{"type":"execute_shell","commandName":"sh","args":["-c","echo '<b>&</b>' >&2; exit 3"]}`)})
	add(py, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "01JFCMD0000000000000000003", Type: "execute_shell", Success: false,
		Error: "exit code 3", ExitCode: exit(3), DurationMs: 12, StderrBytes: 15, Stderr: "<b>&</b> é\u2028\n"})
	add(py, eventlog.SessionClosing, eventlog.SessionClosingData{Reason: eventlog.ReasonClient})
	add(py, eventlog.SessionClosed, eventlog.SessionClosedData{Reason: eventlog.ReasonClient})

	// A go session: a command interrupted by a restart, the sandbox
	// restored, a timeout and an out-of-memory kill with cut output; it stays
	// open and idle.
	const golang = "01jfgo0000000000000000000b"
	add(golang, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "go", Runtime: "docker", Config: cfg(10.5, 60, 256)})
	add(golang, eventlog.SessionCreated, eventlog.SessionCreatedData{ContainerID: "c0ffee02", Workspace: "/var/lib/codebeaker/workspaces/" + golang})
	add(golang, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000004", Type: "execute_code",
		Command: json.RawMessage(`{"type":"execute_code","code":"package main\nfunc main() { for {} }"}`)})
	add(golang, eventlog.CommandInterrupted, eventlog.CommandInterruptedData{CommandID: "01JFCMD0000000000000000004"})
	add(golang, eventlog.SessionRecovered, eventlog.SessionRecoveredData{ContainerID: "c0ffee03", Restored: true})
	add(golang, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000005", Type: "execute_shell",
		Command: json.RawMessage(`{"type":"execute_shell","commandName":"sleep","args":["100"],"timeoutMs":1000}`)})
	add(golang, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "01JFCMD0000000000000000005", Type: "execute_shell", Success: false,
		Error: "timed out after 1s: the command and everything it started were killed", ExitCode: exit(137), DurationMs: 1003, TimedOut: true})
	add(golang, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000006", Type: "execute_shell",
		Command: json.RawMessage(`{"type":"execute_shell","commandName":"python3","args":["-c","x = 'a' * 10**10"]}`)})
	add(golang, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "01JFCMD0000000000000000006", Type: "execute_shell", Success: false,
		Error: "killed: the session's memory limit was reached (out of memory)", ExitCode: exit(137), DurationMs: 2500,
		StdoutBytes: 3 << 20, Stdout: "aaaa", StdoutTruncated: true, StoredCut: true, OOMKilled: true, StderrBytes: 7, Stderr: "Killed\n"})

	// A session whose sandbox could not be made.
	const failed = "01jffa0000000000000000000c"
	add(failed, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "csharp", Runtime: "docker", Config: cfg(30, 120, 512)})
	add(failed, eventlog.SessionCreateFailed, eventlog.SessionCreateFailedData{Error: `docker: image "codebeaker-csharp:latest" not found`})

	// A deno session with permissions, closing on its idle timeout.
	const deno = "01jfde0000000000000000000d"
	denoCfg := cfg(5, 30, 128)
	denoCfg.Permissions = &eventlog.Permissions{AllowNet: json.RawMessage(`["example.com"]`), AllowRead: json.RawMessage(`true`)}
	add(deno, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "deno", Runtime: "deno", Config: denoCfg})
	add(deno, eventlog.SessionCreated, eventlog.SessionCreatedData{ContainerID: "deno-4242", Workspace: "/var/lib/codebeaker/workspaces/" + deno})
	add(deno, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "01JFCMD0000000000000000007", Type: "execute_code",
		Command: json.RawMessage(`{"type":"execute_code","code":"console.log(\"hi\")"}`)})
	add(deno, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "01JFCMD0000000000000000007", Type: "execute_code", Success: true,
		ExitCode: exit(0), DurationMs: 40, StdoutBytes: 3, Stdout: "hi\n"})
	add(deno, eventlog.SessionClosing, eventlog.SessionClosingData{Reason: eventlog.ReasonIdleTimeout})

	// A session still being created, one closed at its lifetime with a
	// cleanup problem, and a stray container removed.
	const creating = "01jfcr0000000000000000000e"
	add(creating, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "javascript", Runtime: "docker", Config: cfg(30, 120, 512)})
	const old = "01jfol0000000000000000000f"
	add(old, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python", Runtime: "docker", Config: cfg(30, 0.5, 512)})
	add(old, eventlog.SessionCreated, eventlog.SessionCreatedData{ContainerID: "c0ffee04", Workspace: "/var/lib/codebeaker/workspaces/" + old})
	add(old, eventlog.SessionClosing, eventlog.SessionClosingData{Reason: eventlog.ReasonMaxLifetime})
	add(old, eventlog.SessionClosed, eventlog.SessionClosedData{Reason: eventlog.ReasonMaxLifetime, Error: "workspace: could not be deleted"})
	add("01jfgh0000000000000000000g", eventlog.ContainerRemoved, eventlog.ContainerRemovedData{ContainerID: "deadbeef", Reason: "no open session owns it"})

	p, err := projection.Rebuild(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	golden, err := json.MarshalIndent(struct {
		LastSeq  uint64               `json:"lastSeq"`
		Sessions []projection.Session `json:"sessions"`
	}{p.LastSeq(), p.List()}, "", "  ") // the shape of projectionFile in layout1_test.go; this file stands alone
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "layout1.projection.json"), append(golden, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d events) and its projection", path, p.LastSeq())
}
