package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/deno"
)

// Deno sessions over the real WebSocket, with the real Deno in real
// bubblewrap jails.

// withDeno registers the Deno runtime, failing the test when Deno or
// bubblewrap is missing.
func withDeno(t testing.TB) serverOption {
	t.Helper()
	rt := deno.New(deno.Options{})
	if h := rt.Health(context.Background()); !h.Available {
		t.Fatalf("%s (these tests need the real Deno and bubblewrap)", h.Error)
	}
	return func(cfg *rpc.Config, _ *ws.Options) {
		cfg.Runtimes[sandbox.KindDeno] = rt
	}
}

// codeResult is execute_code's result: the program's stdout.
func codeResult(t testing.TB, env envelope) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(env.Result, &s); err != nil {
		t.Fatalf("execute_code result %s is not a string", env.Result)
	}
	return s
}

// The guide's first Deno example: TypeScript straight from execute_code.
func TestDenoGuideTypeScript(t *testing.T) {
	c := newTestServer(t, withDeno(t)).dial()
	r := c.call("session.create", map[string]any{"language": "deno", "idleTimeoutMinutes": 30})
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	var created struct {
		SessionID   string  `json:"sessionId"`
		ContainerID *string `json:"containerId"`
		Language    string  `json:"language"`
		State       string  `json:"state"`
	}
	json.Unmarshal(r.Result, &created)
	if created.ContainerID == nil || *created.ContainerID != "" || created.Language != "deno" || created.State != "Active" {
		t.Errorf("create result: %s; want containerId \"\", language deno, state Active", r.Result)
	}
	env := c.mustSucceed(created.SessionID, map[string]any{
		"type": "execute_code",
		"code": "const greeting: string = 'Hello from Deno!';\nconsole.log(greeting);\nconst sum = (a: number, b: number): number => a + b;\nconsole.log(`Sum: ${sum(10, 20)}`);",
	})
	if got := codeResult(t, env); got != "Hello from Deno!\nSum: 30" {
		t.Errorf("result %q; want %q", got, "Hello from Deno!\nSum: 30")
	}
}

// The guide's second: a file written with a relative path, imported from
// execute_code.
func TestDenoGuideFile(t *testing.T) {
	c := newTestServer(t, withDeno(t)).dial()
	sid := c.create(map[string]any{"language": "deno"})
	const calculator = "interface Calculator {\n  add(a: number, b: number): number;\n}\n\nconst calc: Calculator = {\n  add: (a, b) => a + b\n};\n\nconsole.log('Result:', calc.add(15, 25));"
	env := c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "calculator.ts", "content": calculator})
	assertJSON(t, env.Result, fmt.Sprintf(`{"path": "/workspace/calculator.ts", "bytes": %d}`, len(calculator)))
	env = c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "// Import from file\nimport('./calculator.ts');"})
	if got := codeResult(t, env); !strings.Contains(got, "Result: 40") {
		t.Errorf("result %q; want it to hold %q", got, "Result: 40")
	}
}

// The guide's third: permissions; the workspace is usable, the network is
// not, with Deno's own error naming the host.
func TestDenoGuidePermissions(t *testing.T) {
	c := newTestServer(t, withDeno(t)).dial()
	sid := c.create(map[string]any{"language": "deno", "permissions": map[string]any{
		"allowRead": []string{"/workspace"}, "allowWrite": []string{"/workspace"}, "allowNet": false, "allowEnv": false,
	}})
	env := c.mustSucceed(sid, map[string]any{"type": "execute_code",
		"code": "await Deno.writeTextFile('/workspace/data.txt', 'Hello!');\nconst content = await Deno.readTextFile('/workspace/data.txt');\nconsole.log(content);"})
	if got := codeResult(t, env); got != "Hello!" {
		t.Errorf("result %q; want %q", got, "Hello!")
	}
	env = c.exec(sid, map[string]any{"type": "execute_code", "code": "const response = await fetch('https://api.github.com');"})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, `Requires net access to "api.github.com`) {
		t.Errorf("fetch without allowNet: %+v; want a failure with Deno's permission error naming api.github.com", env)
	} else {
		t.Logf("fetch without allowNet: %s", strings.SplitN(*env.Error, "\n", 2)[0])
	}
	// Env is not granted.
	env = c.exec(sid, map[string]any{"type": "execute_code", "code": "console.log(Deno.env.get('HOME'))"})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, `Requires env access to "HOME"`) {
		t.Errorf("env without allowEnv: %+v", env)
	}
}

