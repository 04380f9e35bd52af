// Package rpc is CodeBeaker's service: the sessions (service.go), their
// commands (commands.go, execute.go), restart recovery (recover.go), the
// JSON-RPC methods every transport serves (methods.go, history.go) and the
// health check (health.go). Transports live in packages of their own
// (rpc/ws for WebSocket) and reach the service through its exported
// methods: Register puts the session methods on a transport's dispatcher.
//
// The Service is the one owner of every session's fate. Each open session
// has a worker goroutine that runs its commands one at a time in the order
// Enqueue took them: session.execute is a jsonrpc.Admitter, so a transport
// that admits a connection's frames one after another keeps that client's
// order, and waits for the results concurrently. closeSession is the single
// path by which a session ends, whoever asks (client, idle reaper,
// lifetime, recovery). Nothing here holds session state of its own: the
// Service appends events to the log and reads sessions from the projection
// the log feeds, keeping only handles (sandboxes, workspaces, queues) in
// memory.
//
// Only this package knows JSON-RPC error codes: errors.go maps the service's
// errors to them in one table. Runtimes are reached through the sandbox
// interfaces alone, so a new runtime slots in without changes here.
package rpc
