package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// A dockerImage gets a pool once a session used it; an image that cannot
// be made drops out; Close leaves no container and no folder.
func TestPoolCustomImage(t *testing.T) {
	newRuntime(t) // the engine answers
	dir := t.TempDir()
	r, err := New(Options{Instance: Instance(dir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t.Cleanup(func() { // whatever a failure left
		owned, _ := r.Owned(context.Background())
		for id := range owned {
			r.Remove(context.Background(), id)
		}
	})
	const custom = "codebeaker-base:bookworm" // no runtime image: allowed by pattern
	if err := r.AllowImages([]string{"codebeaker-base:*"}); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	p := r.NewPool(sandbox.PoolConfig{
		Size:      1,
		Limits:    sandbox.Spec{MemoryLimitMB: 128, CPUShares: 1024, PidsLimit: 64},
		NewID:     func() string { return fmt.Sprintf("warm-%d", n.Add(1)) },
		Workspace: func(id string) string { return filepath.Join(dir, id) },
		Logger:    zerolog.New(zerolog.NewTestWriter(t)),
	})
	closed := false
	defer func() {
		if !closed {
			p.Close(context.Background())
		}
	}()
	spec := sandbox.Spec{Language: python(t), Image: custom, MemoryLimitMB: 128, CPUShares: 1024, PidsLimit: 64}
	if _, _, ok, _ := p.Claim(context.Background(), spec); ok {
		t.Fatal("a claim on an image no session used found a warm sandbox")
	}
	missing := spec
	missing.Image = "codebeaker-base:no-such-tag"
	p.Claim(context.Background(), missing)
	waitStatus(t, p, func(st map[string]sandbox.PoolStatus) bool {
		_, bad := st[missing.Image]
		return st[custom].Ready == 1 && !bad
	})
	id, box, ok, err := p.Claim(context.Background(), spec)
	if !ok || err != nil {
		t.Fatalf("claim from a full pool: ok %v, err %v", ok, err)
	}
	defer box.Close(context.Background())
	if p.Holds(id) {
		t.Error("the pool still holds a claimed sandbox")
	}
	if made, err := r.PoolMade(context.Background(), box.ID()); !made || err != nil {
		t.Errorf("PoolMade of a claimed warm container: %v %v", made, err)
	}
	info, err := r.api.ContainerInspect(context.Background(), box.ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Labels[LabelSession] != id || info.Config.Labels[LabelPool] != custom {
		t.Errorf("labels of the claimed container: %v", info.Config.Labels)
	}
	if _, err := os.Stat(filepath.Join(dir, id)); err != nil {
		t.Errorf("the claimed session's workspace folder: %v", err)
	}
	res, err := box.Exec(context.Background(), sandbox.Process{Args: []string{"sh", "-c", "echo ok > /workspace/f; cat /workspace/f"}, Timeout: 10 * time.Second, OutputLimit: 1 << 10})
	if err != nil || string(res.Stdout) != "ok\n" {
		t.Errorf("exec in the claimed container: %q %v", res.Stdout, err)
	}
	waitStatus(t, p, func(st map[string]sandbox.PoolStatus) bool { return st[custom].Ready == 1 })
	box.Close(context.Background())

	closed = true
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	owned, err := r.Owned(context.Background())
	if err != nil || len(owned) != 0 {
		t.Errorf("containers left after Close: %v %v", owned, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != id { // the claimed one is its session's
		t.Errorf("folders left after Close: %v", entries)
	}
}

func waitStatus(t *testing.T, p sandbox.Pool, cond func(map[string]sandbox.PoolStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond(p.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("pool status not reached within 2 minutes: %+v", p.Status())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
