// Package docker runs sessions in Docker containers, one per session,
// reused for every command.
//
// A container's placeholder process (sleep, under docker's init) runs as
// root with no capabilities; every command runs through exec as the
// unprivileged sandbox user.
//
// Killing a command (a timeout, a cancel, a session's end) is the engine's
// work, never a process's of the sandbox user, which the command could
// stop (SIGSTOP) before it acts: the container is restarted with SIGKILL.
// Its init dies, and the kernel then kills every process of the
// container's pid namespace at once, however deep, detached, stopped or
// busy forking; the container's id and files stay. The kill then checks
// that only the placeholder is left, and restarts again if not. Every
// engine call on that path has its own deadline, and the output stream is
// cut after a grace, so Exec returns within a bound of its timeout even
// when the engine hangs; a kill that could not be done is done again
// before the next command runs. The helper that reads the memory cgroup
// runs as the container's root (no capabilities), which the sandbox user
// cannot signal either.
//
// A process of the sandbox user left running by an earlier command can
// stop the next command's exec before it runs (the engine's runc init
// turns into the sandbox user just before it execs the program), and the
// engine's calls that wait for the container's lock with it. That command
// then times out, and its kill ends the stopped setup with the rest, since
// it has joined the container's pid namespace: the engine lets go.
//
// Every container carries LabelSession, so a reconciler can find the ones a
// crashed server left behind.
package docker
