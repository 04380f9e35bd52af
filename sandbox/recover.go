package sandbox

import (
	"context"
	"errors"
)

// ErrGone is a sandbox that no longer exists or no longer runs (removed
// behind the server's back, or its engine restarted). A command that failed
// with it never started, so it may be retried once the sandbox is back.
var ErrGone = errors.New("the session's sandbox is gone")

// Discarder is a runtime without Reattacher that still holds something of
// a session's between commands (Deno: a cgroup and a cache folder). A
// session closed by a process that never took its sandbox back (after a
// restart) frees it with Discard, from the spec alone.
type Discarder interface {
	Discard(ctx context.Context, spec Spec) error
}

// Reattacher is a runtime whose sandboxes outlive the server process, so a
// restarted server must find them again. Runtimes that keep nothing between
// commands but the workspace need not implement it: Create on the same
// Spec gives the session back.
type Reattacher interface {
	// Reattach returns the sandbox with id made for spec by an earlier run,
	// started again if it stopped, or made anew (restored) if it is gone.
	Reattach(ctx context.Context, spec Spec, id string) (box Sandbox, restored bool, err error)
	// Owned lists every sandbox the runtime holds: id -> session id.
	Owned(ctx context.Context) (map[string]string, error)
	// Remove removes a sandbox by id; one already gone is not an error.
	Remove(ctx context.Context, id string) error
}
