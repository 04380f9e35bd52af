package deno

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// The tests run the real Deno in real bubblewrap jails, with real cgroups.

// needTools fails the test when Deno or bubblewrap is missing.
func needTools(t testing.TB, r *Runtime) {
	t.Helper()
	if _, err := r.findTools(); err != nil {
		t.Fatalf("%v (these tests need the real Deno and bubblewrap: run scripts/install-deno.sh)", err)
	}
}

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	r := New(opts)
	needTools(t, r)
	if !opts.NoCgroup && r.cg == nil {
		t.Fatalf("no cgroup for the tests: %v", r.cgroupErr)
	}
	return r
}

func sessionID(t testing.TB) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}

// testSpec is a session as the service makes it, with the service's
// default limits.
func testSpec(t testing.TB) sandbox.Spec {
	lang, err := sandbox.LookupLanguage("deno")
	if err != nil {
		t.Fatal(err)
	}
	return sandbox.Spec{SessionID: sessionID(t), Language: lang, MemoryLimitMB: 512, CPUShares: 1024, PidsLimit: 256}
}

// newSandbox makes a sandbox and its workspace (owned by the sandbox user,
// as the service makes it), removed when the test ends.
func newSandbox(t testing.TB, r *Runtime, tweak func(*sandbox.Spec)) (*Sandbox, *sandbox.Workspace) {
	t.Helper()
	ws, err := sandbox.OpenWorkspace(filepath.Join(t.TempDir(), "workspace"), sandbox.UID, sandbox.GID)
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec(t)
	spec.Workspace = ws.Dir()
	if tweak != nil {
		tweak(&spec)
	}
	sb, err := r.Create(context.Background(), spec)
	if err != nil {
		ws.Remove()
		t.Fatalf("Create: %v", err)
	}
	s := sb.(*Sandbox)
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertGone(t, s)
		ws.Remove()
	})
	return s, ws
}

// assertGone fails unless a closed sandbox left neither cgroup nor cache.
func assertGone(t testing.TB, s *Sandbox) {
	t.Helper()
	if _, err := os.Stat(s.cache); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the Deno cache %s is still there after Close (%v)", s.cache, err)
	}
	if s.cg != nil {
		for _, d := range s.cg.dirs {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the cgroup %s is still there after Close (%v)", d, err)
			}
		}
	}
}

// run stores code as execute_code does and runs it with deno run.
func run(t testing.TB, s *Sandbox, ws *sandbox.Workspace, code string, tweak func(*sandbox.Process)) (sandbox.Result, error) {
	t.Helper()
	file, cleanup := s.spec.Language.CodeFile(sessionID(t))
	if _, err := ws.WriteFile(file, []byte(code), false); err != nil {
		t.Fatal(err)
	}
	defer ws.Delete(cleanup)
	p := sandbox.Process{Args: s.spec.Language.CodeCommand(file), Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20}
	if tweak != nil {
		tweak(&p)
	}
	return s.Exec(context.Background(), p)
}

// mustRun runs code and fails the test unless it exits 0.
func mustRun(t testing.TB, s *Sandbox, ws *sandbox.Workspace, code string) string {
	t.Helper()
	res, err := run(t, s, ws, code, nil)
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	return string(res.Stdout)
}

// mustFail runs code and fails the test unless it fails with want in its
// stderr.
func mustFail(t testing.TB, s *Sandbox, ws *sandbox.Workspace, code, want string) {
	t.Helper()
	res, err := run(t, s, ws, code, nil)
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if res.ExitCode == 0 || !strings.Contains(string(res.Stderr), want) {
		t.Fatalf("want a failure with %q; got exit %d, stdout %q, stderr %q", want, res.ExitCode, res.Stdout, res.Stderr)
	}
}

func TestDenoTypeScript(t *testing.T) {
	r := newRuntime(t, Options{})
	s, ws := newSandbox(t, r, nil)
	if s.ID() != "" {
		t.Errorf("ID() = %q; want empty: a Deno session has no container", s.ID())
	}
	got := mustRun(t, s, ws, `
interface Greeting { text: string }
const g: Greeting = { text: "Hello from Deno!" };
const sum = (a: number, b: number): number => a + b;
console.log(g.text);
console.log("Sum:", sum(10, 20));`)
	if got != "Hello from Deno!\nSum: 30\n" {
		t.Errorf("stdout = %q", got)
	}
	// A relative import of a workspace file, as in the guide.
	if _, err := ws.WriteFile("calculator.ts", []byte("export const add = (a: number, b: number) => a + b;\nconsole.log('Result:', add(15, 25));\n"), false); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, s, ws, "import('./calculator.ts');"); got != "Result: 40\n" {
		t.Errorf("import of calculator.ts printed %q", got)
	}
}

