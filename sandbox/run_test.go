package sandbox

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// fakeProc is a process as a runtime's Started reports it; the runtimes'
// own tests (sandboxtest) run real ones through Run.
type fakeProc struct {
	ended     chan struct{} // closed when the process ends
	killEnds  bool          // Kill ends it; else only Cut does
	killErr   error
	mu        sync.Mutex
	kills     int
	cuts      int
	ends      int
	waited    bool // Wait had returned when End was called
	endKilled bool
}

func (f *fakeProc) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.ended:
	default:
		close(f.ended)
	}
}

func (f *fakeProc) Wait() error {
	<-f.ended
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waited = true
	return nil
}

func (f *fakeProc) Kill() error {
	f.mu.Lock()
	f.kills++
	f.mu.Unlock()
	if f.killEnds {
		f.end()
	}
	return f.killErr
}

func (f *fakeProc) Cut() {
	f.mu.Lock()
	f.cuts++
	f.mu.Unlock()
	f.end()
}

func (f *fakeProc) End(res *Result, killed bool, waitErr error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ends++
	f.endKilled = killed
	if !f.waited {
		f.ends += 100 // End before Wait returned: counted as wrong
	}
	res.ExitCode = 7
	return nil
}

func newFake(killEnds bool, killErr error) *fakeProc {
	return &fakeProc{ended: make(chan struct{}), killEnds: killEnds, killErr: killErr}
}

func runFake(ctx context.Context, f *fakeProc, timeout time.Duration) (Result, error) {
	p := Process{Timeout: timeout, OutputLimit: 4}
	return Run(ctx, p, func(stdout, stderr io.Writer) (Started, error) {
		stdout.Write([]byte("hello"))
		stderr.Write([]byte("oops"))
		return f, nil
	})
}

// Run fills the Result, waits, kills on the timeout and on ctx's end, and
// calls End once, after Wait.
func TestRun(t *testing.T) {
	t.Run("ends", func(t *testing.T) {
		f := newFake(false, nil)
		time.AfterFunc(50*time.Millisecond, f.end)
		res, err := runFake(context.Background(), f, time.Minute)
		if err != nil || res.TimedOut || res.ExitCode != 7 || string(res.Stdout) != "hell" || res.StdoutBytes != 5 || !res.StdoutTruncated ||
			string(res.Stderr) != "oops" || res.StderrTruncated || res.Duration < 50*time.Millisecond {
			t.Errorf("res %+v, err %v", res, err)
		}
		if f.kills != 0 || f.ends != 1 || f.endKilled {
			t.Errorf("kills %d, ends %d (killed %v); want 0, 1 (false)", f.kills, f.ends, f.endKilled)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := newFake(true, nil)
		res, err := runFake(context.Background(), f, 50*time.Millisecond)
		if err != nil || !res.TimedOut || res.ExitCode != 7 {
			t.Errorf("res %+v, err %v; want a timeout", res, err)
		}
		if f.kills != 1 || f.cuts != 0 || f.ends != 1 || !f.endKilled {
			t.Errorf("kills %d, cuts %d, ends %d (killed %v); want 1, 0, 1 (true)", f.kills, f.cuts, f.ends, f.endKilled)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		f := newFake(true, nil)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		res, err := runFake(ctx, f, time.Minute)
		if !errors.Is(err, context.Canceled) || err.Error() != "command cancelled: context canceled" || res.TimedOut {
			t.Errorf("res %+v, err %v; want a cancel", res, err)
		}
		if f.kills != 1 || f.ends != 1 {
			t.Errorf("kills %d, ends %d; want 1, 1", f.kills, f.ends)
		}
	})
	t.Run("kill fails", func(t *testing.T) {
		bad := errors.New("could not kill")
		f := newFake(true, bad)
		if _, err := runFake(context.Background(), f, 10*time.Millisecond); err != bad {
			t.Errorf("err %v; want the kill's", err)
		}
		if f.ends != 1 {
			t.Errorf("ends %d; want 1: End releases the process whatever happened", f.ends)
		}
	})
	t.Run("output goes on after the kill", func(t *testing.T) {
		f := newFake(false, nil)
		start := time.Now()
		res, err := runFake(context.Background(), f, 10*time.Millisecond)
		took := time.Since(start)
		if err != nil || !res.TimedOut || f.cuts != 1 || f.ends != 1 {
			t.Errorf("res %+v, err %v, cuts %d, ends %d; want a timeout, one cut", res, err, f.cuts, f.ends)
		}
		if took < KillGrace || took > KillGrace+5*time.Second {
			t.Errorf("returned after %v; want KillGrace (%v) after the kill", took, KillGrace)
		}
	})
	t.Run("cancelled before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		started := false
		_, err := Run(ctx, Process{}, func(io.Writer, io.Writer) (Started, error) { started = true; return nil, nil })
		if started || !errors.Is(err, context.Canceled) || err.Error() != "command cancelled before it started: context canceled" {
			t.Errorf("started %v, err %v", started, err)
		}
	})
}
