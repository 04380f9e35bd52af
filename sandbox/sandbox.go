package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors a runtime reports; rpc maps them to client errors. Their texts,
// and those of every error Create, Reattach and Exec return, are written
// for clients: they say what failed and why, with no package prefix.
var (
	ErrUnavailable   = errors.New("runtime unavailable")
	ErrImageNotFound = errors.New("image not found")
	// ErrImageNotAllowed is an image on the host that sessions may not
	// use: not a runtime image built for UID, nor allowed by the operator.
	ErrImageNotAllowed = errors.New("image not allowed")
	// ErrCannotStart is a program that could not be started: not found,
	// not executable. The client's doing, so a failed command, not a
	// server error.
	ErrCannotStart = errors.New("cannot start")
)

// SpecError is a Spec that a runtime does not take: a setting the client
// asked for that its language's runtime has no use for, or cannot pass
// on. Its text is for the client, naming settings as the client sends
// them ("dockerImage", "permissions.allowRead").
type SpecError struct{ msg string }

func (e *SpecError) Error() string { return e.msg }

// InvalidSpec returns a *SpecError.
func InvalidSpec(format string, args ...any) error {
	return &SpecError{fmt.Sprintf(format, args...)}
}

// Spec describes the sandbox of one session.
type Spec struct {
	SessionID     string
	Language      Language
	Image         string // container image; empty for process runtimes
	Workspace     string // host folder seen inside the sandbox as WorkspaceDir
	MemoryLimitMB int
	CPUShares     int
	PidsLimit     int
	Permissions   *Permissions // nil: none asked for
}

// Permissions are Deno-style grants: nil means none, an empty non-nil list
// means all, a list names what is allowed.
type Permissions struct {
	Read, Write, Net, Env []string
}

// Runtime makes sandboxes of one kind.
type Runtime interface {
	// Validate says whether the runtime takes what spec asks for, before
	// anything is made: each runtime knows its own settings. Its errors
	// are *SpecError.
	Validate(spec Spec) error
	// Create makes and starts a sandbox. It removes what it made if it
	// fails. It refuses what Validate refuses.
	Create(ctx context.Context, spec Spec) (Sandbox, error)
}

// Sandbox is one session's isolated place to run processes.
type Sandbox interface {
	// ID names the sandbox to its runtime (a container id); empty for none.
	ID() string
	// Exec runs one process to completion, or until its timeout or ctx ends,
	// killing everything it started. An error means the process could not be
	// run or waited for; a process that ran and failed is a Result, and so
	// is one that timed out (TimedOut). When ctx ends first, the error wraps
	// ctx.Err(). Runtimes keep this through Run; the sandboxtest package
	// checks all of it.
	Exec(ctx context.Context, p Process) (Result, error)
	// Close stops the sandbox and frees what it holds. It is idempotent.
	Close(ctx context.Context) error
}

// Process is one program to run in a sandbox.
type Process struct {
	Args        []string // Args[0] is the program, looked up in the sandbox's PATH
	Dir         string   // working directory inside the sandbox
	Env         []string // KEY=VALUE added to the sandbox's environment
	Stdin       []byte
	Timeout     time.Duration
	OutputLimit int // bytes kept of each of stdout and stderr
}

// Result is how a process ended.
type Result struct {
	ExitCode        int
	Stdout, Stderr  []byte
	StdoutBytes     int64 // bytes the process wrote, kept or not
	StderrBytes     int64
	StdoutTruncated bool
	StderrTruncated bool
	TimedOut        bool
	OOMKilled       bool
	Duration        time.Duration
}

// Health is what /health says about a runtime.
type Health struct {
	Available bool            `json:"available"`
	Error     string          `json:"error,omitempty"`
	Images    map[string]bool `json:"images,omitempty"` // language -> its default image is present
}

// HealthReporter is a runtime that can say whether it can serve.
type HealthReporter interface {
	Health(ctx context.Context) Health
}
