package deno

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"testing"

	"github.com/codebeaker/codebeaker/sandbox"
)

// TestDenoArgs checks the command lines built from a client's, without
// running them (the jail tests run them).
func TestDenoArgs(t *testing.T) {
	none := newGrants(&sandbox.Permissions{})
	lists := newGrants(&sandbox.Permissions{Read: []string{"/tmp"}, Write: []string{"/workspace", "/tmp"}, Net: []string{"example.com"}, Env: []string{"A", "B"}})
	all := newGrants(&sandbox.Permissions{Read: []string{}, Write: []string{}, Net: []string{}, Env: []string{}})
	const ws = "--allow-read=/workspace"
	const wsw = "--allow-write=/workspace"
	// With network access, code commands deny the host's own services
	// (the host's interface addresses come from the sandbox: 192.0.2.7 here).
	guard := []string{
		"--deny-net=localhost,127.0.0.0/8,0.0.0.0/8,[::1],[::],169.254.0.0/16,192.0.2.7,[fd00::7]",
		"--deny-import=localhost,127.0.0.0/8,0.0.0.0/8,[::1],[::],169.254.0.0/16,192.0.2.7,[fd00::7]",
		"--deny-env=HTTP_PROXY,http_proxy,HTTPS_PROXY,https_proxy,ALL_PROXY,all_proxy,NO_PROXY,no_proxy",
	}
	guarded := func(args ...string) []string {
		i := slices.Index(args, "--no-prompt") + 1
		return slices.Concat(args[:i], guard, args[i:])
	}
	host := []string{"192.0.2.7", "[fd00::7]"}
	for _, c := range []struct {
		g    grants
		in   []string
		want []string
	}{
		{none, []string{"deno", "run", "/workspace/a.ts"}, []string{jailDeno, "run", ws, wsw, "--no-prompt", "/workspace/a.ts"}},
		{none, []string{"deno", "a.ts", "x"}, []string{jailDeno, "run", ws, wsw, "--no-prompt", "a.ts", "x"}},
		{none, []string{"deno", "--quiet", "a.ts"}, []string{jailDeno, "run", ws, wsw, "--no-prompt", "--quiet", "a.ts"}},
		{none, []string{"deno"}, []string{jailDeno, "repl", ws, wsw, "--no-prompt"}},
		{none, []string{"deno", "test"}, []string{jailDeno, "test", ws, wsw, "--no-prompt"}},
		{none, []string{"deno", "--version"}, []string{jailDeno, "--version"}},
		{none, []string{"deno", "fmt", "--check"}, []string{jailDeno, "fmt", "--check"}},
		{lists, []string{"deno", "run", "a.ts"}, guarded(jailDeno, "run", "--allow-read=/workspace,/tmp", "--allow-write=/workspace,/tmp", "--allow-net=example.com", "--allow-env=A,B", "--no-prompt", "a.ts")},
		// A client's flag within the grants replaces the session's of its kind.
		{lists, []string{"deno", "run", "--allow-env=A", "-W=/tmp/sub", "a.ts"}, guarded(jailDeno, "run", "--allow-read=/workspace,/tmp", "--allow-net=example.com", "--no-prompt", "--allow-env=A", "-W=/tmp/sub", "a.ts")},
		{lists, []string{"deno", "run", "--allow-net=example.com:8443", "a.ts"}, guarded(jailDeno, "run", "--allow-read=/workspace,/tmp", "--allow-write=/workspace,/tmp", "--allow-env=A,B", "--no-prompt", "--allow-net=example.com:8443", "a.ts")},
		{all, []string{"deno", "run", "-RWNE", "a.ts"}, guarded(jailDeno, "run", "--no-prompt", "-RWNE", "a.ts")},
		{all, []string{"deno", "run", "a.ts"}, guarded(jailDeno, "run", "--allow-read", "--allow-write", "--allow-net", "--allow-env", "--no-prompt", "a.ts")},
		{all, []string{"deno", "test", "--deny-net=example.org"}, guarded(jailDeno, "test", "--allow-read", "--allow-write", "--allow-net", "--allow-env", "--no-prompt", "--deny-net=example.org")},
		// Tools that run no code get no flags (and no network: see jailArgs).
		{all, []string{"deno", "check", "a.ts"}, []string{jailDeno, "check", "a.ts"}},
	} {
		got, err := denoArgs(c.in, policy{grants: c.g, hostAddrs: host})
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q:\n got %q, %v\nwant %q", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct {
		g  grants
		in []string
	}{
		{lists, []string{"deno", "run", "--allow-net=example.org", "a.ts"}},
		{lists, []string{"deno", "run", "--allow-net=sub.example.com", "a.ts"}},
		{lists, []string{"deno", "run", "--allow-env=A,C", "a.ts"}},
		{lists, []string{"deno", "run", "--allow-read=/tmp/../etc", "a.ts"}},
		{lists, []string{"deno", "run", "--allow-read=../etc", "a.ts"}},
		{lists, []string{"deno", "run", "--allow-write=/tmpx", "a.ts"}},
		{lists, []string{"deno", "run", "-N", "a.ts"}},
		{lists, []string{"deno", "run", "-RN=example.com", "a.ts"}},
		{all, []string{"deno", "run", "-A", "a.ts"}},
		{all, []string{"deno", "run", "-S", "a.ts"}},
		{all, []string{"deno", "run", "--allow-run=deno", "a.ts"}},
		{all, []string{"deno", "run", "--allow-sys", "a.ts"}},
		{all, []string{"deno", "eval", "1"}},
		{all, []string{"deno", "task"}},
		{all, []string{"bash"}},
		{all, nil},
		// .env files could set what checkEnv refuses (proxies, DENO_V8_FLAGS).
		{all, []string{"deno", "run", "--env-file", "a.ts"}},
		{all, []string{"deno", "run", "--env-file=.env", "a.ts"}},
		{all, []string{"deno", "run", "--env", "a.ts"}},
		{all, []string{"deno", "run", "--env=/workspace/.env", "a.ts"}},
		{all, []string{"deno", "--env-file=.env", "a.ts"}},
		{none, []string{"deno", "run", "a.ts", "x\x00y"}},
		{none, []string{"deno\x00", "run", "a.ts"}},
	} {
		if got, err := denoArgs(c.in, policy{grants: c.g}); !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("%q: got %q, %v; want ErrCannotStart", c.in, got, err)
		}
	}
}

