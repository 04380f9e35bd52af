package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

const pythonImage = "codebeaker-python:latest"

// withPool turns the warm pool on with n sandboxes per image.
func withPool(n int) serverOption {
	return func(c *rpc.Config, _ *ws.Options) { c.PoolSize = n }
}

// eachPoolSize runs a test with the pool off and with it on.
func eachPoolSize(t *testing.T, test func(t *testing.T, pool serverOption)) {
	for _, n := range []int{0, 1} {
		t.Run(fmt.Sprintf("pool=%d", n), func(t *testing.T) { test(t, withPool(n)) })
	}
}

// health reads GET /health.
func (ts *testServer) health() rpc.Health {
	ts.t.Helper()
	resp, err := http.Get(ts.http.URL + "/health")
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	var h rpc.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		ts.t.Fatal(err)
	}
	return h
}

// waitPool waits until /health says image's pool holds ready sandboxes.
func (ts *testServer) waitPool(image string, ready int) {
	ts.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		h := ts.health()
		if st, ok := h.Pools[image]; ok && st.Ready == ready {
			return
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("the pool of %s does not hold %d within 2 minutes: %+v", image, ready, h.Pools)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type pooled struct{ sessionID, containerID, image string }

// instanceContainers lists the containers of a data dir's instance, by id.
func instanceContainers(t testing.TB, api *client.Client, dataDir string, label ...string) map[string]pooled {
	t.Helper()
	args := filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+docker.Instance(dataDir)))
	for _, l := range label {
		args.Add("label", l)
	}
	list, err := api.ContainerList(context.Background(), container.ListOptions{All: true, Filters: args})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]pooled{}
	for _, c := range list {
		out[c.ID] = pooled{sessionID: c.Labels[docker.LabelSession], containerID: c.ID, image: c.Labels[docker.LabelPool]}
	}
	return out
}

