package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Version is the protocol this package speaks. A connection opens with
// Hello frames from both sides; a side that speaks another version
// answers with an Error frame of code CodeVersion and hangs up. The frame
// header and the Hello frame are the same in every version, so that this
// check always works.
const Version = 2

// MaxFrame is the largest frame body (type byte and payload) either side
// sends or accepts: room for a StartMsg of the largest command line Linux
// takes (2 MiB of arguments and environment), JSON-escaped (see marshal)
// unless most of it is control characters, which take six bytes each.
const MaxFrame = 8 << 20

// FrameType says what a frame carries. Upper-case types go from the server
// to the agent, lower-case ones back, Hello and Error both ways.
type FrameType byte

const (
	Hello      FrameType = 'H' // JSON HelloMsg; the first frame each way
	Error      FrameType = '!' // JSON ErrorMsg; the sender hangs up after it
	Start      FrameType = 'S' // JSON StartMsg: run a command on this connection
	Stdin      FrameType = 'I' // raw bytes for the command's stdin
	CloseStdin FrameType = 'C' // empty: the command's stdin ends
	Kill       FrameType = 'K' // empty: kill the command and all it started
	KillAll    FrameType = 'A' // empty: kill every process but the agent
	Started    FrameType = 's' // JSON StartedMsg
	Stdout     FrameType = 'o' // raw bytes the command wrote to stdout
	Stderr     FrameType = 'e' // raw bytes the command wrote to stderr
	Exited     FrameType = 'x' // JSON ExitedMsg; the last frame of a command
	Done       FrameType = 'a' // empty: KillAll is done

	// Background processes (version 2): each request has its connection,
	// and a process lives on whatever becomes of it.
	ProcStart  FrameType = 'P' // JSON ProcStartMsg -> ProcState, or Error
	ProcList   FrameType = 'L' // empty -> ProcListed
	ProcRead   FrameType = 'R' // JSON ProcReadMsg -> ProcData
	ProcFollow FrameType = 'F' // JSON ProcFollowMsg -> Chunk... then ProcState once it ended
	ProcInput  FrameType = 'W' // JSON ProcInputMsg -> OK
	ProcSignal FrameType = 'G' // JSON ProcSignalMsg -> OK
	ProcResize FrameType = 'Z' // JSON ProcResizeMsg -> OK
	ProcWait   FrameType = 'T' // JSON ProcRef -> ProcState once it ended
	ProcState  FrameType = 'p' // JSON sandbox.ProcessState
	ProcListed FrameType = 'l' // JSON ProcListMsg
	ProcData   FrameType = 'r' // JSON ProcDataMsg
	Chunk      FrameType = 'c' // binary: stream (1 byte), offset and dropped (8 bytes each, big-endian), data
	OK         FrameType = 'k' // empty: done
)

// Error codes.
const (
	CodeVersion   = "version"   // the peer speaks another protocol version
	CodeProtocol  = "protocol"  // a malformed or unexpected frame
	CodeStart     = "start"     // the program could not be started
	CodeInternal  = "internal"  // the agent could not do what was asked
	CodeNoProcess = "noprocess" // no process of that id (sandbox.ErrNoProcess)
	CodeEnded     = "ended"     // the process has ended (sandbox.ErrProcessEnded)
	CodeTooMany   = "toomany"   // the process limit is reached (sandbox.ErrTooManyProcesses)
)

// ProcStartMsg starts a background process.
type ProcStartMsg struct {
	ID        string           `json:"id"`
	Args      []string         `json:"args"`
	Env       []string         `json:"env,omitempty"`
	Dir       string           `json:"dir,omitempty"`
	Stdin     []byte           `json:"stdin,omitempty"`
	TimeoutMs int64            `json:"timeoutMs,omitempty"`
	PTY       *sandbox.WinSize `json:"pty,omitempty"`
	Retain    int              `json:"retain"`
	Head      int              `json:"head,omitempty"`
}

// ProcRef names a process.
type ProcRef struct {
	ID string `json:"id"`
}

// ProcReadMsg reads retained output.
type ProcReadMsg struct {
	ID     string         `json:"id"`
	Stream sandbox.Stream `json:"stream"`
	Offset int64          `json:"offset"`
	Limit  int            `json:"limit"`
}

// ProcDataMsg is retained output read (sandbox.Output).
type ProcDataMsg struct {
	Data          []byte `json:"data,omitempty"`
	Offset        int64  `json:"offset"`
	Next          int64  `json:"next"`
	FirstRetained int64  `json:"firstRetained"`
	EOF           bool   `json:"eof,omitempty"`
}

// ProcFollowMsg streams output from two offsets (stdout, stderr) on.
type ProcFollowMsg struct {
	ID   string   `json:"id"`
	From [2]int64 `json:"from"`
}

// ProcInputMsg feeds stdin.
type ProcInputMsg struct {
	ID   string `json:"id"`
	Data []byte `json:"data,omitempty"`
	EOF  bool   `json:"eof,omitempty"`
}

