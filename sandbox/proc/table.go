package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Started is a process a StartFunc has started.
type Started struct {
	Stdin    io.WriteCloser // nil with a terminal: input goes to Terminal
	Stdout   io.ReadCloser  // with a terminal: the terminal (its master side)
	Stderr   io.ReadCloser  // nil with a terminal
	Terminal *os.File       // the terminal's master, for Resize; nil without
	// Wait blocks until the process has exited (not until its output has
	// closed) and says how.
	Wait func() (Exit, error)
	// Signal sends sig to the process's group. Kill kills the process and
	// everything it started, also what left its group, and nothing else.
	Signal func(syscall.Signal) error
	Kill   func() error
}

// Exit is how a process ended.
type Exit struct {
	Code      int // 128+Signal when a signal ended it
	Signal    syscall.Signal
	OOMKilled bool
}

// StartFunc starts one process as spec says, its stdio the pipes (or
// terminal) it returns.
type StartFunc func(spec sandbox.ProcessSpec) (*Started, error)

// Limits bound a Table.
type Limits struct {
	MaxProcesses int // running at once; 0: 16
	MaxEnded     int // ended ones kept for List and ReadOutput; 0: 32
}

// Bounds of what a Table holds for one process besides its output.
const (
	ChunkSize   = 32 << 10 // most bytes read from a stream, or given to a follower, at once
	maxInput    = 16 << 20 // stdin queued and not yet read by the process
	outputGrace = time.Second
	closeWait   = 5 * time.Second
)

// Table runs background processes and keeps their output. It implements
// sandbox.Processes.
type Table struct {
	start StartFunc
	lim   Limits

	mu      sync.Mutex
	procs   map[string]*process
	order   []string // by start
	pending int      // starts under way, counted as running
	closed  bool
}

var _ sandbox.Processes = (*Table)(nil)

// NewTable returns an empty table that starts processes with start.
func NewTable(start StartFunc, lim Limits) *Table {
	if lim.MaxProcesses <= 0 {
		lim.MaxProcesses = 16
	}
	if lim.MaxEnded <= 0 {
		lim.MaxEnded = 32
	}
	return &Table{start: start, lim: lim, procs: map[string]*process{}}
}

// process is one process of a table; its fields are guarded by the
// table's mu.
type process struct {
	spec      sandbox.ProcessSpec
	started   *Started
	out       [2]*output
	startedAt time.Time
	endedAt   time.Time
	exited    bool // Wait returned
	done      bool // exited and its output drained: its state is final
	exit      Exit
	timedOut  bool
	killed    bool
	changed   chan struct{} // closed (and replaced) on every change
	input     *inputQueue
	ended     chan struct{} // closed when done
}

func (p *process) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Running returns the ids of the processes that have not ended.
func (t *Table) Running() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []string
	for _, id := range t.order {
		if !t.procs[id].done {
			ids = append(ids, id)
		}
	}
	return ids
}

// StartProcess starts a process.
func (t *Table) StartProcess(ctx context.Context, spec sandbox.ProcessSpec) (sandbox.ProcessState, error) {
	if spec.ID == "" || len(spec.Args) == 0 {
		return sandbox.ProcessState{}, errors.New("a process needs an id and a program")
	}
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return sandbox.ProcessState{}, errors.New("the sandbox is closed")
	case t.procs[spec.ID] != nil:
		t.mu.Unlock()
		return sandbox.ProcessState{}, fmt.Errorf("a process %s exists already", spec.ID)
	case t.runningLocked()+t.pending >= t.lim.MaxProcesses:
		t.mu.Unlock()
		return sandbox.ProcessState{}, fmt.Errorf("%w: %d run already, the most a session may", sandbox.ErrTooManyProcesses, t.lim.MaxProcesses)
	}
	t.pending++
	t.mu.Unlock()

	st, err := t.start(spec)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending--
	if err != nil {
		return sandbox.ProcessState{}, err
	}
	p := &process{spec: spec, started: st, startedAt: time.Now(), changed: make(chan struct{}), ended: make(chan struct{}),
		out: [2]*output{newOutput(spec.Retain, spec.Head), newOutput(spec.Retain, spec.Head)}}
	if t.closed { // closed while it started
		st.Kill()
	}
	t.procs[spec.ID] = p
	t.order = append(t.order, spec.ID)
	t.forgetLocked()

	in := io.Writer(st.Terminal)
	var closeIn func() error
	if st.Stdin != nil {
		in, closeIn = st.Stdin, st.Stdin.Close
	} else if st.Terminal != nil {
		closeIn = func() error { _, err := st.Terminal.Write([]byte{4}); return err } // the terminal's EOF, ^D
	}
	p.input = newInputQueue(in, closeIn)
	if len(spec.Stdin) > 0 {
		p.input.put(spec.Stdin, false)
	}

	var pumps sync.WaitGroup
	for s, r := range []io.ReadCloser{st.Stdout, st.Stderr} {
		if r == nil {
			p.out[s].closed = true
			continue
		}
		pumps.Go(func() { t.pump(p, p.out[s], r) })
	}
	go t.await(p, &pumps)
	if spec.Timeout > 0 {
		timer := time.AfterFunc(spec.Timeout, func() {
			t.mu.Lock()
			expired := !p.exited
			if expired {
				p.timedOut = true
			}
			t.mu.Unlock()
			if expired {
				st.Kill()
			}
		})
		go func() { <-p.ended; timer.Stop() }()
	}
	return t.stateLocked(p), nil
}

