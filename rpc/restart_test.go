package rpc_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// run is one run of the service on a data dir, as a restarted server would
// be: a new process's worth of state, the same files.
type run = testServer

func startRun(t testing.TB, dataDir string, rt sandbox.Runtime) *run {
	return startRuntimes(t, dataDir, map[string]sandbox.Runtime{sandbox.KindDocker: rt})
}

func startRuntimes(t testing.TB, dataDir string, runtimes map[string]sandbox.Runtime) *run {
	t.Helper()
	cfg := testConfig(t, dataDir, runtimes)
	cfg.ReconcileInterval = 200 * time.Millisecond
	return startServer(t, cfg, ws.Options{})
}

// stop shuts the run down gracefully; its sessions stay open.
func (r *run) stop() {
	r.t.Helper()
	r.http.Close()
	r.server.CloseConnections()
	if err := r.svc.Close(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) events(sessionID string) []eventlog.Event {
	r.t.Helper()
	events, err := r.svc.Log().SessionEvents(sessionID, 0, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return events
}

func hasEvent(events []eventlog.Event, typ eventlog.Type, match func(eventlog.Event) bool) bool {
	for _, e := range events {
		if e.Type == typ && (match == nil || match(e)) {
			return true
		}
	}
	return false
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dockerAPI(t testing.TB) *client.Client {
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return api
}

func TestRestartKeepsSessions(t *testing.T) {
	dataDir := t.TempDir()
	rt, err := docker.New(docker.Options{Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	api := dockerAPI(t)

	first := startRun(t, dataDir, rt)
	c := first.dial()
	kept := c.create(map[string]any{"language": "python"})
	c.mustSucceed(kept, map[string]any{"type": "write_file", "path": "notes.txt", "content": "kept"})
	c.shell(kept, "true")
	lost := c.create(map[string]any{"language": "python"})
	c.mustSucceed(lost, map[string]any{"type": "write_file", "path": "notes.txt", "content": "files survive"})
	idle := c.create(map[string]any{"language": "python", "idleTimeoutMinutes": 0.02})
	keptView, _ := first.svc.View().Get(kept)
	lostView, _ := first.svc.View().Get(lost)
	idleView, _ := first.svc.View().Get(idle)
	first.stop()

	// While the server is down: one container goes, one idle timeout passes,
	// and a container with our labels appears that no session owns.
	if err := api.ContainerRemove(context.Background(), lostView.ContainerID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	stray, err := rt.Create(context.Background(), sandbox.Spec{SessionID: "stray", Image: "codebeaker-python:latest",
		Workspace: t.TempDir(), MemoryLimitMB: 64, CPUShares: 2, PidsLimit: 16})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)

	second := startRun(t, dataDir, rt)
	defer func() {
		for _, s := range second.svc.View().List() {
			second.svc.CloseSession(context.Background(), s.ID)
		}
		second.stop()
	}()
	c = second.dial()

	// The running container is taken back: same container, same counts,
	// same files, and it runs the next command.
	var list struct {
		Sessions []struct {
			SessionID, ContainerID string
			ExecutionCount         int
		}
	}
	c.ok("session.list", map[string]any{}, &list)
	counts := map[string]int{}
	for _, s := range list.Sessions {
		counts[s.SessionID] = s.ExecutionCount
	}
	if len(list.Sessions) != 2 || counts[kept] != 2 || counts[lost] != 1 {
		t.Errorf("after restart: %+v", list)
	}
	if sh := c.shell(kept, "cat", "notes.txt"); sh.Stdout != "kept" {
		t.Errorf("kept session reads %q", sh.Stdout)
	}
	if v, _ := second.svc.View().Get(kept); v.ContainerID != keptView.ContainerID {
		t.Errorf("running container replaced: %s -> %s", keptView.ContainerID, v.ContainerID)
	}
	if !hasEvent(second.events(kept), eventlog.SessionRecovered, nil) {
		t.Error("no SessionRecovered for the kept session")
	}

	// The session whose container went is restored on its workspace.
	if sh := c.shell(lost, "cat", "notes.txt"); sh.Stdout != "files survive" {
		t.Errorf("restored session reads %q (stderr %q)", sh.Stdout, sh.Stderr)
	}
	if !hasEvent(second.events(lost), eventlog.SessionRecovered, func(e eventlog.Event) bool {
		var d eventlog.SessionRecoveredData
		e.Decode(&d)
		return d.Restored && d.ContainerID != lostView.ContainerID
	}) {
		t.Error("no SessionRecovered with restored for the session whose container was removed")
	}

	// The idle timeout that passed while down closed its session.
	events := second.events(idle)
	var closed eventlog.SessionClosedData
	events[len(events)-1].Decode(&closed)
	if events[len(events)-1].Type != eventlog.SessionClosed || closed.Reason != eventlog.ReasonIdleTimeout {
		t.Errorf("idle session ends with %s %s", events[len(events)-1].Type, events[len(events)-1].Data)
	}
	if idleView.ContainerID == "" {
		t.Error("the idle session had no container")
	}
	eventually(t, "the idle session's container removed", func() bool { return len(containersOf(t, idle)) == 0 })

	// The stray container is removed and the removal recorded.
	eventually(t, "stray container removed", func() bool { return len(containersOf(t, "stray")) == 0 })
	if !hasEvent(second.events("stray"), eventlog.ContainerRemoved, func(e eventlog.Event) bool {
		var d eventlog.ContainerRemovedData
		e.Decode(&d)
		return d.ContainerID == stray.ID()
	}) {
		t.Error("no ContainerRemoved event for the stray container")
	}

	// A container removed behind the running server's back comes back too.
	v, _ := second.svc.View().Get(kept)
	if err := api.ContainerRemove(context.Background(), v.ContainerID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if sh := c.shell(kept, "cat", "notes.txt"); sh.Stdout != "kept" {
		t.Errorf("after its container was removed, the session reads %q (stderr %q)", sh.Stdout, sh.Stderr)
	}
}

// engineProxy stands between the service and the real engine, so a test can
// take the engine away and give it back without touching dockerd.
type engineProxy struct {
	path  string
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newEngineProxy(t *testing.T) *engineProxy {
	p := &engineProxy{path: filepath.Join(t.TempDir(), "docker.sock"), conns: map[net.Conn]bool{}}
	t.Cleanup(p.down)
	return p
}

func (p *engineProxy) host() string { return "unix://" + p.path }

func (p *engineProxy) up(t *testing.T) {
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[conn] = true
			p.mu.Unlock()
			go func() {
				defer conn.Close()
				engine, err := net.Dial("unix", "/var/run/docker.sock")
				if err != nil {
					return
				}
				defer engine.Close()
				go io.Copy(engine, conn)
				io.Copy(conn, engine)
			}()
		}
	}()
}

func (p *engineProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	// Kept-alive connections go too, as they would with a stopped engine.
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func TestEngineDownAtStart(t *testing.T) {
	proxy := newEngineProxy(t)
	proxy.up(t)
	dataDir := t.TempDir()
	rt, err := docker.New(docker.Options{Host: proxy.host(), Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	first := startRun(t, dataDir, rt)
	c := first.dial()
	sid := c.create(map[string]any{"language": "python"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "a.txt", "content": "A"})
	first.stop()

	proxy.down()
	second := startRun(t, dataDir, rt)
	defer func() {
		second.svc.CloseSession(context.Background(), sid)
		second.stop()
	}()
	resp, err := http.Get(second.http.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var health rpc.Health
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health.Runtimes[sandbox.KindDocker].Available || !health.EventLog.Writable {
		t.Errorf("health with the engine down: %d %+v", resp.StatusCode, health)
	}
	c = second.dial()
	// File commands need no engine; programs report it gone, clearly.
	env := c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "a.txt"})
	assertJSON(t, env.Result, `{"content": "A", "bytes": 1}`)
	env = c.exec(sid, map[string]any{"type": "execute_shell", "commandName": "cat", "args": []string{"a.txt"}})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, "docker engine") {
		t.Errorf("command with the engine down: %+v", env)
	}

	proxy.up(t)
	eventually(t, "session taken back when the engine returns", func() bool {
		return hasEvent(second.events(sid), eventlog.SessionRecovered, nil)
	})
	if sh := c.shell(sid, "cat", "a.txt"); sh.Stdout != "A" {
		t.Errorf("after the engine came back: %q %q", sh.Stdout, sh.Stderr)
	}
}