func TestDenoPermissions(t *testing.T) {
	r := newRuntime(t, Options{})
	t.Setenv("CB_HOST_SECRET", "from the host")
	cases := []struct {
		name  string
		perms sandbox.Permissions
		env   []string
		ok    map[string]string // code -> stdout it must print
		fail  map[string]string // code -> text its error must hold
	}{
		{
			name: "default: the workspace only",
			ok: map[string]string{
				`Deno.writeTextFileSync("/workspace/a.txt", "A"); console.log(Deno.readTextFileSync("a.txt"))`: "A\n",
			},
			fail: map[string]string{
				`Deno.readDirSync("/usr/lib")`:                     `Requires read access to "/usr/lib"`,
				`Deno.writeTextFileSync("/tmp/x", "x")`:            `Requires write access to "/tmp/x"`,
				`Deno.env.get("HOME")`:                             `Requires env access to "HOME"`,
				`await fetch("https://api.github.com")`:            `Requires net access to "api.github.com`,
				`Deno.listen({ port: 8080, hostname: "0.0.0.0" })`: `Requires net access to "0.0.0.0:8080"`,
			},
		},
		{
			name:  "read granted to a path, write not",
			perms: sandbox.Permissions{Read: []string{"/tmp", "/usr/lib"}},
			ok: map[string]string{
				`console.log(Deno.readDirSync("/usr/lib") !== null)`: "true\n",
				`console.log([...Deno.readDirSync("/tmp")].length)`:  "0\n",
			},
			fail: map[string]string{
				`Deno.writeTextFileSync("/tmp/x", "x")`:     `Requires write access to "/tmp/x"`,
				`Deno.readDirSync("/deno-dir")`:             `Requires read access to "/deno-dir"`,
				`Deno.writeTextFileSync("/usr/lib/x", "x")`: `Requires write access to "/usr/lib/x"`,
			},
		},
		{
			name:  "write granted to a path",
			perms: sandbox.Permissions{Read: []string{"/tmp"}, Write: []string{"/tmp"}},
			ok: map[string]string{
				`Deno.writeTextFileSync("/tmp/x", "in tmp"); console.log(Deno.readTextFileSync("/tmp/x"))`: "in tmp\n",
				`Deno.writeTextFileSync("w.txt", "ws"); console.log(Deno.readTextFileSync("w.txt"))`:       "ws\n",
			},
		},
		{
			name:  "env granted by name",
			perms: sandbox.Permissions{Env: []string{"CB_VAR", "CB_HOST_SECRET"}},
			env:   []string{"CB_VAR=from the command"},
			ok: map[string]string{
				`console.log(Deno.env.get("CB_VAR"))`: "from the command\n",
				// Allowed by name, yet the host's variable is not in the jail.
				`console.log(Deno.env.get("CB_HOST_SECRET") ?? "unset")`: "unset\n",
			},
			fail: map[string]string{
				`Deno.env.get("HOME")`: `Requires env access to "HOME"`,
			},
		},
		{
			name:  "env granted in full: the jail's variables",
			perms: sandbox.Permissions{Env: []string{}},
			env:   []string{"CB_VAR=x"},
			ok: map[string]string{
				`const e = Deno.env.toObject(); console.log(e.CB_VAR, e.HOME, e.DENO_DIR, e.CB_HOST_SECRET ?? "unset")`: "x /tmp /deno-dir unset\n",
			},
		},
		{
			name:  "read granted in full: the host is not in the jail",
			perms: sandbox.Permissions{Read: []string{}},
			ok: map[string]string{
				`console.log([...Deno.readDirSync("/")].map((e) => e.name).sort().join(","))`:        "deno-dir,dev,lib,lib64,proc,tmp,usr,workspace\n",
				`console.log([...Deno.readDirSync("/usr/bin")].map((e) => e.name).sort().join(","))`: "deno,setpriv\n",
			},
			fail: map[string]string{
				`Deno.readTextFileSync("/etc/passwd")`:   "NotFound",
				`Deno.readTextFileSync("/etc/hostname")`: "NotFound",
				`Deno.readDirSync("/home")`:              "NotFound",
				`Deno.readDirSync("/root")`:              "NotFound",
				// /proc needs --allow-all in Deno, which no session gets.
				`Deno.readTextFileSync("/proc/1/environ")`: `Requires all access to "/proc/1/environ"`,
			},
		},
		{
			name:  "net granted to one host",
			perms: sandbox.Permissions{Net: []string{"localhost:1"}},
			fail: map[string]string{
				// Deno checks before it connects: no traffic leaves.
				`await fetch("https://api.github.com")`: `Requires net access to "api.github.com`,
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ws := newSandbox(t, r, func(spec *sandbox.Spec) { spec.Permissions = &c.perms })
			for code, want := range c.ok {
				res, err := run(t, s, ws, code, func(p *sandbox.Process) { p.Env = c.env })
				if err != nil || res.ExitCode != 0 || string(res.Stdout) != want {
					t.Errorf("%s\n  want stdout %q; got exit %d, stdout %q, stderr %q, err %v", code, want, res.ExitCode, res.Stdout, res.Stderr, err)
				}
			}
			for code, want := range c.fail {
				res, err := run(t, s, ws, code, func(p *sandbox.Process) { p.Env = c.env })
				if err != nil || res.ExitCode == 0 || !strings.Contains(string(res.Stderr), want) {
					t.Errorf("%s\n  want a failure with %q; got exit %d, stdout %q, stderr %q, err %v", code, want, res.ExitCode, res.Stdout, res.Stderr, err)
				}
			}
		})
	}
}

// TestDenoHostEnvironment checks that no variable of the server's environment
// reaches code, even with env access granted in full.
func TestDenoHostEnvironment(t *testing.T) {
	r := newRuntime(t, Options{})
	t.Setenv("CB_HOST_SECRET", "from the host")
	s, ws := newSandbox(t, r, func(spec *sandbox.Spec) { spec.Permissions = &sandbox.Permissions{Env: []string{}} })
	out := mustRun(t, s, ws, `for (const [k, v] of Object.entries(Deno.env.toObject())) console.log(k + "=" + v)`)
	// The jail sets these itself (Deno puts its node shims in front of
	// PATH); any other variable the host has must be missing.
	jail := map[string]string{"HOME": "/tmp", "PATH": "/deno-dir/node_compat_bin:/usr/bin", "NO_COLOR": "1", "DENO_DIR": "/deno-dir", "PWD": "/workspace"}
	for _, kv := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(kv, "=")
		switch want, ok := jail[k]; {
		case ok && v != want:
			t.Errorf("%s=%q in the jail; want %q", k, v, want)
		case ok:
		case os.Getenv(k) != "" || strings.HasPrefix(k, "CB_"):
			t.Errorf("the host's variable %s reached the code", kv)
		default:
			t.Logf("Deno's own variable: %s", kv)
		}
	}
}

