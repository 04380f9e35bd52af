// Package sandbox defines what a session runs in: a Runtime makes Sandboxes,
// a Sandbox runs processes against a workspace folder and is closed when the
// session ends. Runtimes live in subpackages (docker, deno); the rpc layer
// sees only the interfaces here, so a new runtime or a faster exec path
// slots in without touching it.
//
// Each runtime says what a Spec may hold (Runtime.Validate): a setting its
// sessions do not take is a *SpecError, in the client's terms. Each runs a
// process through Run, which holds what all of them share (capped output,
// the timeout, the kill and its grace, the Result); the runtime supplies how
// to start, wait for and kill one (Started). The errors runtimes return are
// written to be shown to clients, without a package prefix.
//
// File commands never go through a sandbox: they run on the host, on the
// session's workspace folder, through Workspace, which opens every path with
// os.Root so that neither ".." nor a symlink planted by user code can lead
// outside it.
package sandbox
