package eventlog

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/migrations"
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
	ProcessStarted      Type = "ProcessStarted"      // a background process began to run in the session
	ProcessInput        Type = "ProcessInput"        // a client wrote to a process's stdin (its size and digest)
	ProcessSignalled    Type = "ProcessSignalled"    // a client sent a process a signal
	ProcessExited       Type = "ProcessExited"       // a process ended, or was lost with its sandbox
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
	// The bytes the program wrote, cut at the log's stored cap (StoredCut;
	// SetOutput fills them): the text if they are UTF-8, else their base64
	// and an encoding member OutputBase64 (payload version 2; the client's
	// reply shows them as text with U+FFFD). Events of version 1 held the
	// text with U+FFFD for bytes that were not UTF-8; read back, such text
	// has the encoding OutputLossy.
	Stdout          string `json:"stdout,omitempty"`
	StdoutEncoding  string `json:"stdoutEncoding,omitempty"`
	Stderr          string `json:"stderr,omitempty"`
	StderrEncoding  string `json:"stderrEncoding,omitempty"`
	StdoutTruncated bool   `json:"stdoutTruncated,omitempty"` // the client's copy was cut at the output cap
	StderrTruncated bool   `json:"stderrTruncated,omitempty"`
	StoredCut       bool   `json:"storedCut,omitempty"` // the stored copy is shorter than the client's
	TimedOut        bool   `json:"timedOut,omitempty"`
	OOMKilled       bool   `json:"oomKilled,omitempty"`
	// Set by retention (Log.CompactOutput) in place of Stdout and Stderr:
	// the hex SHA-256 of the bytes that were stored (of the text, in
	// events of version 1), which keeps the event's hash as it was; the
	// encoding members stay. Optional members, added in version 1.
	StdoutSha256    string `json:"stdoutSha256,omitempty"`
	StderrSha256    string `json:"stderrSha256,omitempty"`
	OutputCompacted bool   `json:"outputCompacted,omitempty"`
}

// Encodings of CommandCompletedData's output (StdoutEncoding,
// StderrEncoding); none means the output is the bytes as UTF-8 text.
const (
	OutputBase64 = chain.EncodingBase64   // the base64 of bytes that are not UTF-8
	OutputLossy  = migrations.OutputLossy // text from version 1: U+FFFD in it may stand for bytes that were not UTF-8
)

// SetOutput stores a command's stdout and stderr, at most limit bytes of
// each, as the payload holds them (see Stdout), and sets StoredCut if
// either was cut.
func (d *CommandCompletedData) SetOutput(stdout, stderr []byte, limit int) {
	var stdoutCut, stderrCut bool
	d.Stdout, d.StdoutEncoding, stdoutCut = storedOutput(stdout, limit)
	d.Stderr, d.StderrEncoding, stderrCut = storedOutput(stderr, limit)
	d.StoredCut = stdoutCut || stderrCut
}

func storedOutput(b []byte, limit int) (text, encoding string, cut bool) {
	b, cut = Cut(b, limit)
	if utf8.Valid(b) {
		return string(b), "", cut
	}
	return base64.StdEncoding.EncodeToString(b), OutputBase64, cut
}

// Cut returns the first n bytes of s, or fewer so as not to split a UTF-8
// character: UTF-8 stays UTF-8. cut says whether anything was left out.
func Cut[T ~string | ~[]byte](s T, n int) (_ T, cut bool) {
	if len(s) <= n {
		return s, false
	}
	// s[n] continues a character that starts at most 3 bytes before it;
	// if that character is whole and valid, cut before it.
	for i := n; i >= 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if r, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)])); i < n && i+size > n && (r != utf8.RuneError || size > 1) {
				return s[:i], true
			}
			break
		}
	}
	return s[:n], true
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