// TestDenoNetworkNamespace looks at the jail's network interfaces, which needs
// --allow-sys: a test-only runtime passes -A instead of the session's flags
// (the jail is the same). No connection is made.
func TestDenoNetworkNamespace(t *testing.T) {
	r := newRuntime(t, Options{})
	r.allowAllForTests = true
	const code = `console.log([...new Set(Deno.networkInterfaces().map((i) => i.name))].sort().join(","))`

	s, ws := newSandbox(t, r, nil)
	if got := mustRun(t, s, ws, code); got != "lo\n" {
		t.Errorf("without network access, the jail's interfaces are %q; want lo only", got)
	}

	// With network access granted, the jail shares the host's network: it
	// sees a host interface other than lo. (Interfaces may come and go on
	// a busy host, so no exact list is compared.)
	s, ws = newSandbox(t, r, func(spec *sandbox.Spec) { spec.Permissions = &sandbox.Permissions{Net: []string{"example.com"}} })
	got := strings.Split(strings.TrimSpace(mustRun(t, s, ws, code)), ",")
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var host []string
	for _, i := range ifaces {
		if i.Name != "lo" {
			host = append(host, i.Name)
		}
	}
	if !slices.ContainsFunc(got, func(name string) bool { return slices.Contains(host, name) }) {
		t.Errorf("with network access, the jail's interfaces are %q; the host's (but lo) are %q", got, host)
	}
}

// loopbackServer stands for the services on the server's loopback (the
// CodeBeaker API, the Docker socket proxies): it counts requests and
// answers each, proxy requests too, with a secret, as a module, so that a
// tool loading it would print it.
type loopbackServer struct {
	port string
	hits atomic.Int64
}

const loopbackSecret = "LOOPBACK-SECRET"

func startLoopback(t *testing.T) *loopbackServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &loopbackServer{}
	_, srv.port, _ = net.SplitHostPort(l.Addr().String())
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.hits.Add(1)
		w.Header().Set("Content-Type", "application/javascript")
		io.WriteString(w, "export const secret = \""+loopbackSecret+"\";\n")
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	// The server answers the host.
	resp, err := http.Get("http://127.0.0.1:" + srv.port + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), loopbackSecret) || srv.hits.Swap(0) != 1 {
		t.Fatalf("the loopback server answered %q", body)
	}
	return srv
}

// loopbackNames are the names other than localhost that /etc/hosts (bound
// into jails with network access) gives a loopback address.
func loopbackNames(t *testing.T) []string {
	data, _ := os.ReadFile("/etc/hosts")
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 1 && (strings.HasPrefix(fields[0], "127.") || fields[0] == "::1") {
			for _, n := range fields[1:] {
				if strings.HasPrefix(n, "#") {
					break
				}
				if n != "localhost" {
					names = append(names, n)
				}
			}
		}
	}
	if len(names) == 0 {
		t.Logf("no name but localhost has a loopback address in /etc/hosts: names resolved to loopback are not tried")
	}
	return names
}

// TestDenoNetworkGuard checks that a session granted network access cannot
// reach the host's own services: not by address, name or proxy, nor
// through the tools that fetch remote modules. Only a loopback server the
// test starts is ever contacted; the one other host named, example.invalid,
// never resolves.
func TestDenoNetworkGuard(t *testing.T) {
	r := newRuntime(t, Options{})
	srv := startLoopback(t)
	port := srv.port
	loop := "127.0.0.1:" + port
	denied := func(target string) string { return `Requires net access to "` + target }

	// Direct connections, with every host granted.
	direct := map[string]string{
		`await fetch("http://` + loop + `/")`:                               denied(loop),
		`await fetch("http://localhost:` + port + `/")`:                     denied("localhost:" + port),
		`await fetch("http://[::1]:` + port + `/")`:                         denied("[::1]:" + port),
		`await fetch("http://[::ffff:127.0.0.1]:` + port + `/")`:            denied(loop),
		`await fetch("http://2130706433:` + port + `/")`:                    denied(loop),
		`await fetch("http://0.0.0.0:` + port + `/")`:                       denied("0.0.0.0:" + port),
		`await fetch("http://[::]:` + port + `/")`:                          denied("[::]:" + port),
		`await Deno.connect({ hostname: "127.0.0.2", port: ` + port + ` })`: denied("127.0.0.2:" + port),
		`await Deno.connect({ hostname: "localhost", port: ` + port + ` })`: denied("localhost:" + port),
		`const { get } = await import("node:http"); await new Promise((ok, fail) => get("http://` + loop + `/", (r) => { r.destroy(); ok(r) }).on("error", fail))`: denied(loop),
		`await new Promise((ok, fail) => { const ws = new WebSocket("ws://` + loop + `/"); ws.onopen = ok; ws.onerror = (e) => fail(e.error ?? e.message) })`:      denied(loop),
	}
	for _, name := range loopbackNames(t) {
		// Deno checks the address a name resolves to.
		direct[`await Deno.connect({ hostname: "`+name+`", port: `+port+` })`] = denied("127.")
		direct[`await fetch("http://`+name+`:`+port+`/")`] = denied("127.")
	}
	// The host's own addresses reach its services bound to every address.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				direct[`await Deno.connect({ hostname: "`+ipn.IP.String()+`", port: `+port+` })`] = denied(ipn.IP.String() + ":" + port)
				break
			}
		}
	}
	// Proxies, with every host or one other host granted.
	proxied := map[string]string{
		`Deno.env.set("HTTP_PROXY", "http://` + loop + `"); await fetch("http://example.invalid/")`:                            `Requires env access to "HTTP_PROXY"`,
		`Deno.env.set("http_proxy", "http://` + loop + `"); await fetch("http://example.invalid/")`:                            `Requires env access to "http_proxy"`,
		`await fetch("http://example.invalid/", { client: Deno.createHttpClient({ proxy: { url: "http://` + loop + `" } }) })`: denied(loop),
	}
	// Tools that load modules, and module loading itself.
	tools := [][]string{
		{"deno", "check", "http://" + loop + "/secret.ts"},
		{"deno", "info", "http://" + loop + "/secret.ts"},
		{"deno", "doc", "http://" + loop + "/secret.ts"},
		{"deno", "run", "http://" + loop + "/main.js"},
		{"deno", "test", "http://" + loop + "/main_test.js"},
		{"deno", "run", "--import-map=http://" + loop + "/map.json", "plain.ts"},
		{"deno", "run", "static.ts"},
		{"deno", "run", "http://localhost:" + port + "/main.js"},
	}
	for _, perms := range []sandbox.Permissions{
		{Net: []string{}, Env: []string{}},
		{Net: []string{"example.invalid"}, Env: []string{}},
	} {
		t.Run("net "+strings.Join(perms.Net, ","), func(t *testing.T) {
			s, ws := newSandbox(t, r, func(spec *sandbox.Spec) { spec.Permissions = &perms })
			codes := proxied
			if len(perms.Net) == 0 {
				codes = map[string]string{}
				maps.Copy(codes, direct)
				maps.Copy(codes, proxied)
			}
			for code, want := range codes {
				res, err := run(t, s, ws, code, nil)
				if err != nil || res.ExitCode == 0 || !strings.Contains(string(res.Stderr), want) {
					t.Errorf("%s\n  want a failure with %q; got exit %d, stdout %q, stderr %.300q, err %v", code, want, res.ExitCode, res.Stdout, res.Stderr, err)
				}
			}
			files := map[string]string{
				"plain.ts":  "console.log(\"plain\");\n",
				"static.ts": `import { secret } from "http://` + loop + `/static.js"; console.log(secret);`,
			}
			for name, text := range files {
				if _, err := ws.WriteFile(name, []byte(text), false); err != nil {
					t.Fatal(err)
				}
			}
			for _, args := range tools {
				res, err := s.Exec(context.Background(), sandbox.Process{Args: args, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20})
				out := string(res.Stdout) + string(res.Stderr)
				if (err == nil && res.ExitCode == 0) || strings.Contains(out, loopbackSecret) {
					t.Errorf("%q: want a failure; got exit %d, stdout %q, stderr %.300q, err %v", args, res.ExitCode, res.Stdout, res.Stderr, err)
				}
			}
			// Tools still work on the workspace, without network.
			for _, args := range [][]string{{"deno", "check", "plain.ts"}, {"deno", "info", "plain.ts"}, {"deno", "fmt", "--check", "plain.ts"}} {
				res, err := s.Exec(context.Background(), sandbox.Process{Args: args, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20})
				if err != nil || res.ExitCode != 0 {
					t.Errorf("%q: exit %d, stdout %q, stderr %.300q, err %v", args, res.ExitCode, res.Stdout, res.Stderr, err)
				}
			}
			if n := srv.hits.Swap(0); n != 0 {
				t.Errorf("the loopback server was reached %d times", n)
			}
		})
	}
}