// ProcSignalMsg signals a process; SIGKILL kills its tree.
type ProcSignalMsg struct {
	ID     string `json:"id"`
	Signal int    `json:"signal"`
}

// ProcResizeMsg resizes a process's terminal.
type ProcResizeMsg struct {
	ID   string          `json:"id"`
	Size sandbox.WinSize `json:"size"`
}

// ProcListMsg lists the agent's processes.
type ProcListMsg struct {
	Processes []sandbox.ProcessState `json:"processes"`
}

// chunkHeader is a Chunk frame's payload before its data.
const chunkHeader = 1 + 8 + 8

// AppendChunk encodes a chunk as a Chunk frame's payload.
func AppendChunk(dst []byte, c sandbox.Chunk) []byte {
	dst = append(dst, byte(c.Stream))
	dst = binary.BigEndian.AppendUint64(dst, uint64(c.Offset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(c.Dropped))
	return append(dst, c.Data...)
}

// decodeChunk decodes a Chunk frame's payload; Data aliases it.
func decodeChunk(b []byte) (sandbox.Chunk, error) {
	if len(b) < chunkHeader {
		return sandbox.Chunk{}, fmt.Errorf("chunk of %d bytes, shorter than its header", len(b))
	}
	c := sandbox.Chunk{Stream: sandbox.Stream(b[0]), Offset: int64(binary.BigEndian.Uint64(b[1:9])),
		Dropped: int64(binary.BigEndian.Uint64(b[9:17])), Data: b[chunkHeader:]}
	switch {
	case c.Stream != sandbox.Stdout && c.Stream != sandbox.Stderr:
		return c, fmt.Errorf("chunk of stream %d", c.Stream)
	case c.Offset < 0 || c.Dropped < 0:
		return c, errors.New("chunk with a negative offset or gap")
	case c.Dropped > 0 && len(c.Data) > 0:
		return c, errors.New("chunk with both a gap and data")
	}
	return c, nil
}

// HelloMsg opens a connection.
type HelloMsg struct {
	Version int    `json:"version"`
	Agent   string `json:"agent,omitempty"` // the agent's build, for logs
}

// ErrorMsg says why the sender gives up on the connection or the command.
type ErrorMsg struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StartMsg asks for one command. Stdin frames follow it, then CloseStdin.
type StartMsg struct {
	Args []string `json:"args"`          // Args[0] is looked up in the command's PATH
	Env  []string `json:"env,omitempty"` // KEY=VALUE over the sandbox's environment
	Dir  string   `json:"dir,omitempty"` // working directory; the workspace when empty
}

// StartedMsg says the command runs.
type StartedMsg struct {
	PID int `json:"pid"` // in the sandbox's pid namespace
}

// ExitedMsg says how the command ended, once its output has ended too.
type ExitedMsg struct {
	ExitCode  int  `json:"exitCode"`         // 128+signal when a signal ended it
	Signal    int  `json:"signal,omitempty"` // the signal that ended it
	Killed    bool `json:"killed,omitempty"` // a Kill ended it
	OOMKilled bool `json:"oomKilled,omitempty"`
}

// Frame is one decoded frame: its type and its payload, which aliases the
// reader's buffer until the next read.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// Limits a StartMsg must keep: they bound what one frame can make the
// agent hold, besides MaxFrame.
const (
	maxArgs    = 4096
	maxEnv     = 4096
	maxPathLen = 4096
)

// ErrFrameTooLarge is a frame whose length prefix exceeds MaxFrame.
var ErrFrameTooLarge = errors.New("frame larger than the protocol allows")

// Reader reads frames: a 4-byte big-endian length of the body, then the
// body, a type byte and the payload.
type Reader struct {
	r   io.Reader
	buf []byte
}

// NewReader reads frames from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads one frame. Its payload is valid until the next call.
func (fr *Reader) Next() (Frame, error) {
	var head [4]byte
	if _, err := io.ReadFull(fr.r, head[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n == 0 {
		return Frame{}, fmt.Errorf("empty frame")
	}
	if n > MaxFrame {
		return Frame{}, fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, n, MaxFrame)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	body := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: FrameType(body[0]), Payload: body[1:]}, nil
}

// AppendFrame appends the encoding of one frame to dst. A payload that
// does not fit in MaxFrame is an error: callers split data.
func AppendFrame(dst []byte, t FrameType, payload []byte) ([]byte, error) {
	if len(payload)+1 > MaxFrame {
		return dst, fmt.Errorf("%w: %d bytes of payload", ErrFrameTooLarge, len(payload))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)+1))
	dst = append(dst, byte(t))
	return append(dst, payload...), nil
}

// MaxData is the most data one Stdin, Stdout or Stderr frame carries.
const MaxData = 32 << 10