func TestDenoAliasesAndList(t *testing.T) {
	c := newTestServer(t, withDeno(t)).dial()
	ids := map[string]string{}
	for _, alias := range []string{"deno", "typescript", "ts", "TypeScript"} {
		var created struct{ SessionID, Language string }
		c.ok("session.create", map[string]any{"language": alias}, &created)
		if created.Language != "deno" {
			t.Errorf("language %q made a %q session", alias, created.Language)
		}
		ids[created.SessionID] = alias
	}
	var first string
	for id := range ids {
		first = id
		break
	}
	for i := 0; i < 3; i++ {
		c.mustSucceed(first, map[string]any{"type": "execute_code", "code": "console.log(1)"})
	}
	var list struct {
		Count    int `json:"count"`
		Sessions []map[string]json.RawMessage
	}
	raw := c.ok("session.list", map[string]any{}, &list)
	if list.Count != len(ids) {
		t.Fatalf("session.list: %s", raw)
	}
	for _, s := range list.Sessions {
		var id string
		json.Unmarshal(s["sessionId"], &id)
		if _, ok := ids[id]; !ok {
			t.Errorf("unknown session listed: %s", id)
			continue
		}
		want := []string{"containerId", "createdAt", "executionCount", "idleMinutes", "language", "lastActivity", "lifetimeMinutes", "sessionId", "state"}
		if got := slices.Sorted(maps.Keys(s)); !slices.Equal(got, want) {
			t.Errorf("session.list members %v, want %v", got, want)
		}
		assertJSON(t, s["containerId"], `""`)
		assertJSON(t, s["language"], `"deno"`)
		if id == first {
			assertJSON(t, s["executionCount"], "3")
			assertJSON(t, s["state"], `"Idle"`)
		} else {
			assertJSON(t, s["executionCount"], "0")
		}
	}
}