func (t *Table) runningLocked() int {
	n := 0
	for _, p := range t.procs {
		if !p.done {
			n++
		}
	}
	return n
}

// forgetLocked forgets the processes that ended first, past MaxEnded.
func (t *Table) forgetLocked() {
	var ended []*process
	for _, p := range t.procs {
		if p.done {
			ended = append(ended, p)
		}
	}
	if len(ended) <= t.lim.MaxEnded {
		return
	}
	slices.SortFunc(ended, func(a, b *process) int { return a.endedAt.Compare(b.endedAt) })
	for _, p := range ended[:len(ended)-t.lim.MaxEnded] {
		delete(t.procs, p.spec.ID)
		t.order = slices.DeleteFunc(t.order, func(id string) bool { return id == p.spec.ID })
	}
}

// pump reads a stream at full speed into its output, whoever follows.
func (t *Table) pump(p *process, o *output, r io.ReadCloser) {
	buf := make([]byte, ChunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			t.mu.Lock()
			o.write(buf[:n])
			p.notify()
			t.mu.Unlock()
		}
		if err != nil { // EOF, or EIO from a terminal whose last holder closed it
			return
		}
	}
}

// await waits for the process's exit, then for its output (a grace, since
// a process outside it may hold its pipes), and makes its state final.
func (t *Table) await(p *process, pumps *sync.WaitGroup) {
	exit, err := p.started.Wait()
	t.mu.Lock()
	p.exited, p.exit = true, exit
	if err != nil && exit.Code == 0 && exit.Signal == 0 {
		p.exit.Code = -1
	}
	p.notify()
	t.mu.Unlock()

	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(outputGrace):
		for _, r := range []io.ReadCloser{p.started.Stdout, p.started.Stderr} {
			if r != nil {
				r.Close()
			}
		}
		<-drained
	}
	for _, r := range []io.ReadCloser{p.started.Stdout, p.started.Stderr} {
		if r != nil {
			r.Close()
		}
	}
	p.input.stop()

	t.mu.Lock()
	defer t.mu.Unlock()
	p.done, p.endedAt = true, time.Now()
	for _, o := range p.out {
		o.closed = true
	}
	p.notify()
	close(p.ended)
	t.forgetLocked()
}

func (t *Table) lookup(id string) (*process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[id]
	if p == nil {
		return nil, fmt.Errorf("%w: %s", sandbox.ErrNoProcess, id)
	}
	return p, nil
}

// stateLocked is p as ProcessState shows it.
func (t *Table) stateLocked(p *process) sandbox.ProcessState {
	st := sandbox.ProcessState{ID: p.spec.ID, Args: p.spec.Args, PTY: p.spec.PTY != nil, Running: !p.done,
		TimedOut: p.timedOut, Killed: p.killed, StartedAt: p.startedAt, EndedAt: p.endedAt}
	if p.done {
		st.ExitCode, st.Signal, st.OOMKilled = p.exit.Code, p.exit.Signal, p.exit.OOMKilled
	}
	for i, o := range p.out {
		st.Output[i] = sandbox.StreamState{Bytes: o.total, FirstRetained: o.first(), Head: slices.Clone(o.head)}
		if p.done {
			st.Output[i].SHA256 = o.sum.Sum(nil)
		}
	}
	return st
}

// ListProcesses lists the running processes and the ended ones kept.
func (t *Table) ListProcesses(ctx context.Context) ([]sandbox.ProcessState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]sandbox.ProcessState, 0, len(t.order))
	for _, id := range t.order {
		out = append(out, t.stateLocked(t.procs[id]))
	}
	return out, nil
}