func TestCheckEnv(t *testing.T) {
	for _, kv := range []string{"CB_VAR=x", "HOME=/workspace", "MY_HTTP_PROXY=x", "DENO=1", "A=", "NODENO_DIR=x"} {
		if err := checkEnv([]string{kv}); err != nil {
			t.Errorf("%q: %v; want it allowed", kv, err)
		}
	}
	for _, kv := range []string{
		"LD_PRELOAD=/workspace/x.so", "GLIBC_TUNABLES=x",
		// Deno's own variables change how it runs beneath its checks.
		"DENO_V8_FLAGS=--allow-natives-syntax", "DENO_DIR=/workspace", "DENO_AUTH_TOKENS=a@b", "DENO_CERT=/workspace/ca.pem",
		"DENO_TLS_CA_STORE=system", "DENO_NO_PACKAGE_JSON=1", "DENO_SERVE_ADDRESS=tcp:0.0.0.0:80", "deno_dir=/x",
		// A proxy would carry fetches past the allowlist.
		"HTTP_PROXY=http://127.0.0.1:5077", "http_proxy=http://127.0.0.1:5077", "Https_Proxy=x", "ALL_PROXY=socks5://127.0.0.1:1",
		"all_proxy=x", "NO_PROXY=*", "no_proxy=*",
		// Registries Deno fetches from before any permission check.
		"NPM_CONFIG_REGISTRY=http://127.0.0.1:5077/", "npm_config_registry=http://127.0.0.1:5077/", "JSR_URL=http://127.0.0.1:5077/",
		"A=x\x00y", "A\x00B=x",
	} {
		if err := checkEnv([]string{"OK=1", kv}); !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("%q: %v; want ErrCannotStart", kv, err)
		}
	}
}