// File commands on a Deno session run on the host, on the workspace
// folder; a symlink made by user code does not lead them out.
func TestDenoFileCommands(t *testing.T) {
	ts := newTestServer(t, withDeno(t))
	c := ts.dial()
	sid := c.create(map[string]any{"language": "deno"})
	c.mustSucceed(sid, map[string]any{"type": "create_directory", "path": "src/lib"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/src/lib/a.ts", "content": "export const a = 1;\n"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "src/lib/a.ts", "content": "export const b = 2;\n", "mode": "Append"})
	c.mustSucceed(sid, map[string]any{"type": "copy_file", "sourcePath": "src/lib/a.ts", "destinationPath": "src/b.ts"})
	env := c.mustSucceed(sid, map[string]any{"type": "execute_code",
		"code": "import { a, b } from './src/b.ts';\nawait Deno.writeTextFile('out.txt', `${a + b}`);\nconsole.log(a + b);"})
	if got := codeResult(t, env); got != "3" {
		t.Errorf("result %q", got)
	}
	env = c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "out.txt"})
	assertJSON(t, env.Result, `{"content": "3", "bytes": 1}`)
	env = c.mustSucceed(sid, map[string]any{"type": "list_directory", "path": "/workspace"})
	var listing struct {
		Entries []struct{ Name, Type string }
	}
	json.Unmarshal(env.Result, &listing)
	var names []string
	for _, e := range listing.Entries {
		names = append(names, e.Name+":"+e.Type)
	}
	if !slices.Equal(names, []string{"out.txt:file", "src:directory"}) {
		t.Errorf("list_directory: %v (the code file and the Deno cache must not show)", names)
	}
	c.mustSucceed(sid, map[string]any{"type": "delete_file", "path": "src"})

	// Symlinks to host files, made by the program. Deno.symlink needs
	// unscoped read and write grants: a session with both, and still the
	// file commands stay in the workspace.
	sid = c.create(map[string]any{"language": "deno", "permissions": map[string]any{"allowRead": true, "allowWrite": true}})
	env = c.mustSucceed(sid, map[string]any{"type": "execute_code",
		"code": "await Deno.symlink('/etc/passwd', '/workspace/passwd');\nawait Deno.symlink('/etc', '/workspace/etc');\nconsole.log('linked');"})
	if got := codeResult(t, env); got != "linked" {
		t.Fatalf("result %q", got)
	}
	for _, p := range []string{"passwd", "/workspace/passwd", "etc/hostname"} {
		env := c.exec(sid, map[string]any{"type": "read_file", "path": p})
		if env.Success || env.Error == nil || !strings.Contains(*env.Error, "outside") {
			t.Errorf("read_file %s through a symlink: %+v %s", p, env, env.Result)
		}
	}
	for _, cmd := range []map[string]any{
		{"type": "write_file", "path": "etc/evil", "content": "x"},
		{"type": "copy_file", "sourcePath": "passwd", "destinationPath": "copy"},
		{"type": "list_directory", "path": "etc"},
	} {
		if env := c.exec(sid, cmd); env.Success {
			t.Errorf("%v through a symlink out of the workspace succeeded: %s", cmd, env.Result)
		}
	}
	// The symlink itself can be deleted.
	c.mustSucceed(sid, map[string]any{"type": "delete_file", "path": "passwd"})

	// execute_shell runs deno, and only deno.
	if sh := c.shell(sid, "deno", "--version"); sh.ExitCode != 0 || !strings.HasPrefix(sh.Stdout, "deno ") {
		t.Errorf("deno --version: %+v", sh)
	}
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "x.ts", "content": "console.log(Deno.args.join('+'))"})
	if sh := c.shell(sid, "deno", "run", "x.ts", "a", "b"); sh.ExitCode != 0 || sh.Stdout != "a+b\n" {
		t.Errorf("deno run x.ts a b: %+v", sh)
	}
	for _, args := range [][]string{{"sh", "-c", "id"}, {"deno", "run", "-A", "x.ts"}} {
		env := c.exec(sid, map[string]any{"type": "execute_shell", "commandName": args[0], "args": args[1:]})
		if env.Success || env.Error == nil {
			t.Errorf("%q: %+v", args, env)
		} else {
			t.Logf("%q: %s", args, *env.Error)
		}
	}
}

// session.close deletes the workspace and the Deno cache.
func TestDenoCloseDeletesWorkspace(t *testing.T) {
	ts := newTestServer(t, withDeno(t))
	c := ts.dial()
	sid := c.create(map[string]any{"language": "deno"})
	c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "await Deno.writeTextFile('f.txt', 'x'); console.log(1)"})
	view, ok := ts.svc.View().Get(sid)
	if !ok || view.Workspace == "" {
		t.Fatalf("no workspace for %s: %+v", sid, view)
	}
	if filepath.IsAbs(view.Workspace) {
		t.Errorf("the event log records the host path %s", view.Workspace)
	}
	view.Workspace = filepath.Join(ts.dataDir, view.Workspace)
	for _, dir := range []string{view.Workspace, view.Workspace + ".deno-cache"} {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
	}
	c.ok("session.close", map[string]any{"sessionId": sid}, nil)
	for _, dir := range []string{view.Workspace, view.Workspace + ".deno-cache"} {
		// Deleted in the background, promptly.
		eventually(t, dir+" deleted after session.close", func() bool {
			_, err := os.Stat(dir)
			return errors.Is(err, os.ErrNotExist)
		})
	}
	c.rpcErr("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "execute_code", "code": "1"}}, rpc.CodeSessionClosed)
}

