package deno

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Permission kinds a session can grant, as Deno names them.
const (
	kindRead  = "read"
	kindWrite = "write"
	kindNet   = "net"
	kindEnv   = "env"
)

// shortKinds are Deno's one-letter permission flags (-R, -W, -N, -E).
var shortKinds = map[byte]string{'R': kindRead, 'W': kindWrite, 'N': kindNet, 'E': kindEnv}

// permissionList is one kind of a session's permissions, with the name
// session.create gives it (permissions.allowRead, ...).
type permissionList struct {
	kind, param string
	list        []string
}

func permissionLists(p *sandbox.Permissions) []permissionList {
	if p == nil {
		p = &sandbox.Permissions{}
	}
	return []permissionList{{kindRead, "allowRead", p.Read}, {kindWrite, "allowWrite", p.Write}, {kindNet, "allowNet", p.Net}, {kindEnv, "allowEnv", p.Env}}
}

// Bounds of a permission list: each entry goes on every command line.
const (
	maxPermissionEntries    = 64
	maxPermissionEntryBytes = 4096
)

// checkPermissions refuses entries Deno cannot be given: its flags take
// comma-separated lists, and no argument holds a NUL byte.
func checkPermissions(p *sandbox.Permissions) error {
	for _, l := range permissionLists(p) {
		if len(l.list) > maxPermissionEntries {
			return sandbox.InvalidSpec("permissions.%s lists %d entries; at most %d", l.param, len(l.list), maxPermissionEntries)
		}
		for _, item := range l.list {
			if item == "" || len(item) > maxPermissionEntryBytes || strings.ContainsAny(item, ",\x00") {
				return sandbox.InvalidSpec("permissions.%s has an empty or over-long entry, or one with a comma (Deno's list separator)", l.param)
			}
		}
	}
	return nil
}

// grant is one kind of permission: nothing, everything, or a list.
type grant struct {
	all  bool
	list []string // when !all; empty means nothing
}

func (g grant) none() bool { return !g.all && len(g.list) == 0 }

// grants are a session's permissions, with the workspace added to read and
// write: code may always use its own files.
type grants map[string]grant

func newGrants(p *sandbox.Permissions) grants {
	g := grants{}
	for _, l := range permissionLists(p) {
		switch {
		case l.list == nil:
			g[l.kind] = grant{}
		case len(l.list) == 0:
			g[l.kind] = grant{all: true}
		default:
			g[l.kind] = grant{list: slices.Clone(l.list)}
		}
	}
	for _, kind := range []string{kindRead, kindWrite} {
		if gr := g[kind]; !gr.all && !slices.Contains(gr.list, sandbox.WorkspaceDir) {
			gr.list = append([]string{sandbox.WorkspaceDir}, gr.list...)
			g[kind] = gr
		}
	}
	return g
}

// flag is the Deno flag that grants g of kind, or "" for none.
func (g grant) flag(kind string) string {
	switch {
	case g.all:
		return "--allow-" + kind
	case len(g.list) == 0:
		return ""
	}
	return "--allow-" + kind + "=" + strings.Join(g.list, ",")
}

// flags are the permission flags of the session, less the kinds the client
// set itself (within the grants, checked before).
func (g grants) flags(clientSet map[string]bool) []string {
	var out []string
	for _, kind := range []string{kindRead, kindWrite, kindNet, kindEnv} {
		if f := g[kind].flag(kind); f != "" && !clientSet[kind] {
			out = append(out, f)
		}
	}
	return append(out, "--no-prompt")
}

// covers reports whether a client's request for kind (value "" = all) is
// within the grant.
func (g grants) covers(kind string, hasValue bool, value string) bool {
	gr := g[kind]
	if gr.all {
		return true
	}
	if !hasValue || value == "" {
		return false
	}
	for _, want := range strings.Split(value, ",") {
		if want == "" {
			continue
		}
		if !slices.ContainsFunc(gr.list, func(have string) bool { return within(kind, want, have) }) {
			return false
		}
	}
	return true
}

// within reports whether one requested item is inside one granted item: a
// path under a granted path, a host (with or without port) of a granted
// host, the same variable name.
func within(kind, want, have string) bool {
	switch kind {
	case kindRead, kindWrite:
		if !path.IsAbs(want) {
			// Relative to the working folder, which is in the workspace.
			want = path.Join(sandbox.WorkspaceDir, want)
		}
		want, have = path.Clean(want), path.Clean(have)
		return want == have || have == "/" || strings.HasPrefix(want, have+"/")
	case kindNet:
		if want == have {
			return true
		}
		// A granted host without a port covers every port of it.
		host, _, found := strings.Cut(want, ":")
		return found && !strings.Contains(have, ":") && host == have
	}
	return want == have
}