// WriteFrame writes one frame in a single Write.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	b, err := AppendFrame(make([]byte, 0, 5+len(payload)), t, payload)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// WriteJSON writes a frame whose payload is v as JSON.
func WriteJSON(w io.Writer, t FrameType, v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, t, b)
}

// marshal is json.Marshal without its HTML escaping, which spells each
// <, > and & of a command line in six bytes: a command line that Linux
// takes would not fit in MaxFrame.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Decode checks a frame's payload against its type and decodes the JSON
// ones into the message they carry (*HelloMsg, *ErrorMsg, *StartMsg,
// *StartedMsg, *ExitedMsg); data frames give their bytes, empty frames
// nil. Everything either side reads goes through it.
func Decode(f Frame) (any, error) {
	var msg any
	switch f.Type {
	case Stdin, Stdout, Stderr:
		return f.Payload, nil
	case Chunk:
		return decodeChunk(f.Payload)
	case CloseStdin, Kill, KillAll, Done, ProcList, OK:
		if len(f.Payload) != 0 {
			return nil, fmt.Errorf("frame %q carries %d bytes; it carries none", f.Type, len(f.Payload))
		}
		return nil, nil
	case Hello:
		msg = &HelloMsg{}
	case Error:
		msg = &ErrorMsg{}
	case Start:
		msg = &StartMsg{}
	case Started:
		msg = &StartedMsg{}
	case Exited:
		msg = &ExitedMsg{}
	case ProcStart:
		msg = &ProcStartMsg{}
	case ProcRead:
		msg = &ProcReadMsg{}
	case ProcFollow:
		msg = &ProcFollowMsg{}
	case ProcInput:
		msg = &ProcInputMsg{}
	case ProcSignal:
		msg = &ProcSignalMsg{}
	case ProcResize:
		msg = &ProcResizeMsg{}
	case ProcWait:
		msg = &ProcRef{}
	case ProcState:
		msg = &sandbox.ProcessState{}
	case ProcListed:
		msg = &ProcListMsg{}
	case ProcData:
		msg = &ProcDataMsg{}
	default:
		return nil, fmt.Errorf("unknown frame type %q", f.Type)
	}
	dec := json.NewDecoder(bytes.NewReader(f.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(msg); err != nil {
		return nil, fmt.Errorf("frame %q: %v", f.Type, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("frame %q: data after its message", f.Type)
	}
	if c, ok := msg.(interface{ check() error }); ok {
		if err := c.check(); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

func (m *ProcStartMsg) check() error {
	if err := (&StartMsg{Args: m.Args, Env: m.Env, Dir: m.Dir}).check(); err != nil {
		return err
	}
	switch {
	case m.ID == "" || len(m.ID) > 64:
		return errors.New("process start: an id of 1 to 64 bytes is needed")
	case m.Retain < 0 || m.Retain > maxRetain || m.Head < 0 || m.Head > maxRetain:
		return fmt.Errorf("process start: retain and head must be between 0 and %d", maxRetain)
	case m.TimeoutMs < 0:
		return errors.New("process start: negative timeout")
	case m.PTY != nil && (m.PTY.Cols == 0 || m.PTY.Rows == 0):
		return errors.New("process start: a terminal of no size")
	}
	return nil
}

func (m *ProcReadMsg) check() error {
	if m.Stream != sandbox.Stdout && m.Stream != sandbox.Stderr || m.Offset < 0 || m.Limit < 0 {
		return errors.New("process read: bad stream, offset or limit")
	}
	return nil
}

func (m *ProcFollowMsg) check() error {
	if m.From[0] < 0 || m.From[1] < 0 {
		return errors.New("process follow: negative offset")
	}
	return nil
}

// maxRetain bounds the output a process may ask the agent to keep per
// stream.
const maxRetain = 64 << 20

func (s *StartMsg) check() error {
	switch {
	case len(s.Args) == 0 || s.Args[0] == "":
		return errors.New("start: no program")
	case len(s.Args) > maxArgs:
		return fmt.Errorf("start: %d arguments, at most %d", len(s.Args), maxArgs)
	case len(s.Env) > maxEnv:
		return fmt.Errorf("start: %d environment variables, at most %d", len(s.Env), maxEnv)
	case len(s.Dir) > maxPathLen:
		return errors.New("start: working directory path too long")
	}
	for _, a := range s.Args {
		if bytes.IndexByte([]byte(a), 0) >= 0 {
			return errors.New("start: an argument holds a NUL byte")
		}
	}
	for _, e := range s.Env {
		k, _, ok := bytes.Cut([]byte(e), []byte("="))
		if !ok || len(k) == 0 || bytes.IndexByte([]byte(e), 0) >= 0 {
			return fmt.Errorf("start: environment entry %.40q is not KEY=VALUE", e)
		}
	}
	if bytes.IndexByte([]byte(s.Dir), 0) >= 0 {
		return errors.New("start: working directory holds a NUL byte")
	}
	return nil
}