// A timeout and the memory limit, through the service.
func TestDenoLimits(t *testing.T) {
	c := newTestServer(t, withDeno(t)).dial()
	sid := c.create(map[string]any{"language": "deno", "memoryLimitMB": 64})
	env := c.exec(sid, map[string]any{"type": "execute_code", "timeoutMs": 1500, "code": "console.log('spinning');\nwhile (true) {}"})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, "timed out") || codeResult(t, env) != "spinning" {
		t.Errorf("timeout: %+v %s", env, env.Result)
	}
	env = c.exec(sid, map[string]any{"type": "execute_shell", "commandName": "deno", "args": []string{"eval", "1"}})
	if env.Success {
		t.Errorf("deno eval (which ignores permission flags) ran: %s", env.Result)
	}
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "alloc.ts",
		"content": "const keep = [];\nfor (let i = 0; i < 256; i++) { const b = new Uint8Array(1 << 20); for (let j = 0; j < b.length; j += 4096) b[j] = 1; keep.push(b); }\nconsole.log('allocated');"})
	env = c.exec(sid, map[string]any{"type": "execute_shell", "commandName": "deno", "args": []string{"run", "alloc.ts"}})
	var sh shellResult
	json.Unmarshal(env.Result, &sh)
	if env.Success || !sh.OOMKilled || strings.Contains(sh.Stdout, "allocated") {
		t.Errorf("256 MiB under a 64 MiB limit: %+v %s", env, env.Result)
	}
	c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "console.log('still here')"})
}

