package rpc_test

import (
	"context"
	"io"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
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
			User: "1000:1000", AttachStdout: true, AttachStderr: true, Cmd: []string{"python3", "-c", "print(1)"}})
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