// TestDenoUser checks who the program is: sandbox.UID, no capabilities,
// no_new_privs (read from /proc, which needs -A: the test-only runtime).
func TestDenoUser(t *testing.T) {
	r := newRuntime(t, Options{})
	r.allowAllForTests = true
	s, ws := newSandbox(t, r, nil)
	got := mustRun(t, s, ws, `
const status = Deno.readTextFileSync("/proc/self/status");
for (const key of ["Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]) {
  const line = status.split("\n").find((l) => l.startsWith(key + ":")) ?? key + ": missing";
  console.log(line.split(/\s+/).join(" ").trim());
}
Deno.writeTextFileSync("made-by-code.txt", "x");`)
	ids := func(id int) string { return strings.Repeat(" "+strconv.Itoa(id), 4) }
	want := "Uid:" + ids(sandbox.UID) + "\nGid:" + ids(sandbox.GID) + "\nGroups:\nCapInh: 0000000000000000\nCapPrm: 0000000000000000\n" +
		"CapEff: 0000000000000000\nCapBnd: 0000000000000000\nCapAmb: 0000000000000000\nNoNewPrivs: 1\n"
	if got != want {
		t.Errorf("the program's credentials:\n%s\nwant:\n%s", got, want)
	}
	// The server reads and changes what the program made.
	if _, err := ws.WriteFile("made-by-code.txt", []byte("changed by the server"), false); err != nil {
		t.Errorf("the server cannot change a file the program made: %v", err)
	}
}