// ProcessStartedData is the payload of ProcessStarted: the process as the
// client asked for it. Environment values and stdin are not kept, only
// the variables' names and stdin's size and digest: they often carry
// secrets.
type ProcessStartedData struct {
	ProcessID   string   `json:"processId"`
	Name        string   `json:"name,omitempty"`
	CommandName string   `json:"commandName"`
	Args        []string `json:"args,omitempty"`
	Dir         string   `json:"workingDirectory,omitempty"`
	EnvNames    []string `json:"envNames,omitempty"`
	StdinBytes  int      `json:"stdinBytes,omitempty"`
	StdinSha256 string   `json:"stdinSha256,omitempty"`
	TimeoutMs   int64    `json:"timeoutMs,omitempty"`
	PTY         *PTYSize `json:"pty,omitempty"`
}

// PTYSize is a process terminal's size.
type PTYSize struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

// ProcessInputData is the payload of ProcessInput.
type ProcessInputData struct {
	ProcessID string `json:"processId"`
	Bytes     int    `json:"bytes"`
	Sha256    string `json:"sha256,omitempty"`
	EOF       bool   `json:"eof,omitempty"`
}

// ProcessSignalledData is the payload of ProcessSignalled.
type ProcessSignalledData struct {
	ProcessID string `json:"processId"`
	Signal    string `json:"signal"` // INT, TERM, HUP, QUIT, USR1, USR2 or KILL
}

// ProcessExitedData is the payload of ProcessExited: how a background
// process ended, the size and digest of each of its streams, and a bounded
// head and tail of each (as CommandCompletedData stores output: text, or
// base64 with an encoding member).
type ProcessExitedData struct {
	ProcessID  string `json:"processId"`
	ExitCode   *int   `json:"exitCode,omitempty"` // absent when lost
	Signal     string `json:"signal,omitempty"`   // the signal that ended it, by name
	TimedOut   bool   `json:"timedOut,omitempty"`
	OOMKilled  bool   `json:"oomKilled,omitempty"`
	Killed     bool   `json:"killed,omitempty"` // a client's KILL ended it
	DurationMs int64  `json:"durationMs"`
	// Lost says why its end is not known: its sandbox ended with the
	// server (Deno), was replaced, or the session closed.
	Lost           string `json:"lost,omitempty"`
	StdoutBytes    int64  `json:"stdoutBytes"`
	StderrBytes    int64  `json:"stderrBytes"`
	StdoutSha256   string `json:"stdoutSha256,omitempty"` // of every byte written
	StderrSha256   string `json:"stderrSha256,omitempty"`
	StdoutHead     string `json:"stdoutHead,omitempty"`
	StdoutTail     string `json:"stdoutTail,omitempty"` // the last bytes, when not all of them are in the head
	StdoutEncoding string `json:"stdoutEncoding,omitempty"`
	StderrHead     string `json:"stderrHead,omitempty"`
	StderrTail     string `json:"stderrTail,omitempty"`
	StderrEncoding string `json:"stderrEncoding,omitempty"`
}

// SetOutput stores a stream's head and tail, at most limit bytes each; the
// stream's encoding is base64 if either is not UTF-8.
func (d *ProcessExitedData) SetOutput(s int, head, tail []byte, limit int) {
	head, _ = Cut(head, limit)
	if len(tail) > limit {
		tail = tail[len(tail)-limit:]
		for len(tail) > 0 && !utf8.RuneStart(tail[0]) { // a character's end, cut from its start
			tail = tail[1:]
		}
	}
	h, t, enc := string(head), string(tail), ""
	if !utf8.Valid(head) || !utf8.Valid(tail) {
		h, t, enc = base64.StdEncoding.EncodeToString(head), base64.StdEncoding.EncodeToString(tail), OutputBase64
	}
	if s == 0 {
		d.StdoutHead, d.StdoutTail, d.StdoutEncoding = h, t, enc
	} else {
		d.StderrHead, d.StderrTail, d.StderrEncoding = h, t, enc
	}
}
