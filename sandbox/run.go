package sandbox

import (
	"context"
	"fmt"
	"io"
	"time"
)

// KillGrace is how long a killed process's output may keep flowing
// before Run cuts it.
const KillGrace = 5 * time.Second

// Started is a process a runtime has started, as Run drives it. The
// runtime knows how to wait for it and how to kill it; Run knows when.
type Started interface {
	// Wait returns once the process has ended and its output is in, or
	// promptly after Cut.
	Wait() error
	// Kill ends the process and everything it started. Run calls it at
	// most once, on the timeout or when ctx ends. An error means something
	// may still run.
	Kill() error
	// Cut gives up on output still flowing KillGrace after the kill.
	Cut()
	// End is called once, after Wait has returned. It says how the process
	// ended (ExitCode, OOMKilled) from what Wait returned and from whether
	// Run killed it, and releases what the process held. An error is a
	// process that could not be run, or whose end cannot be known.
	End(res *Result, killed bool, waitErr error) error
}

// Run runs one process for Sandbox.Exec, and keeps Exec's contract: it
// starts the process with start, its stdout and stderr going to buffers
// capped at p.OutputLimit, waits for its end, kills it on p.Timeout or
// when ctx ends, and fills the Result.
func Run(ctx context.Context, p Process, start func(stdout, stderr io.Writer) (Started, error)) (Result, error) {
	begin := time.Now()
	var res Result
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("command cancelled before it started: %w", err)
	}
	stdout := &CappedBuffer{Limit: p.OutputLimit}
	stderr := &CappedBuffer{Limit: p.OutputLimit}
	proc, err := start(stdout, stderr)
	if err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("command cancelled before it started: %w", ctx.Err())
		}
		return res, err
	}
	killed, killErr, waitErr := await(ctx, p.Timeout, proc, &res)
	res.Duration = time.Since(begin)
	res.Stdout, res.StdoutBytes, res.StdoutTruncated = stdout.Bytes(), stdout.Total(), stdout.Truncated()
	res.Stderr, res.StderrBytes, res.StderrTruncated = stderr.Bytes(), stderr.Total(), stderr.Truncated()
	endErr := proc.End(&res, killed, waitErr)
	switch {
	case killErr != nil:
		return res, killErr
	case endErr != nil:
		return res, endErr
	case killed && !res.TimedOut:
		return res, fmt.Errorf("command cancelled: %w", ctx.Err())
	}
	return res, nil
}

// await waits for proc to end, killing it first if its timeout passes
// (res.TimedOut) or ctx ends. It returns once Wait has.
func await(ctx context.Context, timeout time.Duration, proc Started, res *Result) (killed bool, killErr, waitErr error) {
	waited := make(chan error, 1)
	go func() { waited <- proc.Wait() }()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case err := <-waited:
		return false, nil, err
	case <-expired:
		res.TimedOut = true
	case <-ctx.Done():
	}
	killErr = proc.Kill()
	select {
	case waitErr = <-waited:
	case <-time.After(KillGrace):
		proc.Cut()
		waitErr = <-waited
	}
	return true, killErr, waitErr
}
