package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// newRuntime connects to the engine, failing the test when it does not
// answer: CI has one, and these tests must not pass by skipping.
func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	r, err := New(Options{Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.Ping(context.Background()); err != nil {
		t.Fatalf("%v\nThese tests need a running Docker engine: run scripts/ensure-docker.sh, then scripts/build-runtime-images.sh for the images.", err)
	}
	return r
}

func python(t *testing.T) sandbox.Language {
	t.Helper()
	l, err := sandbox.LookupLanguage("python")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testSpec is the spec of a test container: a fresh workspace owned by the
// sandbox user, a session id of its own, and the service's usual limits.
func testSpec(t *testing.T, r *Runtime) (sandbox.Spec, *sandbox.Workspace) {
	t.Helper()
	lang := python(t)
	if ok, err := r.ImageExists(context.Background(), lang.Image); err != nil || !ok {
		t.Fatalf("image %s is missing (err %v): run scripts/build-runtime-images.sh", lang.Image, err)
	}
	dir := filepath.Join(t.TempDir(), "workspace")
	ws, err := sandbox.OpenWorkspace(dir, sandbox.UID, sandbox.GID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	id := make([]byte, 8)
	rand.Read(id)
	spec := sandbox.Spec{
		SessionID:     "test-" + hex.EncodeToString(id),
		Language:      lang,
		Image:         lang.Image,
		Workspace:     dir,
		MemoryLimitMB: 256,
		CPUShares:     1024,
		PidsLimit:     256,
	}
	// Whatever happens to the test, no container of its session outlives it.
	t.Cleanup(func() { removeSession(t, r, spec.SessionID) })
	return spec, ws
}

// sessionContainers lists the containers, running or not, labelled with a
// session id.
func sessionContainers(t *testing.T, r *Runtime, sessionID string) []container.Summary {
	t.Helper()
	list, err := r.api.ContainerList(context.Background(), container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelSession+"="+sessionID)),
	})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	return list
}

func removeSession(t *testing.T, r *Runtime, sessionID string) {
	for _, c := range sessionContainers(t, r, sessionID) {
		if err := r.Remove(context.Background(), c.ID); err != nil {
			t.Errorf("remove test container %s: %v", shortID(c.ID), err)
		}
	}
}

