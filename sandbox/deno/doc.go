// Package deno runs Deno sessions: no container, one real Deno per command,
// each in a fresh bubblewrap jail, with Deno's own permission checks inside.
//
// # The jail
//
// Every Exec starts bwrap, which makes new pid, ipc, uts and cgroup
// namespaces (and a network namespace holding only lo, unless the session
// grants network access and the command runs code: see Network access)
// and a new root: an empty tmpfs holding
//
//   - /workspace: the session's workspace folder, read-write;
//   - /usr/bin/deno: the deno binary, read-only;
//   - /usr/lib, /usr/lib64 (and /lib, /lib64, or the symlinks they are on a
//     merged-/usr host): read-only, for glibc and the libraries the
//     dynamically linked binary loads;
//   - /deno-dir: the session's DENO_DIR (see below), read-write;
//   - /tmp: a private tmpfs, as large as the memory limit; /dev (bwrap's
//     minimal one) and /proc (of the jail's pid namespace);
//   - with network access only: /etc/resolv.conf, /etc/hosts,
//     /etc/nsswitch.conf (and host.conf, gai.conf when present), read-only,
//     in an /etc of mode 0755 (bwrap would make it 0700, and the sandbox
//     user could not resolve names).
//
// Nothing else of the host is there: no /etc/passwd, no /home, no other
// program (so `deno` is all a command can run; Args[0] must be "deno").
// bwrap runs with --die-with-parent and --new-session, in its own process
// group, killed (SIGKILL to the group) with Pdeathsig if the server dies.
//
// When the server runs as root (the normal case), bwrap builds the jail as
// root without a user namespace, and setpriv, bound into the jail, drops to
// sandbox.UID:GID (an id no host account has) with no supplementary groups,
// no capabilities (empty bounding, inheritable and ambient sets) and
// no_new_privs before it execs deno. The program is then that uid, like
// the user of Docker sessions: files it makes in the workspace are its,
// which the server (root) reads and writes, and the service gives the files
// it makes to it, so later commands can change them. bwrap is not run
// unprivileged in a user namespace here because it resolves bind sources
// as the calling user: an unprivileged bwrap cannot reach a workspace under
// a data dir that is private to root (mode 0700, as the event log makes
// it). A server that does not run as root runs bwrap unprivileged
// (--unshare-user, --disable-userns) as its own user.
//
// The environment is cleared (--clearenv): the jail gets HOME=/tmp,
// NO_COLOR=1, PATH=/usr/bin, DENO_DIR=/deno-dir and the command's own
// Process.Env. No variable of the host's environment ever reaches the
// jail, whatever allowEnv says: allowEnv only lets code read (and set) the
// jail's variables. A client choosing its own grants must not be able to
// read the server's environment.
//
// # Permissions
//
// A session's sandbox.Permissions become Deno flags on every command that
// runs code (deno run, test, bench, repl, serve, and `deno file.ts`, which
// is run). For each of read, write, net and env: nil grants nothing, an
// empty list grants everything (--allow-read), a list grants those items
// (--allow-read=a,b). Read and write always include /workspace:
// --allow-read=/workspace --allow-write=/workspace is the default, and a
// list adds to it. --no-prompt is always given. Net also decides the
// network namespace: see Network access. Validate (and so Create) refuses
// a list of more than 64 entries, and an entry that is empty, longer than
// 4096 bytes, or holds a comma (Deno's list separator) or a NUL byte.
//
// A client may pass its own --allow-read/-write/-net/-env (or -R, -W, -N,
// -E) flags when they stay within the session's grants (they then replace
// the session's flag of that kind, to ask for less); -A, --allow-all, any
// other --allow-* (run, ffi, sys, import, ...), -P/--permission-set (which
// would take permissions from a deno.json in the workspace) and anything
// beyond the grants are refused with sandbox.ErrCannotStart: permissions
// are set at session.create. Every argument is checked, a script's own
// arguments too, because telling them from Deno's flags needs Deno's whole
// flag table. deno eval is refused: it runs with every permission whatever
// its flags say. deno task (shell commands outside Deno's checks),
// compile, install, upgrade, cache and the like are refused; fmt, lint,
// check, info, doc, types, help, coverage and --version run as they are
// (they see what the jail holds, nothing more), never with network
// access. Also refused, because they act beneath Deno's checks: --inspect*
// (the inspector runs any code for whoever reaches its port), --v8-flags
// (which can turn V8's hardening off, and carries the heap limit without a
// cgroup), --env-file and --env
// (which would load the variables refused here from a file), the
// environment variables LD_* (LD_PRELOAD of a library written to the
// workspace would run native code), GLIBC_TUNABLES, every DENO_* (Deno's
// own settings: DENO_V8_FLAGS, DENO_DIR, DENO_CERT, DENO_AUTH_TOKENS, ...),
// the proxy variables HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY in
// any case (a proxy carries requests past the allowlist), NPM_CONFIG_* and
// JSR_URL (registries Deno downloads from before any check), and a NUL
// byte in any argument, variable or working directory.
//
// # Network access
//
// A session granting no network gets a network namespace of its own: even
// a Deno bug could not connect anywhere. A session granting any shares the
// host's network on the commands that run code (run, test, bench, serve,
// repl), and Deno's checks are the barrier. They are given, besides the
// grants:
//
//   - --deny-net and --deny-import for localhost, 127.0.0.0/8, 0.0.0.0/8,
//     [::1], [::], 169.254.0.0/16 and every address of the host's own
//     interfaces (read on each command). Deny flags win over allow flags,
//     allowNet:true included, and a client's deny flags add to them: code
//     cannot reach the host's services (the CodeBeaker API, the Docker
//     socket proxies, a cloud metadata service) nor listen on those
//     addresses. Deno checks the address a name resolves to (a name in
//     /etc/hosts or DNS giving 127.0.0.1 is denied as 127.0.0.1), and the
//     IPv4 inside an IPv4-mapped IPv6 address. --deny-import also stops a
//     remote main module or import map on those addresses, which Deno
//     loads without its import allowlist.
//   - --deny-env for the proxy variables, so that code granted env access
//     cannot set one for its own fetches (Deno reads them when it makes
//     its HTTP client). Deno.createHttpClient's proxy is checked as a host.
//
// Commands that run no code (check, info, doc, ...) never share the
// host's network, whatever the grants: they download remote modules with
// no permission check at all. They use what the Deno cache holds.
//
// Limits: Deno takes no IPv6 ranges, so beyond ::1, :: and the host's own
// addresses IPv6 is not denied (fe80::/10 and fc00::/7 neighbours stay
// reachable, as other hosts of the host's networks do, docker0's
// containers included, when allowNet is true). With any network granted,
// a remote main module or import map (deno run https://host/x.ts,
// --import-map=URL, a deno.json importMap) is downloaded from any host but
// the denied ones, outside the net allowlist. npm packages are downloaded
// with no check at all: a registry in a workspace .npmrc (read beside a
// deno.json or package.json; @scope:registry= too) makes Deno send GET
// requests to any URL, loopback included (Deno parses the answer as npm
// metadata and does not print it).
//
// # Deno cache
//
// DENO_DIR is the folder <workspace>.deno-cache beside the workspace: not
// in it, so file commands and listings never see it; derived from the
// workspace path alone, so a sandbox made again for the same session after
// a restart finds it. Repeated runs reuse Deno's compiled-code cache from
// it. Close deletes it.
//
// # Restarts
//
// A sandbox holds nothing between commands but its cgroup and its Deno
// cache, both named from the spec (session id, workspace path). Create on
// the spec of a session that an earlier server process made gives the
// session back: it reuses both, after killing whatever is left in the
// cgroup. A command running when the server dies dies with it (Pdeathsig
// on bwrap, --die-with-parent inside). Runtime.Discard frees both without
// making a sandbox, for a session closed by a process that never took its
// sandbox back. A sandbox whose cache or cgroup was removed behind its
// back fails Exec with sandbox.ErrGone before starting anything.
//
// # Limits
//
// Memory, processes and CPU are limited by a cgroup per session, made by
// Create and removed by Close:
//
//   - cgroup v1 (this project's hosts): codebeaker/<session> in the memory,
//     pids and cpu hierarchies; memory.limit_in_bytes and
//     memory.memsw.limit_in_bytes (no swap beyond the limit) from
//     memoryLimitMB, pids.max from the pids limit, cpu.shares from
//     cpuShares. v1 cannot start a process inside a cgroup, so each
//     command starts as /bin/sh waiting on a pipe; the server writes its
//     pid into the cgroups, then lets it exec bwrap: nothing of the
//     command runs outside the cgroup.
//   - cgroup v2 (when /sys/fs/cgroup is cgroup2): memory.max,
//     memory.swap.max=0, pids.max, cpu.weight (converted from cpuShares as
//     runc does); bwrap starts inside the cgroup (clone3 with
//     CLONE_INTO_CGROUP, Go's SysProcAttr.UseCgroupFD), with no race.
//
// A command the kernel kills for memory is reported OOMKilled, read from
// the cgroup's oom_kill count (memory.oom_control or memory.events) before
// and after the command; a V8 "out of memory" abort is reported the same.
//
// When no cgroup can be made (the server is not root, no memory controller
// is mounted, or Options.NoCgroup), memory is limited by V8's heap flag
// --v8-flags=--max-old-space-size=<memoryLimitMB> alone, and Health says
// so. That limit covers the JavaScript heap only, not ArrayBuffers or
// Deno's native memory, and the pids limit and CPU weight are not applied;
// an address-space limit (RLIMIT_AS, RLIMIT_DATA) is no alternative, as V8
// reserves far more address space than it uses and fails to start under
// one.
//
// # Killing
//
// A timeout, a cancelled context or Close kills the command's process
// group with SIGKILL: the outer bwrap and the jail's init (pid 1 of its pid
// namespace), whose death makes the kernel kill everything else in the
// namespace, detached or not. With a cgroup, every process left in it is
// killed as well. Output printed before the kill is kept.
package deno