// Subcommands that take permission flags: the session's are put right after
// the subcommand.
var permissioned = map[string]bool{"run": true, "test": true, "bench": true, "repl": true, "serve": true}

// Subcommands that run no user code and take no permission flags.
var permissionless = map[string]bool{"fmt": true, "lint": true, "check": true, "info": true, "doc": true, "types": true, "help": true, "coverage": true}

// Subcommands refused, with why; any other word is taken as a script name
// (`deno main.ts` is `deno run main.ts`).
var refused = map[string]string{
	"eval":            "deno eval always runs with every permission, whatever flags it gets; use deno run (or execute_code)",
	"task":            "deno task runs shell commands outside Deno's permission checks",
	"compile":         "deno compile is not available in a sandbox",
	"install":         "deno install is not available in a sandbox",
	"i":               "deno install is not available in a sandbox",
	"uninstall":       "deno uninstall is not available in a sandbox",
	"add":             "deno add is not available in a sandbox",
	"remove":          "deno remove is not available in a sandbox",
	"outdated":        "deno outdated is not available in a sandbox",
	"update":          "deno update is not available in a sandbox",
	"upgrade":         "deno upgrade is not available in a sandbox",
	"publish":         "deno publish is not available in a sandbox",
	"jupyter":         "deno jupyter is not available in a sandbox",
	"x":               "deno x is not available in a sandbox",
	"cache":           "deno cache is not available in a sandbox",
	"vendor":          "deno vendor is not available in a sandbox",
	"completions":     "deno completions is not available in a sandbox",
	"init":            "deno init is not available in a sandbox",
	"clean":           "deno clean is not available in a sandbox",
	"deploy":          "deno deploy is not available in a sandbox",
	"approve-scripts": "deno approve-scripts is not available in a sandbox",
}

// policy is what a session puts on every deno command line.
type policy struct {
	grants   grants
	extra    []string // flags added after the permission flags
	allowAll bool     // tests only: -A instead of the grants
	// hostAddrs are the addresses of the host's own interfaces, denied
	// with localTargets when network access is granted.
	hostAddrs []string
}

// localTargets are where code sharing the host's network would reach the
// host's own services (the CodeBeaker API, the Docker socket proxies, a
// cloud's metadata service): loopback, the unspecified addresses (which
// connect to loopback) and IPv4 link-local. Deno checks the address a name
// resolves to as well, but takes no IPv6 ranges: only ::1 and :: are
// listed, and IPv4-mapped addresses are checked as IPv4.
var localTargets = []string{"localhost", "127.0.0.0/8", "0.0.0.0/8", "[::1]", "[::]", "169.254.0.0/16"}

// proxyNames are the variables Deno's HTTP clients take a proxy from, in
// either case: a proxy on loopback (or anywhere) would carry requests past
// the allowlist, which Deno checks against the target, not the proxy.
var proxyNames = []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}

// netGuard are the flags given with network access to commands that run
// code: the host's own services are denied, whatever the grants (deny
// flags win over allow flags, and a client's deny flags add to these), and
// code may not set a proxy variable for its own fetches.
func netGuard(hostAddrs []string) []string {
	deny := strings.Join(slices.Concat(localTargets, hostAddrs), ",")
	var proxies []string
	for _, p := range proxyNames {
		proxies = append(proxies, p, strings.ToLower(p))
	}
	return []string{"--deny-net=" + deny, "--deny-import=" + deny, "--deny-env=" + strings.Join(proxies, ",")}
}

// denoArgs turns a client's command line into the one run in the jail:
// the program must be deno, permission flags must stay within the
// session's grants, and the session's flags are put after the subcommand.
// Errors wrap sandbox.ErrCannotStart.
func denoArgs(args []string, pol policy) ([]string, error) {
	g := pol.grants
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: no program given", sandbox.ErrCannotStart)
	}
	if args[0] != "deno" && args[0] != jailDeno {
		return nil, fmt.Errorf("%w %q: only deno runs in a deno session", sandbox.ErrCannotStart, args[0])
	}
	for _, a := range args {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("%w: an argument holds a NUL byte", sandbox.ErrCannotStart)
		}
	}
	rest := args[1:]
	clientSet := map[string]bool{}
	for _, a := range rest {
		kinds, err := checkArg(a, g)
		if err != nil {
			return nil, err
		}
		for _, k := range kinds {
			clientSet[k] = true
		}
	}
	inject := func(sub string, tail []string) []string {
		out := []string{jailDeno, sub}
		if pol.allowAll {
			out = append(out, "-A", "--no-prompt")
		} else {
			out = append(out, g.flags(clientSet)...)
		}
		if !g[kindNet].none() {
			out = append(out, netGuard(pol.hostAddrs)...)
		}
		out = append(out, pol.extra...)
		return append(out, tail...)
	}
	switch {
	case len(rest) == 0:
		return inject("repl", nil), nil
	case isInfoFlag(rest[0]):
		return append([]string{jailDeno}, rest...), nil
	case permissioned[rest[0]]:
		return inject(rest[0], rest[1:]), nil
	case permissionless[rest[0]]:
		return append([]string{jailDeno}, rest...), nil
	}
	if why, ok := refused[rest[0]]; ok {
		return nil, fmt.Errorf("%w: %s", sandbox.ErrCannotStart, why)
	}
	// `deno [flags] script.ts [args]` is deno run.
	return inject("run", rest), nil
}