func TestDenoClientFlags(t *testing.T) {
	r := newRuntime(t, Options{})
	s, ws := newSandbox(t, r, func(spec *sandbox.Spec) { spec.Permissions = &sandbox.Permissions{Net: []string{"example.com"}} })
	if _, err := ws.WriteFile("p.ts", []byte(`console.log(Deno.args.join(" "))`), false); err != nil {
		t.Fatal(err)
	}
	exec := func(args ...string) (sandbox.Result, error) {
		return s.Exec(context.Background(), sandbox.Process{Args: args, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20})
	}
	const beyond = "permissions are set at session.create"
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"deno", "run", "-A", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-all", "p.ts"}, beyond},
		{[]string{"deno", "-A", "p.ts"}, beyond},
		{[]string{"deno", "run", "-qA", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-read", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-read=/etc", "p.ts"}, beyond},
		{[]string{"deno", "run", "-R", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-write=/workspace,/tmp", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-net", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-net=api.github.com", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-env", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-run", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-sys", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-ffi", "p.ts"}, beyond},
		{[]string{"deno", "run", "--allow-import", "p.ts"}, beyond},
		{[]string{"deno", "run", "-P", "p.ts"}, beyond},
		{[]string{"deno", "test", "--permission-set=all", "p.ts"}, beyond},
		{[]string{"deno", "run", "p.ts", "--allow-all"}, beyond}, // a script argument, refused all the same
		{[]string{"deno", "run", "--inspect=0.0.0.0:9229", "p.ts"}, "not available"},
		{[]string{"deno", "run", "--inspect-brk", "p.ts"}, "not available"},
		{[]string{"deno", "run", "--v8-flags=--allow-natives-syntax", "p.ts"}, "not available"},
		{[]string{"deno", "eval", "console.log(1)"}, "every permission"},
		{[]string{"deno", "task", "build"}, "outside Deno's permission checks"},
		{[]string{"deno", "compile", "p.ts"}, "not available"},
		{[]string{"deno", "upgrade"}, "not available"},
		{[]string{"sh", "-c", "echo hi"}, "only deno runs in a deno session"},
		{[]string{"/usr/bin/env"}, "only deno runs in a deno session"},
		{[]string{"node", "p.ts"}, "only deno runs in a deno session"},
	} {
		res, err := exec(c.args...)
		if !errors.Is(err, sandbox.ErrCannotStart) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: want an error wrapping ErrCannotStart saying %q; got %v (exit %d, stdout %q)", c.args, c.says, err, res.ExitCode, res.Stdout)
		}
	}
	for _, env := range []string{"LD_PRELOAD=/workspace/x.so", "LD_LIBRARY_PATH=/workspace", "GLIBC_TUNABLES=x", "DENO_V8_FLAGS=--allow-natives-syntax",
		"DENO_DIR=/workspace", "DENO_CERT=/workspace/ca.pem", "HTTP_PROXY=http://127.0.0.1:1", "https_proxy=http://127.0.0.1:1", "NPM_CONFIG_REGISTRY=http://127.0.0.1:1/", "A=x\x00y"} {
		_, err := s.Exec(context.Background(), sandbox.Process{Args: []string{"deno", "run", "p.ts"}, Env: []string{env}, Dir: sandbox.WorkspaceDir, Timeout: time.Minute})
		if !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("env %q: err %v; want ErrCannotStart", env, err)
		}
	}
	// A NUL byte cannot be passed to a program: a client error, not a
	// server error from exec.
	for _, p := range []sandbox.Process{
		{Args: []string{"deno", "run", "p.ts", "a\x00b"}},
		{Args: []string{"deno", "run", "p.ts"}, Dir: sandbox.WorkspaceDir + "/a\x00b"},
	} {
		if _, err := s.Exec(context.Background(), p); !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("%q in %q: err %v; want ErrCannotStart", p.Args, p.Dir, err)
		}
	}
	// An env file would set what the env check refuses.
	if _, err := ws.WriteFile(".env", []byte("HTTP_PROXY=http://127.0.0.1:1\nDENO_V8_FLAGS=--allow-natives-syntax\n"), false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--env-file", "--env-file=.env", "--env", "--env=/workspace/.env"} {
		if _, err := exec("deno", "run", f, "p.ts"); !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("deno run %s: err %v; want ErrCannotStart", f, err)
		}
	}
	// Within the grants, and the plain forms.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"deno", "run", "--allow-read=/workspace/sub", "p.ts", "a"}, "a\n"},
		{[]string{"deno", "run", "--allow-net=example.com:443", "p.ts", "b"}, "b\n"},
		{[]string{"deno", "run", "-N=example.com", "p.ts", "c"}, "c\n"},
		{[]string{"deno", "p.ts", "d"}, "d\n"},
		{[]string{"deno", "run", "--quiet", "p.ts", "e"}, "e\n"},
		{[]string{"deno", "run", "p.ts", "-1", "plain"}, "-1 plain\n"},
		{[]string{"/usr/bin/deno", "run", "p.ts", "f"}, "f\n"},
		{[]string{"deno", "run", "--deny-read=/workspace/secret", "p.ts", "g"}, "g\n"},
	} {
		res, err := exec(c.args...)
		if err != nil || res.ExitCode != 0 || string(res.Stdout) != c.want {
			t.Errorf("%q: want %q; got exit %d, stdout %q, stderr %q, err %v", c.args, c.want, res.ExitCode, res.Stdout, res.Stderr, err)
		}
	}
	res, err := exec("deno", "--version")
	if err != nil || res.ExitCode != 0 || !strings.HasPrefix(string(res.Stdout), "deno ") {
		t.Errorf("deno --version: exit %d, stdout %q, stderr %q, err %v", res.ExitCode, res.Stdout, res.Stderr, err)
	}
	// A client flag asking for less replaces the session's: here write is
	// narrowed to a folder, so the top of the workspace is not writable.
	if _, err := ws.WriteFile("w.ts", []byte(`Deno.writeTextFileSync("/workspace/top.txt", "x")`), false); err != nil {
		t.Fatal(err)
	}
	res, err = exec("deno", "run", "--allow-write=/workspace/sub", "w.ts")
	if err != nil || res.ExitCode == 0 || !strings.Contains(string(res.Stderr), `Requires write access to "/workspace/top.txt"`) {
		t.Errorf("narrowed write: exit %d, stderr %q, err %v", res.ExitCode, res.Stderr, err)
	}
}

// ticker is a program that, like a program starting background work,
// keeps a Worker appending to ticks.txt every 50 ms while the main thread
// spins, after printing "started".
const ticker = `
const src = 'setInterval(() => Deno.writeTextFileSync("/workspace/ticks.txt", "tick\\n", { append: true }), 50);';
new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
while (true) {
  try { if (Deno.statSync("/workspace/ticks.txt").size > 0) break; } catch { /* not yet */ }
  await new Promise((r) => setTimeout(r, 10));
}
console.log("started");
while (true) { /* spin */ }
`

func TestDenoTimeoutKills(t *testing.T) {
	for _, opts := range []Options{{}, {NoCgroup: true}} {
		name := "cgroup"
		if opts.NoCgroup {
			name = "no cgroup"
		}
		t.Run(name, func(t *testing.T) {
			r := newRuntime(t, opts)
			s, ws := newSandbox(t, r, nil)
			started := time.Now()
			res, err := run(t, s, ws, ticker, func(p *sandbox.Process) { p.Timeout = 2 * time.Second })
			if err != nil {
				t.Fatal(err)
			}
			if !res.TimedOut || res.ExitCode != 137 || res.OOMKilled {
				t.Fatalf("timedOut %v, exit %d, oomKilled %v, stderr %q", res.TimedOut, res.ExitCode, res.OOMKilled, res.Stderr)
			}
			if string(res.Stdout) != "started\n" {
				t.Errorf("stdout %q; want what was printed before the kill", res.Stdout)
			}
			if took := time.Since(started); took > 10*time.Second {
				t.Errorf("the timed-out command took %v to end", took)
			}
			assertStopped(t, ws, "ticks.txt")
			if s.cg != nil {
				if procs := s.cg.procs(); len(procs) > 0 {
					t.Errorf("processes left in the cgroup after the timeout: %v", procs)
				}
			}
			if got := mustRun(t, s, ws, `console.log("next")`); got != "next\n" {
				t.Errorf("after a timeout, a command printed %q", got)
			}
		})
	}
}

