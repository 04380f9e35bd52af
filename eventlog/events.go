package eventlog

import (
	"encoding/json"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/codebeaker/codebeaker/eventlog/chain"
)

// Type names what happened. Types are part of the on-disk format: never
// rename one, add a new type or a new payload version instead.
type Type string

const (
	SessionCreating     Type = "SessionCreating"     // a create was accepted; the sandbox is being made
	SessionCreated      Type = "SessionCreated"      // the sandbox runs; the session takes commands
	SessionCreateFailed Type = "SessionCreateFailed" // the sandbox could not be made; the session is closed
	CommandStarted      Type = "CommandStarted"      // a command began to run in the session
	CommandCompleted    Type = "CommandCompleted"    // a command ended (whatever its outcome)
	SessionClosing      Type = "SessionClosing"      // the session is being torn down
	SessionClosed       Type = "SessionClosed"       // the sandbox is gone; nothing more happens
	SessionRecovered    Type = "SessionRecovered"    // a restarted server took the session's sandbox back
	CommandInterrupted  Type = "CommandInterrupted"  // the server stopped, or the session closed, while a command ran; it has no result
	ContainerRemoved    Type = "ContainerRemoved"    // a sandbox no open session owned was removed
)

// Event is one entry of the log as stored and as read back.
type Event struct {
	Seq       uint64          `json:"seq"`
	ID        ulid.ULID       `json:"id"`
	SessionID string          `json:"sessionId"`
	Time      time.Time       `json:"time"`
	Type      Type            `json:"type"`
	Version   int             `json:"v"`
	Data      json.RawMessage `json:"data"`
	// Hash links the event to the one before (doc.go, "The hash chain"):
	// lower-case hex SHA-256 over the event as stored. An upcast payload is
	// no longer what the hash covers; Verify checks the stored form.
	Hash string `json:"hash,omitempty"`
}

// chainEvent is the part of e the hash chain covers.
func (e Event) chainEvent() chain.Event {
	return chain.Event{Seq: e.Seq, ID: e.ID, SessionID: e.SessionID, Time: e.Time, Type: string(e.Type), Version: e.Version, Data: e.Data}
}

// Decode unmarshals the event's payload into v.
func (e Event) Decode(v any) error { return json.Unmarshal(e.Data, v) }

// Record is an event to append: the log assigns its sequence number, id and
// time.
type Record struct {
	SessionID string
	Type      Type
	Data      any // marshalled to JSON; one of the payload types below
}

// CurrentVersion is the payload schema version written for new events.
// Older versions are turned into the current shape by migrations.Upcast.
const CurrentVersion = 1

// Close reasons recorded in SessionClosing and SessionClosed.
const (
	ReasonClient        = "client"
	ReasonIdleTimeout   = "idle_timeout"
	ReasonMaxLifetime   = "max_lifetime"
	ReasonCreateFailed  = "create_failed"
	ReasonWorkspaceLost = "workspace_lost" // its folder was gone when the server restarted
)

// SessionConfig is the effective configuration of a session.
type SessionConfig struct {
	IdleTimeoutMinutes float64      `json:"idleTimeoutMinutes"`
	MaxLifetimeMinutes float64      `json:"maxLifetimeMinutes"`
	MemoryLimitMB      int          `json:"memoryLimitMB"`
	CPUShares          int          `json:"cpuShares"`
	PidsLimit          int          `json:"pidsLimit"`
	Image              string       `json:"image,omitempty"`
	Permissions        *Permissions `json:"permissions,omitempty"`
}

// Permissions are a Deno session's grants. Each field is nil (not granted),
// or the JSON value the client sent: true, false or a list of strings.
type Permissions struct {
	AllowRead  json.RawMessage `json:"allowRead,omitempty"`
	AllowWrite json.RawMessage `json:"allowWrite,omitempty"`
	AllowNet   json.RawMessage `json:"allowNet,omitempty"`
	AllowEnv   json.RawMessage `json:"allowEnv,omitempty"`
}

// SessionCreatingData is the payload of SessionCreating.
type SessionCreatingData struct {
	Language string        `json:"language"`
	Runtime  string        `json:"runtime"`
	Config   SessionConfig `json:"config"`
}

// SessionCreatedData is the payload of SessionCreated.
type SessionCreatedData struct {
	ContainerID string `json:"containerId"`
	Workspace   string `json:"workspace"` // relative to the data dir (absolute in events of the first releases)
}

// SessionCreateFailedData is the payload of SessionCreateFailed.
type SessionCreateFailedData struct {
	Error string `json:"error"`
}

// CommandStartedData is the payload of CommandStarted. Command is the
// command object as the client sent it, with large string fields cut to the
// stored output cap (see CommandCompletedData.Truncated*).
type CommandStartedData struct {
	CommandID string          `json:"commandId"`
	Type      string          `json:"type"`
	Command   json.RawMessage `json:"command"`
}

// CommandCompletedData is the payload of CommandCompleted: what an auditor
// needs to know about how a command ended.
type CommandCompletedData struct {
	CommandID   string `json:"commandId"`
	Type        string `json:"type"`
	Success     bool   `json:"success"`
	Error       string `json:"error,omitempty"`
	ExitCode    *int   `json:"exitCode,omitempty"`
	DurationMs  int64  `json:"durationMs"`
	StdoutBytes int64  `json:"stdoutBytes"`
	StderrBytes int64  `json:"stderrBytes"`
	// Output as the client received it, cut at the log's stored cap.
	Stdout          string `json:"stdout,omitempty"`
	Stderr          string `json:"stderr,omitempty"`
	StdoutTruncated bool   `json:"stdoutTruncated,omitempty"` // the client's copy was cut at the output cap
	StderrTruncated bool   `json:"stderrTruncated,omitempty"`
	StoredCut       bool   `json:"storedCut,omitempty"` // the stored copy is shorter than the client's
	TimedOut        bool   `json:"timedOut,omitempty"`
	OOMKilled       bool   `json:"oomKilled,omitempty"`
	// Set by retention (Log.CompactOutput) in place of Stdout and Stderr:
	// the hex SHA-256 of the text that was stored, which keeps the event's
	// hash as it was. Optional members, so payload version 1 still.
	StdoutSha256    string `json:"stdoutSha256,omitempty"`
	StderrSha256    string `json:"stderrSha256,omitempty"`
	OutputCompacted bool   `json:"outputCompacted,omitempty"`
}

// SessionClosingData is the payload of SessionClosing.
type SessionClosingData struct {
	Reason string `json:"reason"`
}

// SessionClosedData is the payload of SessionClosed.
type SessionClosedData struct {
	Reason string `json:"reason"`
	Error  string `json:"error,omitempty"` // cleanup that failed, if any
}

// SessionRecoveredData is the payload of SessionRecovered.
type SessionRecoveredData struct {
	ContainerID string `json:"containerId"`
	// Restored says the old sandbox was gone and a new one was made on the
	// same workspace: files survived, processes and installed packages
	// outside the workspace did not.
	Restored bool `json:"restored,omitempty"`
}

// CommandInterruptedData is the payload of CommandInterrupted.
type CommandInterruptedData struct {
	CommandID string `json:"commandId"`
}

// ContainerRemovedData is the payload of ContainerRemoved; its event's
// session id is the one the container was labelled with.
type ContainerRemovedData struct {
	ContainerID string `json:"containerId"`
	Reason      string `json:"reason"`
}
