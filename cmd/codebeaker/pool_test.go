package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
)

// A pool claim after a server kill -9: the next run removes the warm
// containers the killed one left, fills its own, and a create takes one
// and runs a command; a stop leaves no container.
func TestPoolClaimAfterKillNine(t *testing.T) {
	api := needDocker(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	instance := docker.Instance(dataDir)
	t.Cleanup(func() { removeInstance(t, api, instance) })
	srv := startServer(t, dataDir, "--pool-size", "1")
	waitPoolsFull(t, srv.addr)
	old := instanceContainers(t, api, instance)
	if len(old) == 0 {
		t.Fatal("no warm container before the kill")
	}
	srv.kill()
	if left := instanceContainers(t, api, instance); len(left) != len(old) {
		t.Fatalf("after the kill %d containers, before %d", len(left), len(old))
	}

	srv = startServer(t, dataDir, "--pool-size", "1")
	waitPoolsFull(t, srv.addr)
	c, err := dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.ws.Close()
	start := time.Now()
	var created struct{ SessionID, ContainerID string }
	if e, err := c.call("session.create", map[string]any{"language": "python"}, &created); err != nil || e != nil {
		t.Fatalf("create: %v %v", e, err)
	}
	t.Logf("session.create from the pool after the restart: %s", time.Since(start))
	now := instanceContainers(t, api, instance)
	if now[created.ContainerID] == "" {
		t.Fatalf("the session's container %.12s is not a warm one: %v", created.ContainerID, now)
	}
	if _, ok := old[created.ContainerID]; ok {
		t.Fatalf("the session took a warm container of the killed run")
	}
	var env struct {
		Success bool
		Result  struct{ Stdout string }
	}
	if e, err := c.call("session.execute", map[string]any{"sessionId": created.SessionID, "command": map[string]any{
		"type": "execute_shell", "commandName": "echo", "args": []string{"ok"}}}, &env); err != nil || e != nil || env.Result.Stdout != "ok\n" {
		t.Fatalf("execute in the claimed session: %v %v %+v", e, err, env)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := 0
		now := instanceContainers(t, api, instance)
		for id := range old {
			if now[id] != "" {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d warm containers of the killed run still there 30 s after the restart", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e, err := c.call("session.close", map[string]any{"sessionId": created.SessionID}, nil); err != nil || e != nil {
		t.Fatalf("close: %v %v", e, err)
	}
	srv.stop()
	if left := instanceContainers(t, api, instance); len(left) != 0 {
		t.Errorf("containers left after the stop: %v", left)
	}
	logText, _ := os.ReadFile(filepath.Join(dataDir, "..", "data.log"))
	for _, want := range []string{"warm pool full", "warm pool closed"} {
		if !strings.Contains(string(logText), want) {
			t.Errorf("the server's log does not say %q", want)
		}
	}
}

// waitPoolsFull waits until /health says every Docker language's pool holds
// one warm sandbox.
func waitPoolsFull(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var h struct {
			Pools map[string]sandbox.PoolStatus
		}
		if resp, err := http.Get("http://" + addr + "/health"); err == nil {
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
		}
		full := 0
		for _, l := range sandbox.Languages(sandbox.KindDocker) {
			if st := h.Pools[l.Image]; st.Ready == 1 && st.Size == 1 && st.Language == l.Name {
				full++
			}
		}
		if full == len(sandbox.Languages(sandbox.KindDocker)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pools are not full within 2 minutes: %+v", h.Pools)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// instanceContainers lists an instance's containers: id -> LabelPool.
func instanceContainers(t *testing.T, api *client.Client, instance string) map[string]string {
	t.Helper()
	list, err := api.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+instance))})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range list {
		out[c.ID] = c.Labels[docker.LabelPool]
	}
	return out
}

// removeInstance removes what a test's server left, so that a failed test
// leaks nothing; it is no check.
func removeInstance(t *testing.T, api *client.Client, instance string) {
	for id := range instanceContainers(t, api, instance) {
		api.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
	}
}
