package sandbox

import (
	"context"

	"github.com/rs/zerolog"
)

// Pooler is a runtime that can keep started sandboxes warm, so that a
// session's create takes one instead of making one. A sandbox's workspace
// is fixed when it is made, so a warm sandbox is made for a session id
// chosen in advance: the session that claims it takes that id.
type Pooler interface {
	// NewPool starts keeping warm sandboxes as cfg says; Pool.Close stops.
	NewPool(cfg PoolConfig) Pool
	// PoolMade reports whether the sandbox id was made for a pool, by this
	// process or an earlier one. One the log never saw as a session's was
	// nobody's: its removal is no session's event.
	PoolMade(ctx context.Context, id string) (bool, error)
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	Size int // warm sandboxes kept per image
	// Limits are what sessions get by default: warm sandboxes are made
	// with them (the other fields of a Spec are ignored).
	Limits Spec
	// NewID makes a session id; Workspace is that session's workspace
	// folder, which the pool makes (owned by UID:GID) and removes.
	NewID     func() string
	Workspace func(sessionID string) string
	Logger    zerolog.Logger
}

// Pool keeps warm sandboxes of one runtime.
type Pool interface {
	// Claim takes a warm sandbox for spec (its SessionID and Workspace are
	// ignored): the session must take sessionID, whose workspace folder
	// exists. Limits other than PoolConfig.Limits are applied to it, if
	// the runtime can. ok is false when there is none to take (then the
	// caller makes one itself). A claimed sandbox is the caller's.
	Claim(ctx context.Context, spec Spec) (sessionID string, box Sandbox, ok bool, err error)
	// Holds reports whether the sandbox made for sessionID is the pool's
	// (warm, or being made): nobody else may remove it.
	Holds(sessionID string) bool
	// Status says how full each image's pool is, by image.
	Status() map[string]PoolStatus
	// Close stops refilling and removes the warm sandboxes and their
	// workspace folders.
	Close(ctx context.Context) error
}

// PoolStatus is what /health says of one image's pool.
type PoolStatus struct {
	Language string `json:"language"`
	Ready    int    `json:"ready"`
	Size     int    `json:"size"`
}