// TestJailNetwork checks which commands share the host's network: only
// those that run code, in a session granting network access. Tools (check,
// info, doc, ...) fetch remote modules with no permission check at all, so
// they never get it.
func TestJailNetwork(t *testing.T) {
	for _, c := range []struct {
		net   []string
		argv  []string
		share bool
	}{
		{nil, []string{jailDeno, "run", "a.ts"}, false},
		{[]string{}, []string{jailDeno, "run", "a.ts"}, true},
		{[]string{"example.com"}, []string{jailDeno, "test"}, true},
		{[]string{}, []string{jailDeno, "repl"}, true},
		{[]string{}, []string{jailDeno, "check", "http://127.0.0.1:5077/x.ts"}, false},
		{[]string{}, []string{jailDeno, "info", "http://127.0.0.1:5077/x.ts"}, false},
		{[]string{}, []string{jailDeno, "doc", "a.ts"}, false},
		{[]string{}, []string{jailDeno, "fmt"}, false},
		{[]string{}, []string{jailDeno, "--version"}, false},
	} {
		s := &Sandbox{grants: newGrants(&sandbox.Permissions{Net: c.net}), spec: sandbox.Spec{Workspace: "/ws"}, cache: "/ws.deno-cache",
			tools: tools{deno: "/d", bwrap: "/b", setpriv: "/s"}}
		a := s.jailArgs(sandbox.Process{}, sandbox.WorkspaceDir, c.argv)
		if got := !slices.Contains(a, "--unshare-net"); got != c.share {
			t.Errorf("net %q, %q: shares the host's network %v; want %v", c.net, c.argv, got, c.share)
		}
		if got := slices.Contains(a, "/etc/resolv.conf"); got != c.share {
			t.Errorf("net %q, %q: binds /etc/resolv.conf %v; want %v", c.net, c.argv, got, c.share)
		}
	}
}

// TestValidate: a Deno session takes no image, and no permission entry
// that Deno cannot be given; Create refuses what Validate refuses, before
// it makes anything.
func TestValidate(t *testing.T) {
	r := New(Options{NoCgroup: true})
	ws := t.TempDir()
	cases := []struct {
		name  string
		tweak func(*sandbox.Spec)
		want  string // "" for a spec Deno takes
	}{
		{"plain", func(*sandbox.Spec) {}, ""},
		{"grants", func(s *sandbox.Spec) {
			s.Permissions = &sandbox.Permissions{Read: []string{"/tmp"}, Net: []string{}, Env: []string{"HOME"}}
		}, ""},
		{"image", func(s *sandbox.Spec) { s.Image = "alpine" }, `"dockerImage" applies only to Docker languages, not deno`},
		{"comma", func(s *sandbox.Spec) { s.Permissions = &sandbox.Permissions{Net: []string{"a.com,b.com"}} },
			"permissions.allowNet has an empty or over-long entry, or one with a comma (Deno's list separator)"},
		{"too many", func(s *sandbox.Spec) { s.Permissions = &sandbox.Permissions{Env: make([]string, 65)} },
			"permissions.allowEnv lists 65 entries; at most 64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := testSpec(t)
			spec.Workspace = ws
			c.tweak(&spec)
			err := r.Validate(spec)
			var se *sandbox.SpecError
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case c.want != "" && (!errors.As(err, &se) || err.Error() != c.want):
				t.Errorf("Validate: %#v; want a *sandbox.SpecError %q", err, c.want)
			}
			if c.want == "" {
				return
			}
			if _, err := r.Create(context.Background(), spec); !errors.As(err, &se) || err.Error() != c.want {
				t.Errorf("Create: %v; want Validate's %q", err, c.want)
			}
			if _, err := os.Stat(cacheDir(ws)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Create made the Deno cache of a spec it refused (%v)", err)
			}
		})
	}
}
