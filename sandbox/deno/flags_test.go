package deno

import (
	"errors"
	"slices"
	"testing"

	"github.com/codebeaker/codebeaker/sandbox"
)

// TestDenoArgs checks the command lines built from a client's, without
// running them (the jail tests run them).
func TestDenoArgs(t *testing.T) {
	none := newGrants(sandbox.Permissions{})
	lists := newGrants(sandbox.Permissions{Read: []string{"/tmp"}, Write: []string{"/workspace", "/tmp"}, Net: []string{"example.com"}, Env: []string{"A", "B"}})
	all := newGrants(sandbox.Permissions{Read: []string{}, Write: []string{}, Net: []string{}, Env: []string{}})
	const ws = "--allow-read=/workspace"
	const wsw = "--allow-write=/workspace"
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
		{lists, []string{"deno", "run", "a.ts"}, []string{jailDeno, "run", "--allow-read=/workspace,/tmp", "--allow-write=/workspace,/tmp", "--allow-net=example.com", "--allow-env=A,B", "--no-prompt", "a.ts"}},
		// A client's flag within the grants replaces the session's of its kind.
		{lists, []string{"deno", "run", "--allow-env=A", "-W=/tmp/sub", "a.ts"}, []string{jailDeno, "run", "--allow-read=/workspace,/tmp", "--allow-net=example.com", "--no-prompt", "--allow-env=A", "-W=/tmp/sub", "a.ts"}},
		{lists, []string{"deno", "run", "--allow-net=example.com:8443", "a.ts"}, []string{jailDeno, "run", "--allow-read=/workspace,/tmp", "--allow-write=/workspace,/tmp", "--allow-env=A,B", "--no-prompt", "--allow-net=example.com:8443", "a.ts"}},
		{all, []string{"deno", "run", "-RWNE", "a.ts"}, []string{jailDeno, "run", "--no-prompt", "-RWNE", "a.ts"}},
		{all, []string{"deno", "run", "a.ts"}, []string{jailDeno, "run", "--allow-read", "--allow-write", "--allow-net", "--allow-env", "--no-prompt", "a.ts"}},
	} {
		got, err := denoArgs(c.in, policy{grants: c.g})
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
	} {
		if got, err := denoArgs(c.in, policy{grants: c.g}); !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("%q: got %q, %v; want ErrCannotStart", c.in, got, err)
		}
	}
}
