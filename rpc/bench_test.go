package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
)

// Run together, so that their ratios come from one run:
//
//	go test -run '^$' -bench . -benchtime 20x ./rpc
//
// BenchmarkExecDockerAPI is the floor for BenchmarkExecute: the same
// program in the same container, straight through the Docker API, with no
// server, event log or WebSocket in between.

func BenchmarkSessionCreate(b *testing.B) {
	c := newTestServer(b).dial()
	for b.Loop() {
		sid := c.create(map[string]any{"language": "python"})
		b.StopTimer()
		c.ok("session.close", map[string]any{"sessionId": sid}, nil)
		b.StartTimer()
	}
}

func BenchmarkExecute(b *testing.B) {
	c := newTestServer(b).dial()
	sid := c.create(map[string]any{"language": "python"})
	for b.Loop() {
		if sh := c.shell(sid, "python3", "-c", "print(1)"); sh.Stdout != "1\n" {
			b.Fatalf("stdout %q", sh.Stdout)
		}
	}
}

func BenchmarkExecDockerAPI(b *testing.B) {
	ts := newTestServer(b)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	view, _ := ts.svc.View().Get(sid)
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer api.Close()
	ctx := context.Background()
	for b.Loop() {
		exec, err := api.ContainerExecCreate(ctx, view.ContainerID, container.ExecOptions{
			User: docker.SandboxUser, AttachStdout: true, AttachStderr: true, Cmd: []string{"python3", "-c", "print(1)"}})
		if err != nil {
			b.Fatal(err)
		}
		resp, err := api.ContainerExecAttach(ctx, exec.ID, container.ExecAttachOptions{})
		if err != nil {
			b.Fatal(err)
		}
		stdcopy.StdCopy(io.Discard, io.Discard, resp.Reader)
		resp.Close()
		if info, err := api.ContainerExecInspect(ctx, exec.ID); err != nil || info.ExitCode != 0 {
			b.Fatalf("exec: %v %+v", err, info)
		}
	}
}

// BenchmarkStartup measures a start on a log of 1,000 open sessions and
// 100,000 events: replay, recovery, and the service taking requests. The
// engine is unreachable, so sandboxes stay detached (they are taken back in
// the background and would not delay serving anyway).
func BenchmarkStartup(b *testing.B) {
	dataDir := b.TempDir()
	log, err := eventlog.Open(filepath.Join(dataDir, eventlog.FileName), eventlog.Options{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := eventlog.SessionConfig{IdleTimeoutMinutes: 600, MaxLifetimeMinutes: 600, MemoryLimitMB: 512, CPUShares: 1024, PidsLimit: 256, Image: "codebeaker-python:latest"}
	for i := range 1000 {
		id := fmt.Sprintf("bench-session-%04d", i)
		if err := os.MkdirAll(filepath.Join(dataDir, "workspaces", id), 0o755); err != nil {
			b.Fatal(err)
		}
		recs := []eventlog.Record{
			{SessionID: id, Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{Language: "python", Runtime: sandbox.KindDocker, Config: cfg}},
			{SessionID: id, Type: eventlog.SessionCreated, Data: eventlog.SessionCreatedData{ContainerID: "c-" + id}},
		}
		for n := range 49 {
			cmd := fmt.Sprintf("cmd-%d", n)
			exit := 0
			recs = append(recs,
				eventlog.Record{SessionID: id, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: cmd, Type: "execute_shell", Command: json.RawMessage(`{"type":"execute_shell","commandName":"python3","args":["-c","print(1)"]}`)}},
				eventlog.Record{SessionID: id, Type: eventlog.CommandCompleted, Data: eventlog.CommandCompletedData{CommandID: cmd, Type: "execute_shell", Success: true, ExitCode: &exit, DurationMs: 100, StdoutBytes: 2, Stdout: "1\n"}})
		}
		if _, err := log.Append(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
	}
	if seq, _ := log.LastSeq(); seq != 100000 {
		b.Fatalf("log has %d events", seq)
	}
	log.Close()
	rt, err := docker.New(docker.Options{Host: "unix://" + filepath.Join(dataDir, "no-engine.sock"), Instance: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		svc, err := rpc.Open(context.Background(), rpc.Config{DataDir: dataDir, Runtimes: map[string]sandbox.Runtime{sandbox.KindDocker: rt},
			Limits: rpc.DefaultLimits(), Logger: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		if n := len(svc.View().List()); n != 1000 {
			b.Fatalf("%d sessions open after start", n)
		}
		b.StopTimer()
		svc.Close(context.Background())
		b.StartTimer()
	}
}
