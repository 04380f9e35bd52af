package docker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/codebeaker/codebeaker/sandbox"
)

// hostileScript is what a sandbox program tries against the agent: reach
// its socket (directly and through PID 1's view), see its files, signal it
// and its own shim. It prints what each attempt got.
const hostileScript = `import json, os, signal, socket, struct
out = {}
def attempt(name, f):
    try:
        f()
        out[name] = "ok"
    except OSError as e:
        out[name] = e.__class__.__name__
def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    body = b'H{"version":1}'
    s.sendall(struct.pack(">I", len(body)) + body)
    body = b'S{"args":["touch","/workspace/pwned"]}'
    s.sendall(struct.pack(">I", len(body)) + body)
    if not s.recv(4096):
        raise ConnectionRefusedError("hung up")
attempt("connect", lambda: connect("/.codebeaker/run/agent.sock"))
attempt("connect-via-proc", lambda: connect("/proc/1/root/.codebeaker/run/agent.sock"))
attempt("list-run", lambda: os.listdir("/.codebeaker/run"))
attempt("list-pid1-fds", lambda: os.listdir("/proc/1/fd"))
attempt("write-agent", lambda: open("/.codebeaker/agent", "ab").close())
for sig in ("SIGKILL", "SIGTERM", "SIGSTOP"):
    attempt("kill-1-" + sig, lambda: os.kill(1, getattr(signal, sig)))
attempt("kill-shim", lambda: os.kill(os.getppid(), signal.SIGKILL))
print(json.dumps(out))
`

// TestSandboxCannotDriveAgent runs hostileScript as a command: every
// attempt fails, no file is made by the agent on its behalf, and the agent
// serves on.
func TestSandboxCannotDriveAgent(t *testing.T) {
	r := newRuntime(t)
	c, ws, _ := newContainer(t, r, nil)
	if _, err := ws.WriteFile("hostile.py", []byte(hostileScript), false); err != nil {
		t.Fatal(err)
	}
	out := run(t, c, "python3", "hostile.py")
	var got map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("hostile.py printed %q: %v", out, err)
	}
	want := map[string]string{
		"connect":          "PermissionError",
		"connect-via-proc": "PermissionError",
		"list-run":         "PermissionError",
		"list-pid1-fds":    "PermissionError",
		"kill-1-SIGKILL":   "PermissionError",
		"kill-1-SIGTERM":   "PermissionError",
		"kill-1-SIGSTOP":   "PermissionError",
		"kill-shim":        "PermissionError",
	}
	if got["write-agent"] == "ok" {
		t.Error("the sandbox user could write the agent's binary")
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q; want %s", k, got[k], w)
		}
	}
	// The memory killer takes a command's processes before the agent.
	if got := run(t, c, "cat", "/proc/self/oom_score_adj", "/proc/1/oom_score_adj"); got != "1000\n0\n" {
		t.Errorf("oom_score_adj of a command and of the agent: %q; want 1000 and 0", got)
	}
	if _, err := ws.ReadFile("pwned", 1<<10); err == nil {
		t.Error("the agent ran the sandbox program's command")
	}
	if out := run(t, c, "echo", "still served"); out != "still served\n" {
		t.Errorf("after the attempts: %q", out)
	}
}

// TestAgentDeathEndsContainer kills the agent from the host, as only the
// host can: the container ends with it, a command then fails with
// sandbox.ErrGone (so a session takes it back), and Reattach brings it
// back with a new agent.
func TestAgentDeathEndsContainer(t *testing.T) {
	r := newRuntime(t)
	c, _, spec := newContainer(t, r, nil)
	ctx := context.Background()
	if err := r.api.ContainerKill(ctx, c.ID(), "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := r.api.ContainerInspect(ctx, c.ID())
		if err != nil {
			t.Fatal(err)
		}
		if !info.State.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container still runs 30 s after its agent was killed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err := c.Exec(ctx, sandbox.Process{Args: []string{"true"}, Dir: sandbox.WorkspaceDir, Timeout: time.Minute})
	if !errors.Is(err, sandbox.ErrGone) {
		t.Fatalf("Exec with the agent dead: %v; want sandbox.ErrGone", err)
	}
	box, restored, err := r.Reattach(ctx, spec, c.ID())
	if err != nil {
		t.Fatalf("Reattach: %v", err)
	}
	if restored || box.ID() != c.ID() {
		t.Errorf("Reattach made a new container (restored %v, id %s); want the stopped one started again", restored, shortID(box.ID()))
	}
	res, err := box.Exec(ctx, sandbox.Process{Args: []string{"echo", "back"}, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 10})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "back" {
		t.Fatalf("Exec after Reattach: %v, stdout %q", err, res.Stdout)
	}
}

// TestReattachSettlesLeftovers: a server that starts again takes a running
// container back after its agent killed what the old server's commands
// left running, detached or not.
func TestReattachSettlesLeftovers(t *testing.T) {
	r := newRuntime(t)
	c, _, spec := newContainer(t, r, nil)
	ctx := context.Background()
	run(t, c, "sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &")
	startedAt := mustInspect(t, r, c.ID()).State.StartedAt
	if top, err := r.api.ContainerTop(ctx, c.ID(), nil); err != nil || len(NotAgents(top)) != 1 {
		t.Fatalf("before Reattach the container runs %v (err %v); want the agent's processes and the detached sleep", top.Processes, err)
	}
	box, restored, err := r.Reattach(ctx, spec, c.ID())
	if err != nil || restored {
		t.Fatalf("Reattach: restored %v, %v", restored, err)
	}
	top, err := r.api.ContainerTop(ctx, box.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if left := NotAgents(top); len(left) != 0 {
		t.Errorf("after Reattach the container runs %v; want the agent's processes alone", left)
	}
	if mustInspect(t, r, box.ID()).State.StartedAt != startedAt {
		t.Error("Reattach restarted the container; its agent should have settled it")
	}
}

func mustInspect(t *testing.T, r *Runtime, id string) container.InspectResponse {
	t.Helper()
	info, err := r.api.ContainerInspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
