package sandbox

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// Background processes (the protocol's process.* methods): a Sandbox that
// runs them implements Processes. Each keeps the newest bytes of its
// output (ProcessSpec.Retain per stream), readable from any retained
// offset, and lives until it exits, is killed, times out, or the sandbox
// closes; a client's connection has nothing to do with it.

// ErrNoProcess is a process id the sandbox does not know (never started,
// or forgotten long after it ended).
var ErrNoProcess = errors.New("no such process")

// ErrTooManyProcesses is a start over the sandbox's process limit.
var ErrTooManyProcesses = errors.New("too many processes")

// ErrProcessEnded is input, a signal or a resize for a process that has
// ended.
var ErrProcessEnded = errors.New("the process has ended")

// Stream names one output stream of a process.
type Stream int

const (
	Stdout Stream = iota
	Stderr
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// WinSize is a terminal's size in characters.
type WinSize struct {
	Cols, Rows uint16
}

// ProcessSpec is one background process to start.
type ProcessSpec struct {
	ID      string   // chosen by the caller; unique in the sandbox
	Args    []string // Args[0] is the program, looked up in the sandbox's PATH
	Dir     string   // working directory inside the sandbox
	Env     []string // KEY=VALUE added to the sandbox's environment
	Stdin   []byte   // first bytes of stdin; stdin stays open for WriteInput
	Timeout time.Duration
	// PTY, when set, runs the process on a terminal of that size: its
	// stdin, stdout and stderr are the terminal, and all its output is
	// Stdout.
	PTY *WinSize
	// Retain is how many of the newest bytes of each stream are kept for
	// ReadOutput and Follow; older ones are dropped, and counted.
	Retain int
	// Head is how many of the first bytes of each stream are kept for the
	// record of how the process ended (ProcessState.Head), whatever Retain
	// drops.
	Head int
}

// StreamState is what a process wrote to one stream.
type StreamState struct {
	Bytes         int64  // written so far
	FirstRetained int64  // offset of the oldest byte still retained
	SHA256        []byte // of every byte written; set once the process has ended
	Head          []byte // the first ProcessSpec.Head bytes
}

// ProcessState is a process as process.list shows it.
type ProcessState struct {
	ID        string
	Args      []string
	PTY       bool
	Running   bool
	ExitCode  int // 128+signal when a signal ended it
	Signal    syscall.Signal
	TimedOut  bool
	OOMKilled bool
	Killed    bool // a KILL asked for by a client ended it
	StartedAt time.Time
	EndedAt   time.Time
	Output    [2]StreamState // by Stream
}

// Output is a piece of a stream's retained bytes.
type Output struct {
	Data          []byte
	Offset        int64 // of Data's first byte; FirstRetained when asked for less
	Next          int64 // the offset after Data
	FirstRetained int64
	// EOF: the process has ended and nothing is past Next.
	EOF bool
}

// Chunk is output as Follow delivers it: Data from Offset on, or, when
// Dropped > 0, the bytes from Offset on that were no longer retained when
// the follower got there.
type Chunk struct {
	Stream  Stream
	Offset  int64
	Data    []byte // valid only during the callback
	Dropped int64
}

// Processes runs background processes in a sandbox.
type Processes interface {
	// StartProcess starts a process and returns once it runs (or could not
	// start: ErrCannotStart, ErrTooManyProcesses).
	StartProcess(ctx context.Context, spec ProcessSpec) (ProcessState, error)
	// ListProcesses lists the running processes and those that ended
	// recently (the oldest ended ones are forgotten first).
	ListProcesses(ctx context.Context) ([]ProcessState, error)
	// ReadOutput reads up to limit retained bytes of a stream from offset.
	ReadOutput(ctx context.Context, id string, s Stream, offset int64, limit int) (Output, error)
	// Follow calls fn with the output of both streams from the offsets
	// in from, as it comes, until the process has ended and every byte
	// is delivered; it then returns the process's last state. fn may take
	// its time: the process never waits for it, and what the process
	// dropped meanwhile comes as a Chunk with Dropped. Follow returns early
	// with ctx's error, or fn's.
	Follow(ctx context.Context, id string, from [2]int64, fn func(Chunk) error) (ProcessState, error)
	// WriteInput queues data for the process's stdin, and closes it after
	// when eof is set. It does not wait for the process to read.
	WriteInput(ctx context.Context, id string, data []byte, eof bool) error
	// Signal sends sig to the process. SIGKILL kills it and every process
	// it started, also ones that left its process group or session, and
	// nothing else.
	Signal(ctx context.Context, id string, sig syscall.Signal) error
	// Resize sets the size of a process's terminal.
	Resize(ctx context.Context, id string, size WinSize) error
	// Wait returns the process's state once it has ended, or its state
	// now when ctx ends first (with ctx's error).
	Wait(ctx context.Context, id string) (ProcessState, error)
}