func TestDenoCancelKills(t *testing.T) {
	r := newRuntime(t, Options{})
	s, ws := newSandbox(t, r, nil)
	if _, err := ws.WriteFile("ticker.ts", []byte(ticker), false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for size(ws, "ticks.txt") <= 0 {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	res, err := s.Exec(ctx, sandbox.Process{Args: []string{"deno", "run", "ticker.ts"}, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20})
	if !errors.Is(err, context.Canceled) || res.TimedOut {
		t.Fatalf("err %v, timedOut %v; want context.Canceled", err, res.TimedOut)
	}
	assertStopped(t, ws, "ticks.txt")
}

func size(ws *sandbox.Workspace, rel string) int64 {
	info, err := os.Stat(filepath.Join(ws.Dir(), rel))
	if err != nil {
		return -1
	}
	return info.Size()
}

// assertStopped fails unless rel stopped growing: its writer is dead.
func assertStopped(t testing.TB, ws *sandbox.Workspace, rel string) {
	t.Helper()
	before := size(ws, rel)
	if before <= 0 {
		t.Fatalf("%s is empty: the writer never ran", rel)
	}
	time.Sleep(500 * time.Millisecond)
	if after := size(ws, rel); after != before {
		t.Errorf("%s still grows (%d, then %d bytes): the writer survived the kill", rel, before, after)
	}
}

func TestDenoMemoryLimit(t *testing.T) {
	const typedArrays = `
const bufs = [];
for (let i = 0; i < 256; i++) { const b = new Uint8Array(1 << 20); for (let j = 0; j < b.length; j += 4096) b[j] = 1; bufs.push(b); }
console.log("allocated");`
	const objects = `
const a = [];
for (let i = 0; i < 5e7; i++) a.push({ i, s: "x" + i });
console.log("allocated");`
	t.Run("cgroup", func(t *testing.T) {
		r := newRuntime(t, Options{})
		s, ws := newSandbox(t, r, func(spec *sandbox.Spec) { spec.MemoryLimitMB = 64 })
		for _, code := range []string{typedArrays, objects} {
			res, err := run(t, s, ws, code, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !res.OOMKilled || res.ExitCode == 0 || strings.Contains(string(res.Stdout), "allocated") {
				t.Errorf("256 MiB under a 64 MiB limit: oomKilled %v, exit %d, stdout %q, stderr %q", res.OOMKilled, res.ExitCode, res.Stdout, res.Stderr)
			}
		}
		if got := mustRun(t, s, ws, `console.log("next")`); got != "next\n" {
			t.Errorf("after an OOM kill, a command printed %q", got)
		}
	})
	t.Run("V8 heap flag without a cgroup", func(t *testing.T) {
		r := newRuntime(t, Options{NoCgroup: true})
		if h := r.Health(context.Background()); !h.Available || !strings.Contains(h.Error, "V8 heap limit only") {
			t.Errorf("Health without cgroups = %+v; want available, saying memory is limited by V8's heap flag only", h)
		}
		s, ws := newSandbox(t, r, func(spec *sandbox.Spec) { spec.MemoryLimitMB = 64 })
		res, err := run(t, s, ws, objects, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !res.OOMKilled || res.ExitCode == 0 || strings.Contains(string(res.Stdout), "allocated") {
			t.Errorf("objects over a 64 MiB heap: oomKilled %v, exit %d, stdout %q, stderr %.300q", res.OOMKilled, res.ExitCode, res.Stdout, res.Stderr)
		}
		for _, p := range []sandbox.Process{
			{Args: []string{"deno", "run", "--v8-flags=--max-old-space-size=4096", "x.ts"}},
			{Args: []string{"deno", "run", "x.ts"}, Env: []string{"DENO_V8_FLAGS=--max-old-space-size=4096"}},
		} {
			if _, err := s.Exec(context.Background(), p); !errors.Is(err, sandbox.ErrCannotStart) {
				t.Errorf("%q %q: err %v; want ErrCannotStart: the heap limit is the server's", p.Args, p.Env, err)
			}
		}
	})
}

func TestDenoStdinAndExitCode(t *testing.T) {
	r := newRuntime(t, Options{})
	s, ws := newSandbox(t, r, nil)
	res, err := run(t, s, ws, `
const text = await new Response(Deno.stdin.readable).text();
console.log(text.toUpperCase());
Deno.exit(42);`, func(p *sandbox.Process) { p.Stdin = []byte("from stdin") })
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 42 || string(res.Stdout) != "FROM STDIN\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	mustFail(t, s, ws, `throw new Error("boom")`, "Uncaught (in promise) Error: boom")
}

func TestDenoOutputFlood(t *testing.T) {
	r := newRuntime(t, Options{})
	s, ws := newSandbox(t, r, nil)
	res, err := run(t, s, ws, `
const chunk = new Uint8Array(1 << 16).fill(120);
for (let i = 0; i < 160; i++) { Deno.stdout.writeSync(chunk); Deno.stderr.writeSync(chunk); }`, func(p *sandbox.Process) { p.OutputLimit = 1000 })
	if err != nil {
		t.Fatal(err)
	}
	const total = 160 << 16
	if res.ExitCode != 0 || len(res.Stdout) != 1000 || len(res.Stderr) != 1000 || res.StdoutBytes < total || res.StderrBytes < total ||
		!res.StdoutTruncated || !res.StderrTruncated {
		t.Errorf("exit %d, kept %d/%d, counted %d/%d, truncated %v/%v", res.ExitCode, len(res.Stdout), len(res.Stderr),
			res.StdoutBytes, res.StderrBytes, res.StdoutTruncated, res.StderrTruncated)
	}
}

func TestDenoHealthAndMissingTools(t *testing.T) {
	r := newRuntime(t, Options{})
	if h := r.Health(context.Background()); !h.Available || h.Error != "" {
		t.Errorf("Health = %+v; want available with no error", h)
	}
	for _, opts := range []Options{{DenoPath: "/nonexistent/deno"}, {BwrapPath: "/nonexistent/bwrap"}} {
		r := New(opts)
		h := r.Health(context.Background())
		missing := "deno"
		if opts.BwrapPath != "" {
			missing = "bwrap"
		}
		if h.Available || !strings.Contains(h.Error, missing) || !strings.Contains(h.Error, "scripts/install-deno.sh") {
			t.Errorf("Health with %s missing = %+v; want unavailable, naming it and the install script", missing, h)
		}
		spec := testSpec(t)
		spec.Workspace = t.TempDir()
		_, err := r.Create(context.Background(), spec)
		if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), h.Error) {
			t.Errorf("Create with %s missing: %v; want ErrUnavailable with %q", missing, err, h.Error)
		}
	}
}

// TestDenoRecreate makes a sandbox again for the same session, as a server
// restarted while the session is open would, and cleans up after a
// process that never closed its sandbox.
func TestDenoRecreate(t *testing.T) {
	r := newRuntime(t, Options{})
	ws, err := sandbox.OpenWorkspace(filepath.Join(t.TempDir(), "workspace"), sandbox.UID, sandbox.GID)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Remove()
	spec := testSpec(t)
	spec.Workspace = ws.Dir()
	first, err := r.Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, first.(*Sandbox), ws, `Deno.writeTextFileSync("kept.txt", "kept"); console.log("ok")`); got != "ok\n" {
		t.Fatal(got)
	}
	// The first process "crashed": its sandbox is never closed.
	second, err := New(Options{}).Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	s2 := second.(*Sandbox)
	if got := mustRun(t, s2, ws, `console.log(Deno.readTextFileSync("kept.txt"))`); got != "kept\n" {
		t.Errorf("after re-creating the sandbox, kept.txt reads %q", got)
	}
	// A sandbox whose cgroup and cache were removed behind its back says
	// so (ErrGone: the service makes it again and retries).
	if err := New(Options{}).Discard(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	assertGone(t, s2)
	if _, err := s2.Exec(context.Background(), sandbox.Process{Args: []string{"deno", "--version"}}); !errors.Is(err, sandbox.ErrGone) {
		t.Errorf("Exec after Discard: %v; want ErrGone", err)
	}
	if err := New(Options{}).Discard(context.Background(), spec); err != nil {
		t.Errorf("Discard of what is gone: %v", err)
	}
	// Close after Discard, twice, is fine.
	for i := 0; i < 2; i++ {
		if err := second.Close(context.Background()); err != nil {
			t.Errorf("Close %d: %v", i+1, err)
		}
	}
	if _, err := second.Exec(context.Background(), sandbox.Process{Args: []string{"deno", "--version"}}); err == nil {
		t.Error("Exec after Close succeeded")
	}
}

// The behaviour suite shared with the Docker runtime, with TypeScript
// programs.
func TestDenoSuite(t *testing.T) {
	lang, err := sandbox.LookupLanguage("deno")
	if err != nil {
		t.Fatal(err)
	}
	harness := func(r *Runtime, perms sandbox.Permissions) func(t *testing.T, tweak func(*sandbox.Spec)) (sandbox.Sandbox, *sandbox.Workspace) {
		return func(t *testing.T, tweak func(*sandbox.Spec)) (sandbox.Sandbox, *sandbox.Workspace) {
			s, ws := newSandbox(t, r, func(spec *sandbox.Spec) {
				spec.Permissions = &perms
				if tweak != nil {
					tweak(spec)
				}
			})
			return s, ws
		}
	}
	// As a session runs: the session's permission flags. The Env scenario
	// reads variables, so the session grants env access. Deno cannot start
	// a process without --allow-run, nor read /proc without --allow-all,
	// and no session can have either.
	t.Run("SessionPermissions", func(t *testing.T) {
		r := newRuntime(t, Options{})
		sandboxtest.Run(t, sandboxtest.Harness{
			Language: lang,
			Scripts:  suiteScripts(sandboxtest.Echo, sandboxtest.Cat, sandboxtest.Env, sandboxtest.Write, sandboxtest.Flood, sandboxtest.Alloc),
			Unsupported: map[string]string{
				sandboxtest.Spawn:      "a deno session cannot start processes (--allow-run is never granted); see the AllowAll run",
				sandboxtest.Detach:     noSessionProcesses,
				sandboxtest.Procs:      "Deno reads /proc only with --allow-all, which no session gets; see the AllowAll run",
				sandboxtest.ForkBomb:   "a deno session cannot start processes (--allow-run is never granted); see the AllowAll run",
				sandboxtest.StopStorm:  "a deno session cannot signal processes (--allow-run is never granted); see the AllowAll run",
				sandboxtest.SpawnStorm: "a deno session cannot start processes (--allow-run is never granted); see the AllowAll run",
			},
			New: harness(r, sandbox.Permissions{Env: []string{}}),
		})
	})
	// The same jails with -A (a test-only switch): programs can start
	// processes, detached ones too, and read /proc, so the process-tree
	// kill and the pids limit are tested against a program that tries.
	t.Run("AllowAll", func(t *testing.T) {
		r := newRuntime(t, Options{})
		r.allowAllForTests = true
		sandboxtest.Run(t, sandboxtest.Harness{
			Language:    lang,
			Scripts:     suiteScripts(slices.DeleteFunc(slices.Clone(sandboxtest.Scenarios), func(s string) bool { return s == sandboxtest.Detach })...),
			Unsupported: map[string]string{sandboxtest.Detach: noSessionProcesses},
			New:         harness(r, sandbox.Permissions{}),
		})
	})
}

// noSessionProcesses is why a Deno session keeps no process between
// commands: each command runs in a jail of its own, which ends with it.
const noSessionProcesses = "each deno command runs in a jail of its own, whose processes all end with it: a session has no processes between commands"

func suiteScripts(names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		out[n] = suitePrelude + suitePrograms[n]
	}
	return out
}

const suitePrelude = `
const enc = new TextEncoder();
function writeAll(w: { writeSync(p: Uint8Array): number }, data: Uint8Array) {
  for (let n = 0; n < data.length;) n += w.writeSync(data.subarray(n));
}
`

var suitePrograms = map[string]string{
	sandboxtest.Echo: `
writeAll(Deno.stdout, enc.encode(Deno.args[0]));
writeAll(Deno.stderr, enc.encode(Deno.args[1]));
Deno.exit(Number(Deno.args[2]));`,
	sandboxtest.Cat: `
if (Deno.args.length > 0) {
  writeAll(Deno.stdout, Deno.readFileSync(Deno.args[0]));
} else {
  for await (const chunk of Deno.stdin.readable) writeAll(Deno.stdout, chunk);
}`,
	sandboxtest.Env: `
const v = Deno.env.get(Deno.args[0]);
if (v === undefined) Deno.exit(3);
writeAll(Deno.stdout, enc.encode(v));`,
	sandboxtest.Write: `
Deno.writeTextFileSync(Deno.args[0], Deno.args[1]);`,
	sandboxtest.Spawn: `
// A middle process starts the ticker detached (its own session) and
// exits at once: the ticker is a grandchild nobody waits for.
const file = Deno.cwd() + "/" + Deno.args[0];
const tick = "setInterval(() => Deno.writeTextFileSync(" + JSON.stringify(file) + ", 'tick\\n', { append: true }), 100);";
const middle = "new Deno.Command(Deno.execPath(), { args: ['eval', " + JSON.stringify(tick) + "], stdin: 'null', stdout: 'null', stderr: 'null', detached: true }).spawn(); Deno.exit(0);";
await new Deno.Command(Deno.execPath(), { args: ["eval", middle], stdin: "null", stdout: "null", stderr: "null" }).output();
while (true) {
  try { if (Deno.statSync(file).size > 0) break; } catch { /* not yet */ }
  await new Promise((r) => setTimeout(r, 20));
}
writeAll(Deno.stdout, enc.encode("started\n"));
setInterval(() => {}, 1 << 30);`,
	sandboxtest.Procs: `
for (const e of Deno.readDirSync("/proc")) {
  if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
  let status = "";
  try { status = Deno.readTextFileSync("/proc/" + e.name + "/status"); } catch { continue; }
  const field = (k: string) => (status.split("\n").find((l) => l.startsWith(k + ":")) ?? "").split(/\s+/)[1];
  if (field("Uid") !== "` + strconv.Itoa(sandbox.UID) + `" || field("State") === "Z") continue;
  writeAll(Deno.stdout, enc.encode(e.name + " " + field("Name") + "\n"));
}`,
	sandboxtest.Flood: `
const [total, chunk] = Deno.args.map(Number);
const o = new Uint8Array(chunk).fill(111), e = new Uint8Array(chunk).fill(101);
for (let n = 0; n < total; n += chunk) { writeAll(Deno.stdout, o); writeAll(Deno.stderr, e); }`,
	sandboxtest.Alloc: `
const keep = [];
for (let i = 0; i < Number(Deno.args[0]); i++) {
  const b = new Uint8Array(1 << 20);
  for (let j = 0; j < b.length; j += 4096) b[j] = 1;
  keep.push(b);
}
writeAll(Deno.stdout, enc.encode("allocated\n"));`,
	sandboxtest.ForkBomb: `
if (Deno.args[0] !== "child") writeAll(Deno.stdout, enc.encode("forking\n"));
while (true) {
  try {
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", import.meta.filename!, "child"], stdin: "null", stdout: "null", stderr: "null" }).spawn();
  } catch { /* out of pids: retry */ }
  await new Promise((r) => setTimeout(r, 1));
}`,
	sandboxtest.StopStorm: `
writeAll(Deno.stdout, enc.encode("storming\n"));
while (true) {
  try { Deno.kill(-1, "SIGSTOP"); } catch { /* nothing it may stop */ }
}`,
	sandboxtest.SpawnStorm: `
// Every process is this program: the top one (no argument) or a link of a
// chain, detached with stdio on /dev/null.
const next = () => {
  for (;;) {
    try {
      new Deno.Command(Deno.execPath(), { args: ["run", "-A", import.meta.filename!, "chain"], stdin: "null", stdout: "null", stderr: "null", detached: true }).spawn();
      return;
    } catch { /* out of pids: retry */ }
  }
};
if (Deno.args[0] === "chain") {
  next();
  Deno.exit(0);
}
writeAll(Deno.stdout, enc.encode("spawning\n"));
for (let i = 0; i < 16; i++) next();
setInterval(() => {}, 1 << 30);`,
}

// BenchmarkDenoExec is one command in a jail, the runtime alone (no
// service, log or WebSocket), with and without the cgroup, next to the
// deno binary run directly on the same file:
//
//	go test -run '^$' -bench DenoExec -benchtime 30x ./sandbox/deno
func BenchmarkDenoExec(b *testing.B) {
	for _, opts := range []Options{{}, {NoCgroup: true}} {
		name := "jail+cgroup"
		if opts.NoCgroup {
			name = "jail"
		}
		b.Run(name, func(b *testing.B) {
			r := newRuntime(b, opts)
			s, ws := newSandbox(b, r, nil)
			if _, err := ws.WriteFile("one.ts", []byte("console.log(1)"), false); err != nil {
				b.Fatal(err)
			}
			p := sandbox.Process{Args: []string{"deno", "run", "one.ts"}, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 20}
			for b.Loop() {
				if res, err := s.Exec(context.Background(), p); err != nil || string(res.Stdout) != "1\n" {
					b.Fatalf("%q %q %v", res.Stdout, res.Stderr, err)
				}
			}
		})
	}
	b.Run("bare", func(b *testing.B) {
		r := newRuntime(b, Options{})
		t, _ := r.findTools()
		dir := b.TempDir()
		file := filepath.Join(dir, "one.ts")
		os.WriteFile(file, []byte("console.log(1)"), 0o644)
		for b.Loop() {
			cmd := osexec.Command(t.deno, "run", file)
			cmd.Env = []string{"HOME=" + dir, "DENO_DIR=" + filepath.Join(dir, "cache"), "NO_COLOR=1"}
			if out, err := cmd.Output(); err != nil || string(out) != "1\n" {
				b.Fatalf("%q %v", out, err)
			}
		}
	})
}
