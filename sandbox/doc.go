// Package sandbox defines what a session runs in: a Runtime makes Sandboxes,
// a Sandbox runs processes against a workspace folder and is closed when the
// session ends. Runtimes live in subpackages (docker, and later deno); the
// rpc layer sees only the interfaces here, so a new runtime or a faster exec
// path slots in without touching it.
//
// File commands never go through a sandbox: they run on the host, on the
// session's workspace folder, through Workspace, which opens every path with
// os.Root so that neither ".." nor a symlink planted by user code can lead
// outside it.
package sandbox