// ReadOutput reads retained bytes of a stream.
func (t *Table) ReadOutput(ctx context.Context, id string, s sandbox.Stream, offset int64, limit int) (sandbox.Output, error) {
	p, err := t.lookup(id)
	if err != nil {
		return sandbox.Output{}, err
	}
	if s != sandbox.Stdout && s != sandbox.Stderr {
		return sandbox.Output{}, fmt.Errorf("no stream %d", s)
	}
	if limit <= 0 || limit > 1<<20 {
		limit = 1 << 20
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	o := p.out[s]
	res := sandbox.Output{Offset: max(offset, o.first()), FirstRetained: o.first()}
	if res.Offset < o.total {
		res.Data = make([]byte, min(int64(limit), o.total-res.Offset))
		o.read(res.Offset, res.Data)
	}
	res.Next = res.Offset + int64(len(res.Data))
	res.EOF = p.done && res.Next >= o.total
	return res, nil
}

// Follow delivers output from the offsets in from as it comes, until the
// process has ended and all is delivered.
func (t *Table) Follow(ctx context.Context, id string, from [2]int64, fn func(sandbox.Chunk) error) (sandbox.ProcessState, error) {
	p, err := t.lookup(id)
	if err != nil {
		return sandbox.ProcessState{}, err
	}
	pos := from
	buf := make([]byte, ChunkSize)
	for {
		t.mu.Lock()
		var chunk sandbox.Chunk
		found := false
		for s, o := range p.out {
			if first := o.first(); pos[s] < first {
				chunk, found = sandbox.Chunk{Stream: sandbox.Stream(s), Offset: pos[s], Dropped: first - pos[s]}, true
				pos[s] = first
				break
			}
			if pos[s] < o.total {
				n := o.read(pos[s], buf)
				chunk, found = sandbox.Chunk{Stream: sandbox.Stream(s), Offset: pos[s], Data: buf[:n]}, true
				pos[s] += int64(n)
				break
			}
		}
		done, changed := p.done, p.changed
		var final sandbox.ProcessState
		if !found && done {
			final = t.stateLocked(p)
		}
		t.mu.Unlock()
		switch {
		case found:
			if err := fn(chunk); err != nil {
				return sandbox.ProcessState{}, err
			}
			continue
		case done:
			return final, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return sandbox.ProcessState{}, ctx.Err()
		}
	}
}

// WriteInput queues bytes for the process's stdin.
func (t *Table) WriteInput(ctx context.Context, id string, data []byte, eof bool) error {
	p, err := t.lookup(id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	exited := p.exited
	t.mu.Unlock()
	if exited {
		return fmt.Errorf("%w: %s", sandbox.ErrProcessEnded, id)
	}
	return p.input.put(data, eof)
}

// Signal sends a signal; SIGKILL kills the process's whole tree.
func (t *Table) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	p, err := t.lookup(id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	exited := p.exited
	if !exited && sig == syscall.SIGKILL {
		p.killed = true
	}
	t.mu.Unlock()
	if exited {
		return fmt.Errorf("%w: %s", sandbox.ErrProcessEnded, id)
	}
	if sig == syscall.SIGKILL {
		return p.started.Kill()
	}
	return p.started.Signal(sig)
}

// Resize sets the size of the process's terminal.
func (t *Table) Resize(ctx context.Context, id string, size sandbox.WinSize) error {
	p, err := t.lookup(id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	exited := p.exited
	t.mu.Unlock()
	switch {
	case p.started.Terminal == nil:
		return fmt.Errorf("process %s has no terminal", id)
	case exited:
		return fmt.Errorf("%w: %s", sandbox.ErrProcessEnded, id)
	}
	return SetSize(p.started.Terminal, size)
}

// Wait waits for the process's end.
func (t *Table) Wait(ctx context.Context, id string) (sandbox.ProcessState, error) {
	p, err := t.lookup(id)
	if err != nil {
		return sandbox.ProcessState{}, err
	}
	select {
	case <-p.ended:
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stateLocked(p), ctx.Err()
}

// Close kills every running process and waits (a while) for their ends;
// later starts fail.
func (t *Table) Close() {
	t.mu.Lock()
	t.closed = true
	var running []*process
	for _, p := range t.procs {
		if !p.done {
			running = append(running, p)
		}
	}
	t.mu.Unlock()
	deadline := time.After(closeWait)
	for _, p := range running {
		p.started.Kill()
	}
	for _, p := range running {
		select {
		case <-p.ended:
		case <-deadline:
			return
		}
	}
}
