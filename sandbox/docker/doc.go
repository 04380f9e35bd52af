// Package docker runs sessions in Docker containers, one per session,
// reused for every command.
//
// A container's placeholder process (sleep, under docker's init) runs as
// root with no capabilities; every command runs through exec as the
// unprivileged sandbox user. Killing a command is then one exec of
// `kill -KILL -1` as that user: it ends every process the command started,
// however deep or detached, and cannot touch the placeholder, so the
// container lives on for the next command. When even that exec cannot
// start (a fork bomb spent the pids limit), the container is restarted
// instead: everything in it dies, its id and files stay.
//
// Every container carries LabelSession, so a reconciler can find the ones a
// crashed server left behind.
package docker