func isInfoFlag(a string) bool {
	switch a {
	case "--version", "-V", "--help", "-h":
		return true
	}
	return false
}

// checkArg refuses an argument that asks for more than the session grants.
// Every argument is checked, script arguments too: telling Deno's own flags
// from a script's needs Deno's whole flag table, and a mistake there would
// let a grant through, while refusing a script argument that looks like a
// permission flag only costs a clear error. It returns the permission kinds
// the argument sets.
func checkArg(a string, g grants) ([]string, error) {
	beyond := func(flag string) error {
		return fmt.Errorf("%w: %s asks for more than this session grants: permissions are set at session.create (permissions.allowRead, allowWrite, allowNet, allowEnv)", sandbox.ErrCannotStart, flag)
	}
	switch {
	case strings.HasPrefix(a, "--"):
		name, value, hasValue := strings.Cut(a[2:], "=")
		switch {
		case name == "allow-all", name == "permission-set":
			return nil, beyond(a)
		case name == "env-file", name == "env":
			// An env file would set what checkEnv refuses.
			return nil, fmt.Errorf("%w: %s is not available in a sandbox: pass variables in the command's env", sandbox.ErrCannotStart, a)
		case name == "v8-flags":
			// V8 flags can turn off V8's own hardening (and, without a
			// cgroup, carry the memory limit).
			return nil, fmt.Errorf("%w: --v8-flags is not available in a sandbox", sandbox.ErrCannotStart)
		case strings.HasPrefix(name, "inspect"):
			// The inspector runs any code, unchecked, for whoever reaches
			// its port.
			return nil, fmt.Errorf("%w: %s is not available in a sandbox", sandbox.ErrCannotStart, a)
		case strings.HasPrefix(name, "allow-"):
			kind := strings.TrimPrefix(name, "allow-")
			if _, known := g[kind]; !known || !g.covers(kind, hasValue, value) {
				return nil, beyond(a)
			}
			return []string{kind}, nil
		}
	case strings.HasPrefix(a, "-") && len(a) > 1:
		letters, value, hasValue := strings.Cut(a[1:], "=")
		var kinds []string
		for i := 0; i < len(letters); i++ {
			c := letters[i]
			switch {
			case c == 'A' || c == 'P' || c == 'S' || c == 'I':
				return nil, beyond(a)
			case shortKinds[c] != "":
				last := i == len(letters)-1
				if !g.covers(shortKinds[c], hasValue && last, value) {
					return nil, beyond(a)
				}
				kinds = append(kinds, shortKinds[c])
			}
		}
		return kinds, nil
	}
	return nil, nil
}

// checkEnv refuses variables that would change how the deno binary itself
// runs, beneath Deno's permission checks: the dynamic loader's (LD_PRELOAD
// of a library written to the workspace would run native code), glibc's
// tunables, Deno's own (DENO_V8_FLAGS, DENO_DIR, DENO_CERT, ...), proxies,
// and the npm and JSR registries Deno downloads from before any check. It
// refuses NUL bytes too, which no program can be given.
func checkEnv(env []string) error {
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.ContainsRune(kv, 0) {
			return fmt.Errorf("%w: an environment variable holds a NUL byte", sandbox.ErrCannotStart)
		}
		up := strings.ToUpper(name)
		if strings.HasPrefix(name, "LD_") || name == "GLIBC_TUNABLES" || strings.HasPrefix(up, "DENO_") ||
			slices.Contains(proxyNames, up) || strings.HasPrefix(up, "NPM_CONFIG_") || up == "JSR_URL" {
			return fmt.Errorf("%w: the environment variable %s is not available in a sandbox", sandbox.ErrCannotStart, name)
		}
	}
	return nil
}