func TestDenoHealth(t *testing.T) {
	ts := newTestServer(t, withDeno(t))
	resp, err := http.Get(ts.http.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var h struct {
		Runtimes map[string]sandbox.Health `json:"runtimes"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if d, ok := h.Runtimes[sandbox.KindDeno]; !ok || !d.Available {
		t.Errorf("/health: %s; want deno available", body)
	}
}

// A server whose Deno is missing answers session.create for deno with a
// runtime-unavailable error saying what to install.
func TestDenoMissing(t *testing.T) {
	missing := func(cfg *rpc.Config, _ *ws.Options) {
		cfg.Runtimes[sandbox.KindDeno] = deno.New(deno.Options{DenoPath: "/nonexistent/deno"})
	}
	c := newTestServer(t, missing).dial()
	e := c.rpcErr("session.create", map[string]any{"language": "deno"}, rpc.CodeRuntimeUnavailable)
	if !strings.Contains(string(e.Data), "scripts/install-deno.sh") || !strings.Contains(string(e.Data), "deno") {
		t.Errorf("error %s does not say what is missing and how to install it", e)
	}
}

// startDenoRun is one run of a service with the Deno runtime on dataDir,
// as a restarted server would be.
func startDenoRun(t testing.TB, dataDir string, opts deno.Options) *run {
	t.Helper()
	rt := deno.New(opts)
	if h := rt.Health(context.Background()); !h.Available && opts.DenoPath == "" {
		t.Fatalf("%s (these tests need the real Deno and bubblewrap)", h.Error)
	}
	return startRuntimes(t, dataDir, map[string]sandbox.Runtime{sandbox.KindDeno: rt})
}

// denoLeftovers lists what a Deno session holds on the host that still
// exists: workspace, Deno cache, cgroups.
func denoLeftovers(workspace, sessionID string) []string {
	var left []string
	paths := []string{workspace, workspace + ".deno-cache"}
	for _, ctl := range []string{"memory", "pids", "cpu"} {
		paths = append(paths, filepath.Join("/sys/fs/cgroup", ctl, "codebeaker", sessionID))
	}
	paths = append(paths, filepath.Join("/sys/fs/cgroup", "codebeaker", sessionID)) // cgroup v2
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	return left
}

// A Deno session outlives a restart of the server: the next run makes its
// sandbox again from the session's spec, on the same workspace, with the
// same limits.
func TestDenoRestart(t *testing.T) {
	dataDir := t.TempDir()
	first := startDenoRun(t, dataDir, deno.Options{})
	c := first.dial()
	sid := c.create(map[string]any{"language": "deno", "memoryLimitMB": 64, "permissions": map[string]any{"allowEnv": []string{"CB"}}})
	c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "Deno.writeTextFileSync('notes.txt', 'kept'); console.log('ok')"})
	view, _ := first.svc.View().Get(sid)
	first.stop()

	second := startDenoRun(t, dataDir, deno.Options{})
	defer second.stop()
	c = second.dial()
	env := c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "console.log(Deno.readTextFileSync('notes.txt'), Deno.env.get('CB'))", "env": map[string]string{"CB": "granted"}})
	if got := codeResult(t, env); got != "kept granted" {
		t.Errorf("after the restart: %q", got)
	}
	env = c.exec(sid, map[string]any{"type": "execute_code", "code": "Deno.env.get('HOME')"})
	if env.Success {
		t.Error("after the restart, env access beyond the grant worked")
	}
	env = c.exec(sid, map[string]any{"type": "execute_code",
		"code": "const keep = [];\nfor (let i = 0; i < 256; i++) { const b = new Uint8Array(1 << 20); for (let j = 0; j < b.length; j += 4096) b[j] = 1; keep.push(b); }\nconsole.log('allocated');"})
	if env.Success || env.Error == nil || !strings.Contains(*env.Error, "memory") {
		t.Errorf("after the restart, 256 MiB under a 64 MiB limit: %+v %s", env, env.Result)
	}
	c.ok("session.close", map[string]any{"sessionId": sid}, nil)
	if left := denoLeftovers(view.Workspace, sid); len(left) > 0 {
		t.Errorf("left after session.close: %v", left)
	}
}

// A session closed by a run that never took its sandbox back leaves
// nothing behind either. Here the second run cannot make Deno sandboxes
// (its deno is missing), so the sandbox is never taken back.
func TestDenoCloseAfterRestart(t *testing.T) {
	dataDir := t.TempDir()
	first := startDenoRun(t, dataDir, deno.Options{})
	c := first.dial()
	sid := c.create(map[string]any{"language": "deno"})
	c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "console.log(1)"})
	view, _ := first.svc.View().Get(sid)
	first.stop()

	t.Cleanup(func() { // whatever the outcome, leave no cgroup behind
		deno.New(deno.Options{}).Discard(context.Background(), sandbox.Spec{SessionID: sid, Workspace: view.Workspace})
	})
	second := startDenoRun(t, dataDir, deno.Options{DenoPath: "/nonexistent/deno"})
	defer second.stop()
	second.dial().ok("session.close", map[string]any{"sessionId": sid}, nil)
	if left := denoLeftovers(view.Workspace, sid); len(left) > 0 {
		t.Errorf("left after session.close: %v", left)
	}
}

// Benchmarks, run together so that their numbers come from one run:
//
//	go test -run '^$' -bench Deno -benchtime 30x ./rpc
//
// BenchmarkDenoBare is the floor for BenchmarkDenoExecuteCode: the deno
// binary started directly, with no jail, server, event log or WebSocket.

func BenchmarkDenoCreate(b *testing.B) {
	c := newTestServer(b, withDeno(b)).dial()
	for b.Loop() {
		sid := c.create(map[string]any{"language": "deno"})
		b.StopTimer()
		c.ok("session.close", map[string]any{"sessionId": sid}, nil)
		b.StartTimer()
	}
}

func BenchmarkDenoExecuteCode(b *testing.B) {
	c := newTestServer(b, withDeno(b)).dial()
	sid := c.create(map[string]any{"language": "deno"})
	for b.Loop() {
		if got := codeResult(b, c.mustSucceed(sid, map[string]any{"type": "execute_code", "code": "console.log(1)"})); got != "1" {
			b.Fatalf("result %q", got)
		}
	}
}

func BenchmarkDenoBare(b *testing.B) {
	bin, err := exec.LookPath("deno")
	if err != nil {
		bin = deno.DefaultDenoPath
	}
	dir := b.TempDir()
	file := filepath.Join(dir, "one.ts")
	if err := os.WriteFile(file, []byte("console.log(1)"), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, bench := range []struct {
		name string
		args []string
	}{
		{"eval", []string{"eval", "console.log(1)"}},
		{"run", []string{"run", file}},
	} {
		b.Run(bench.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(bin, bench.args...)
				cmd.Env = []string{"HOME=" + dir, "DENO_DIR=" + filepath.Join(dir, "cache"), "NO_COLOR=1"}
				out, err := cmd.Output()
				if err != nil || string(out) != "1\n" {
					b.Fatalf("%s: %q, %v", bin, out, err)
				}
			}
		})
	}
}
