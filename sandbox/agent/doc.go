// Package agent is the init of every Docker sandbox and the server's way of
// running commands in it without the engine's exec: the server dials a Unix
// socket, asks for a command, streams its stdin and output, and kills it,
// in a few hundred microseconds of overhead instead of the engine's
// create-attach-start-inspect round trips.
//
// # Processes
//
// The agent (cmd/codebeaker-agent) is bind-mounted read-only into each
// container and runs as its PID 1, as root with only the capabilities
// SETUID, SETGID, KILL and SETPCAP (the container drops every other one and
// has no-new-privileges). As PID 1 it reaps every orphan. For each command
// it starts a shim, its own binary again, which
//   - becomes a child subreaper, so that every process the command starts,
//     also one that double-forked or called setsid, stays under the shim;
//   - empties its capability bounding set, and starts the command as the
//     sandbox user with no supplementary groups, in a process group of its
//     own, killed should the shim die;
//   - reports the command's pid and how it ended;
//   - on Kill, SIGKILLs every process under it until none is left, and
//     nothing else: the session's other processes (an earlier command's
//     background server) live on;
//   - once the command has ended and its output is closed, goes away: what
//     the command left running on purpose becomes the session's, under the
//     agent.
//
// A connection that ends while its command runs kills the command: the
// server that asked is gone. A server that starts again settles what the
// old one ran with KillAll, which kills every process but the agent.
//
// # Who may talk to it (threat model)
//
// Everything in the container but the agent and its shims is code of the
// client, hostile: it runs as the sandbox user (uid 71000), may connect to
// anything it can reach, write garbage, and signal whatever it may signal.
// The agent holds it off in three layers:
//   - The socket's folder is bind-mounted from the server's data dir, owned
//     by root with mode 0700, and the socket is root's alone: the sandbox user
//     cannot reach it (EACCES).
//   - Should it be reachable anyway (a folder made wrong), the agent reads
//     the peer's credentials (SO_PEERCRED) and serves only its own uid,
//     root: the server on the host. The sandbox user is refused before a
//     byte is read.
//   - The sandbox user cannot signal, trace or read the memory of the agent
//     or a shim (another uid, no capabilities, no-new-privileges), and a
//     pid namespace's init ignores signals it does not handle. An agent
//     that dies anyway ends the container: every process of it dies with
//     it, and the server takes the session back as it does a lost
//     container.
//
// What the server sends is trusted no further than needed: every frame is
// bounded (MaxFrame), decoded by Decode alone (fuzzed), and a malformed one
// ends its connection and kills its command, never the agent. Commands
// always run as the configured sandbox user, which must not be root; the
// protocol has no way to ask for another user, a file, or anything outside
// the container. So a sandbox program that did reach the socket could get
// nothing it cannot do already: run a command as itself.
//
// # Protocol
//
// Frames: a 4-byte big-endian length, then a type byte and a payload (see
// FrameType). Version 1, one command per connection:
//
//	server                          agent
//	Hello {"version":1}      ->
//	                         <-     Hello {"version":1,"agent":"<build>"}
//	Start {"args":[...],"env":[...],"dir":"..."}  ->
//	                         <-     Started {"pid":N}  or  Error {"code":"start",...}
//	Stdin <bytes>... CloseStdin ->
//	                         <-     Stdout <bytes> / Stderr <bytes> ...
//	Kill (optional)          ->
//	                         <-     Exited {"exitCode":N,"signal":S,"killed":B,"oomKilled":B}
//
// or Hello, then KillAll -> Done. A side that speaks another version answers
// Hello with Error {"code":"version"} and hangs up; the frame header and
// Hello never change, so that answer is always understood. Exited comes
// once the command has exited and its stdout and stderr have closed; an exit
// code is 128+N when signal N ended it.
package agent