// warmOf returns the one warm container of image: made for the pool, and
// no session's (a claimed one keeps its label).
func (ts *testServer) warmOf(api *client.Client, image string) pooled {
	t := ts.t
	t.Helper()
	var found []pooled
	for _, p := range instanceContainers(t, api, ts.dataDir, docker.LabelPool+"="+image) {
		if _, session := ts.svc.View().Get(p.sessionID); !session {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one warm container of %s, have %v", image, found)
	}
	return found[0]
}

// removeInstance removes what a test's instance left, so that a failed
// test leaks nothing; it is no check.
func removeInstance(t testing.TB, api *client.Client, dataDir string) {
	for id := range instanceContainers(t, api, dataDir) {
		api.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
	}
}

// A create takes the warm container, under its session id, at once; the
// pool refills; warm containers count as no session.
func TestPoolClaim(t *testing.T) {
	api := dockerAPI(t)
	ts := newTestServer(t, withPool(1), func(c *rpc.Config, _ *ws.Options) { c.Limits.MaxSessions = 1 })
	ts.waitPool(pythonImage, 1)
	warm := ts.warmOf(api, pythonImage)
	if n := len(instanceContainers(t, api, ts.dataDir)); n < 2 {
		t.Fatalf("want warm containers of several languages, have %d", n)
	}
	raw := rawCreateStart(t, api, ts.dataDir) // with the pools full: nothing else runs
	c := ts.dial()
	start := time.Now()
	var created struct{ SessionID, ContainerID string }
	// MaxSessions is 1 and warm containers exist: they are no sessions.
	c.ok("session.create", map[string]any{"language": "python"}, &created)
	took := time.Since(start)
	t.Logf("session.create from the pool: %s; a raw Docker API create+start: %s (%.3f×)", took, raw, float64(took)/float64(raw))
	if created.SessionID != warm.sessionID || created.ContainerID != warm.containerID {
		t.Fatalf("created %+v, the warm container was %+v", created, warm)
	}
	if sh := c.shell(created.SessionID, "id", "-u"); sh.Stdout != fmt.Sprintln(sandbox.UID) {
		t.Fatalf("the claimed sandbox does not run as the sandbox user: %+v", sh)
	}
	c.mustSucceed(created.SessionID, map[string]any{"type": "write_file", "path": "a.txt", "content": "x"})
	if sh := c.shell(created.SessionID, "cat", "/workspace/a.txt"); sh.Stdout != "x" {
		t.Fatalf("the workspace is not the session's: %+v", sh)
	}
	c.rpcErr("session.create", map[string]any{"language": "python"}, rpc.CodeCapacityExhausted)

	// Refilled, with a container for another session id.
	ts.waitPool(pythonImage, 1)
	next := ts.warmOf(api, pythonImage)
	if next.sessionID == warm.sessionID || next.containerID == warm.containerID {
		t.Fatalf("the pool was not refilled with a new container: %+v", next)
	}
	var list struct{ Count int }
	c.ok("session.list", map[string]any{}, &list)
	if list.Count != 1 {
		t.Errorf("session.list counts %d sessions, want 1", list.Count)
	}
	c.rpcErr("session.history", map[string]any{"sessionId": next.sessionID}, rpc.CodeSessionNotFound)
	if ok, _ := ts.svc.Log().HasSession(next.sessionID); ok {
		t.Errorf("the warm container's session id %s is in the log", next.sessionID)
	}
	h := ts.health()
	if st := h.Pools[pythonImage]; st.Language != "python" || st.Size != 1 || st.Ready != 1 {
		t.Errorf("health pools: %+v", h.Pools)
	}
}

// A create with limits other than the defaults gets them on the warm
// container.
func TestPoolClaimLimits(t *testing.T) {
	api := dockerAPI(t)
	ts := newTestServer(t, withPool(1))
	ts.waitPool(pythonImage, 1)
	warm := ts.warmOf(api, pythonImage)
	c := ts.dial()
	var created struct{ SessionID, ContainerID string }
	c.ok("session.create", map[string]any{"language": "python", "memoryLimitMB": 256, "cpuShares": 512}, &created)
	if created.ContainerID != warm.containerID {
		t.Fatalf("created %+v, the warm container was %+v", created, warm)
	}
	info, err := api.ContainerInspect(context.Background(), created.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if r := info.HostConfig.Resources; r.Memory != 256<<20 || r.MemorySwap != 256<<20 || r.CPUShares != 512 {
		t.Errorf("limits of the claimed container: memory %d swap %d cpu shares %d", r.Memory, r.MemorySwap, r.CPUShares)
	}
	// The limit holds: more than 256 MB is killed.
	sh := c.shell(created.SessionID, "python3", "-c", "b = bytearray(400 << 20); print(len(b))")
	if !sh.OOMKilled {
		t.Errorf("a 400 MB allocation under a 256 MB limit: %+v", sh)
	}
}

// The reconciler leaves warm containers alone and records nothing of them;
// /health and the log see no session.
func TestPoolReconcilerLeavesWarm(t *testing.T) {
	api := dockerAPI(t)
	ts := newTestServer(t, withPool(1), func(c *rpc.Config, _ *ws.Options) { c.ReconcileInterval = 50 * time.Millisecond })
	for _, l := range sandbox.Languages(sandbox.KindDocker) {
		ts.waitPool(l.Image, 1)
	}
	before := instanceContainers(t, api, ts.dataDir)
	time.Sleep(2 * time.Second) // some 40 passes
	after := instanceContainers(t, api, ts.dataDir)
	if len(before) != 4 || len(after) != len(before) {
		t.Fatalf("warm containers before %d, after reconciling %d", len(before), len(after))
	}
	for id := range before {
		if _, ok := after[id]; !ok {
			t.Errorf("warm container %.12s was removed", id)
		}
	}
	if seq, _ := ts.svc.Log().LastSeq(); seq != 0 {
		t.Errorf("the log has %d events, want none", seq)
	}
	if h := ts.health(); h.Sessions != 0 {
		t.Errorf("health counts %d sessions", h.Sessions)
	}
}

// A shutdown removes the warm containers and their folders.
func TestPoolCloseRemoves(t *testing.T) {
	api := dockerAPI(t)
	dataDir := t.TempDir()
	t.Cleanup(func() { removeInstance(t, api, dataDir) })
	rt, err := docker.New(docker.Options{Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	cfg := testConfig(t, dataDir, map[string]sandbox.Runtime{sandbox.KindDocker: rt})
	cfg.PoolSize = 1
	r := startServer(t, cfg, ws.Options{})
	r.waitPool(pythonImage, 1)
	if len(instanceContainers(t, api, dataDir)) == 0 {
		t.Fatal("no warm container")
	}
	r.stop()
	if left := instanceContainers(t, api, dataDir); len(left) != 0 {
		t.Errorf("containers left after the service closed: %v", left)
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "workspaces")); len(entries) != 0 {
		t.Errorf("workspace folders left after the service closed: %v", entries)
	}
}

// After a run that could not remove its warm containers (its engine went
// away, as good as a crash for them), the next run removes them, records
// nothing of them, fills its own pool and serves claims; its shutdown
// leaves nothing.
func TestPoolAfterCrash(t *testing.T) {
	api := dockerAPI(t)
	dataDir := t.TempDir()
	t.Cleanup(func() { removeInstance(t, api, dataDir) })
	proxy := newEngineProxy(t)
	proxy.up(t)
	rt1, err := docker.New(docker.Options{Host: proxy.host(), Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt1.Close()
	cfg := testConfig(t, dataDir, map[string]sandbox.Runtime{sandbox.KindDocker: rt1})
	cfg.PoolSize = 1
	first := startServer(t, cfg, ws.Options{})
	for _, l := range sandbox.Languages(sandbox.KindDocker) {
		first.waitPool(l.Image, 1)
	}
	old := instanceContainers(t, api, dataDir)
	proxy.down()
	first.stop()
	if left := instanceContainers(t, api, dataDir); len(left) != len(old) || len(old) != 4 {
		t.Fatalf("the crash-like stop should leave the 4 warm containers, left %d of %d", len(left), len(old))
	}

	rt2, err := docker.New(docker.Options{Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	cfg.Runtimes = map[string]sandbox.Runtime{sandbox.KindDocker: rt2}
	cfg.ReconcileInterval = 200 * time.Millisecond
	second := startServer(t, cfg, ws.Options{})
	eventually(t, "the earlier run's warm containers removed", func() bool {
		now := instanceContainers(t, api, dataDir)
		for id := range old {
			if _, ok := now[id]; ok {
				return false
			}
		}
		return true
	})
	for _, p := range old {
		if _, err := os.Stat(filepath.Join(dataDir, "workspaces", p.sessionID)); !os.IsNotExist(err) {
			t.Errorf("the workspace folder of warm session id %s is still there: %v", p.sessionID, err)
		}
		if ok, _ := second.svc.Log().HasSession(p.sessionID); ok {
			t.Errorf("the log has events of the earlier warm session id %s", p.sessionID)
		}
	}
	second.waitPool(pythonImage, 1)
	warm := second.warmOf(api, pythonImage)
	c := second.dial()
	var created struct{ SessionID, ContainerID string }
	c.ok("session.create", map[string]any{"language": "python"}, &created)
	if created.ContainerID != warm.containerID {
		t.Errorf("created %+v, the warm container was %+v", created, warm)
	}
	if sh := c.shell(created.SessionID, "echo", "ok"); sh.Stdout != "ok\n" {
		t.Errorf("the claimed session runs: %+v", sh)
	}
	c.ok("session.close", map[string]any{"sessionId": created.SessionID}, nil)
	second.svc.Log().Scan(0, func(e eventlog.Event) error {
		if e.Type == eventlog.ContainerRemoved {
			t.Errorf("a ContainerRemoved event: %+v", e)
		}
		return nil
	})
	second.stop()
	if left := instanceContainers(t, api, dataDir); len(left) != 0 {
		t.Errorf("containers left after the second run closed: %v", left)
	}
}

// rawCreateStart times a bare Docker API create+start of the python image,
// the floor a cold create stands on; the container is removed.
func rawCreateStart(t *testing.T, api *client.Client, dataDir string) time.Duration {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	made, err := api.ContainerCreate(ctx, &container.Config{Image: pythonImage, Entrypoint: []string{"sleep", "infinity"},
		Labels: map[string]string{docker.LabelInstance: docker.Instance(dataDir) + "-raw"}}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer api.ContainerRemove(ctx, made.ID, container.RemoveOptions{Force: true})
	if err := api.ContainerStart(ctx, made.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}