// newContainer makes a started container for the test.
func newContainer(t *testing.T, r *Runtime, tweak func(*sandbox.Spec)) (*Container, *sandbox.Workspace, sandbox.Spec) {
	t.Helper()
	spec, ws := testSpec(t, r)
	if tweak != nil {
		tweak(&spec)
	}
	sb, err := r.Create(context.Background(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := r.api.ContainerInspect(ctx, sb.ID()); errdefs.IsNotFound(err) && t.Failed() {
			t.Logf("container %s was gone before the test ended: if the test did not close it, something else "+
				"removed it (a CodeBeaker server on this engine, such as the rpc tests, removes every %s container it does not own)",
				shortID(sb.ID()), LabelManaged)
		}
		if err := sb.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sb.(*Container), ws, spec
}

// run runs a program in the container and fails the test unless it exits 0.
func run(t *testing.T, c *Container, args ...string) string {
	t.Helper()
	res, err := c.Exec(context.Background(), sandbox.Process{Args: args, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%q: exit %d, err %v, stderr %q", args, res.ExitCode, err, res.Stderr)
	}
	return string(res.Stdout)
}

func TestSuite(t *testing.T) {
	r := newRuntime(t)
	sandboxtest.Run(t, sandboxtest.Harness{
		Language: python(t),
		Scripts:  sandboxtest.PythonScripts,
		New: func(t *testing.T, tweak func(*sandbox.Spec)) (sandbox.Sandbox, *sandbox.Workspace) {
			c, ws, _ := newContainer(t, r, tweak)
			return c, ws
		},
	})
}

func TestContainerConfig(t *testing.T) {
	r := newRuntime(t)
	c, _, spec := newContainer(t, r, func(s *sandbox.Spec) {
		s.MemoryLimitMB, s.CPUShares, s.PidsLimit = 96, 512, 100
	})
	info, err := r.api.ContainerInspect(context.Background(), c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Config.Labels; got[LabelSession] != spec.SessionID || got[LabelManaged] != "true" {
		t.Errorf("labels = %v; want %s=%s and %s=true", got, LabelSession, spec.SessionID, LabelManaged)
	}
	if info.Name != "/codebeaker-"+spec.SessionID {
		t.Errorf("name = %q", info.Name)
	}
	if info.State == nil || !info.State.Running {
		t.Errorf("state = %+v; want running", info.State)
	}
	hc := info.HostConfig
	if hc.NetworkMode != "none" {
		t.Errorf("network mode %q; want none", hc.NetworkMode)
	}
	if hc.Memory != 96<<20 || hc.MemorySwap != hc.Memory {
		t.Errorf("memory %d, memory+swap %d; want both %d (no swap)", hc.Memory, hc.MemorySwap, 96<<20)
	}
	if hc.CPUShares != 512 {
		t.Errorf("cpu shares %d; want 512", hc.CPUShares)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != 100 {
		t.Errorf("pids limit %v; want 100", hc.PidsLimit)
	}
	if !slices.Contains(hc.CapDrop, "ALL") || !sameCaps(hc.CapAdd, agentCaps) {
		t.Errorf("cap drop %v, cap add %v; want ALL dropped, only the agent's %v added", hc.CapDrop, hc.CapAdd, agentCaps)
	}
	if hc.Init != nil && *hc.Init {
		t.Error("docker's init runs; the agent is the init")
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("security options %v; want no-new-privileges", hc.SecurityOpt)
	}
	if hc.Privileged {
		t.Error("privileged")
	}
	var bound bool
	for _, m := range info.Mounts {
		if m.Destination == sandbox.WorkspaceDir && m.Source == spec.Workspace && m.RW {
			bound = true
		}
	}
	if !bound {
		t.Errorf("mounts %+v; want %s bound read-write at %s", info.Mounts, spec.Workspace, sandbox.WorkspaceDir)
	}
}

// TestIsolation looks from inside: the command's user, capabilities and
// network.
func TestIsolation(t *testing.T) {
	r := newRuntime(t)
	c, _, _ := newContainer(t, r, nil)

	status := map[string]string{}
	for _, line := range strings.Split(run(t, c, "cat", "/proc/self/status"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	for k, want := range map[string]string{
		"Uid":        strings.Repeat(strconv.Itoa(sandbox.UID)+" ", 3) + strconv.Itoa(sandbox.UID),
		"Gid":        strings.Repeat(strconv.Itoa(sandbox.GID)+" ", 3) + strconv.Itoa(sandbox.GID),
		"CapInh":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapEff":     "0000000000000000",
		"CapBnd":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"NoNewPrivs": "1",
	} {
		if status[k] != want {
			t.Errorf("/proc/self/status %s: %q; want %q", k, status[k], want)
		}
	}
	// Nothing of the agent's or its shim's files: stdio alone (3 is the
	// listing's own).
	if got := run(t, c, "python3", "-c", "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"); got != "[0, 1, 2, 3]\n" {
		t.Errorf("a command's open files: %s; want stdin, stdout and stderr alone", got)
	}
	if got := strings.Fields(run(t, c, "ls", "/sys/class/net")); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("network interfaces %v; want only lo", got)
	}
	var ifaces []string
	for _, line := range strings.Split(run(t, c, "cat", "/proc/net/dev"), "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			ifaces = append(ifaces, strings.TrimSpace(name))
		}
	}
	if !slices.Equal(ifaces, []string{"lo"}) {
		t.Errorf("/proc/net/dev lists %v; want only lo", ifaces)
	}
	// The placeholder (and so the container) survives the sandbox user's
	// kill of everything it may signal.
	if _, err := c.Exec(context.Background(), sandbox.Process{Args: []string{"sh", "-c", "kill -KILL -1"}, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, c, "echo", "alive"); got != "alive\n" {
		t.Errorf("after kill -1: %q", got)
	}
}

func TestCreateMissingImage(t *testing.T) {
	r := newRuntime(t)
	spec, _ := testSpec(t, r)
	spec.Image = "codebeaker-no-such-image:latest"
	sb, err := r.Create(context.Background(), spec)
	if err == nil {
		sb.Close(context.Background())
		t.Fatal("Create with a missing image succeeded")
	}
	if !errors.Is(err, sandbox.ErrImageNotFound) {
		t.Errorf("error %v; want one wrapping sandbox.ErrImageNotFound", err)
	}
	if !strings.Contains(err.Error(), spec.Image) {
		t.Errorf("error %q does not name the image", err)
	}
	if left := sessionContainers(t, r, spec.SessionID); len(left) != 0 {
		t.Errorf("Create left %d containers behind", len(left))
	}
}

// A container takes no Deno permissions, not even an empty set: Validate
// and Create refuse them before anything is made.
func TestValidate(t *testing.T) {
	r := newRuntime(t)
	spec, _ := testSpec(t, r)
	if err := r.Validate(spec); err != nil {
		t.Fatalf("Validate of a plain spec: %v", err)
	}
	spec.Permissions = &sandbox.Permissions{}
	const want = `"permissions" applies only to deno sessions, not python`
	var se *sandbox.SpecError
	if err := r.Validate(spec); !errors.As(err, &se) || err.Error() != want {
		t.Errorf("Validate: %v; want a *sandbox.SpecError %q", err, want)
	}
	if sb, err := r.Create(context.Background(), spec); !errors.As(err, &se) {
		if sb != nil {
			sb.Close(context.Background())
		}
		t.Errorf("Create: %v; want Validate's %q", err, want)
	}
	if left := sessionContainers(t, r, spec.SessionID); len(left) != 0 {
		t.Errorf("Create left %d containers behind", len(left))
	}
}

func TestCloseRemovesContainer(t *testing.T) {
	r := newRuntime(t)
	c, ws, _ := newContainer(t, r, nil)
	if _, err := ws.WriteFile("kept.txt", []byte("kept"), false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.api.ContainerInspect(ctx, c.ID()); !errdefs.IsNotFound(err) {
		t.Errorf("inspect after Close: %v; want not found", err)
	}
	if err := r.Remove(ctx, c.ID()); err != nil {
		t.Errorf("Remove of a removed container: %v", err)
	}
	// The workspace is the session's, not the container's.
	if got, err := ws.ReadFile("kept.txt", 100); err != nil || string(got) != "kept" {
		t.Errorf("workspace file after Close: %q, %v", got, err)
	}
}

func TestHealth(t *testing.T) {
	r := newRuntime(t)
	h := r.Health(context.Background())
	if !h.Available || h.Error != "" || !h.Images["python"] {
		t.Errorf("Health = %+v; want available with the python image", h)
	}
	if _, ok := h.Images["deno"]; ok {
		t.Errorf("Health lists deno among the Docker images: %+v", h)
	}
}

// TestTimeoutCost measures how long past its timeout a command that
// sleeps answers: the price of the kill (a restart of the container).
func TestTimeoutCost(t *testing.T) {
	r := newRuntime(t)
	c, _, _ := newContainer(t, r, nil)
	const timeout, runs = time.Second, 5
	var total, worst time.Duration
	for range runs {
		res, err := c.Exec(context.Background(), sandbox.Process{Args: []string{"sleep", "60"}, Timeout: timeout})
		if err != nil || !res.TimedOut {
			t.Fatalf("sleep 60 with a %v timeout: timedOut %v, err %v", timeout, res.TimedOut, err)
		}
		over := res.Duration - timeout
		total, worst = total+over, max(worst, over)
	}
	t.Logf("a timeout costs %v on average past the timeout, %v at worst (%d runs)", (total / runs).Round(time.Millisecond), worst.Round(time.Millisecond), runs)
	if worst > 20*time.Second {
		t.Errorf("a timeout took %v past its timeout", worst)
	}
	if got := run(t, c, "echo", "alive"); got != "alive\n" {
		t.Errorf("after the timeouts: %q", got)
	}
}

// TestBackgroundStopStorm: a stop storm that an earlier command left
// running is the session's, and a command's kill spares the session's
// other processes. It stops every later command of the sandbox user as it
// starts: each ends at its timeout all the same (the agent and its shims
// are root, out of the storm's reach, and no engine call waits on the
// container), and closing the session ends the storm with the container.
func TestBackgroundStopStorm(t *testing.T) {
	r := newRuntime(t)
	c, _, _ := newContainer(t, r, nil)
	run(t, c, "sh", "-c", `setsid sh -c 'while :; do kill -STOP -1; done' </dev/null >/dev/null 2>&1 &`)
	time.Sleep(500 * time.Millisecond)
	for i := range 2 {
		start := time.Now()
		res, err := c.Exec(context.Background(), sandbox.Process{Args: []string{"echo", "hi"}, Timeout: 3 * time.Second})
		took := time.Since(start)
		t.Logf("command %d after a background stop storm answered after %v: timedOut %v, stdout %q, err %v", i, took.Round(time.Millisecond), res.TimedOut, res.Stdout, err)
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		if took > 3*time.Second+stormSlack {
			t.Errorf("command %d took %v for a 3 s timeout", i, took)
		}
	}
	start := time.Now()
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if _, err := r.api.ContainerInspect(context.Background(), c.ID()); err == nil {
		t.Error("the container is still there after Close")
	}
}

// stormSlack is how long past its timeout a command may answer while a
// storm runs: a busy machine's scheduling, not a kill that waits.
const stormSlack = 15 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	sandboxtest.RemoveAgentBinary()
	os.Exit(code)
}

// sameCaps compares capability lists as the engine may spell them
// (with or without CAP_).
func sameCaps(got, want []string) bool {
	norm := func(l []string) []string {
		out := make([]string, len(l))
		for i, c := range l {
			out[i] = strings.TrimPrefix(strings.ToUpper(c), "CAP_")
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(got), norm(want))
}
