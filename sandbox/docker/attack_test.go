package docker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

// hiddenLeader is a program whose main thread ends alone (the exit system
// call, not exit_group): /proc then shows the process as a zombie while its
// other thread runs on. With "fork" it does so in a child and the command
// itself sleeps, so that it has to be killed.
const hiddenLeader = `import ctypes, os, sys, threading, time
if sys.argv[1] == "fork" and os.fork():
    time.sleep(600)
    sys.exit(0)
threading.Thread(target=lambda: time.sleep(100000)).start()
time.sleep(0.2)
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: this thread only
`

// TestKillReachesZombieLeaders: a command's kill also ends a process whose
// main thread exited alone (its threads run on behind a zombie's /proc
// entry), without falling back to restarting the container, which would
// take the session's other processes with it.
func TestKillReachesZombieLeaders(t *testing.T) {
	r := newRuntime(t)
	c, ws, _ := newContainer(t, r, nil)
	if _, err := ws.WriteFile("hidden.py", []byte(hiddenLeader), false); err != nil {
		t.Fatal(err)
	}
	run(t, c, "sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 </dev/null &")
	startedAt := mustInspect(t, r, c.ID()).State.StartedAt
	const timeout = 2 * time.Second
	res, err := c.Exec(context.Background(), sandbox.Process{Args: []string{"python3", "hidden.py", "fork"}, Dir: sandbox.WorkspaceDir, Timeout: timeout})
	if err != nil || !res.TimedOut {
		t.Fatalf("hidden.py fork: timedOut %v, err %v", res.TimedOut, err)
	}
	t.Logf("the kill took %v past the timeout", (res.Duration - timeout).Round(time.Millisecond))
	if mustInspect(t, r, c.ID()).State.StartedAt != startedAt {
		t.Error("the container was restarted: the agent did not kill the command's processes")
	}
	top, err := r.api.ContainerTop(context.Background(), c.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if left := NotAgents(top); len(left) != 1 {
		t.Errorf("after the kill the container runs %q; want the session's sleep 1000 alone", left)
	}
}

// TestLongCommandLines: a command line Linux takes runs, however its bytes
// are spelled in JSON (<, > and & are not escaped to six bytes each), and
// one beyond what the agent's protocol carries cannot start, for the
// client's reason, not because the agent would not answer.
func TestLongCommandLines(t *testing.T) {
	r := newRuntime(t)
	c, _, _ := newContainer(t, r, nil)
	arg := strings.Repeat("<&>", 100_000/3) // under Linux's 128 KiB per argument
	args := []string{"sh", "-c", `printf '%s' "$@" | wc -c`, "sh"}
	for range 14 { // 1.4 MB in all, under its 2 MiB
		args = append(args, arg)
	}
	res, err := c.Exec(context.Background(), sandbox.Process{Args: args, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 10})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != strconv.Itoa(14*len(arg)) {
		t.Errorf("14 arguments of %d bytes: stdout %q, err %v; want their length", len(arg), res.Stdout, err)
	}
	huge := []string{"echo", strings.Repeat("\x01", 1_500_000), strings.Repeat("\x01", 1_500_000)}
	_, err = c.Exec(context.Background(), sandbox.Process{Args: huge, Dir: sandbox.WorkspaceDir, Timeout: time.Minute, OutputLimit: 1 << 10})
	if !errors.Is(err, sandbox.ErrCannotStart) || errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "argument list too long") {
		t.Errorf("a 3 MB command line: %v; want sandbox.ErrCannotStart, argument list too long", err)
	}
	if out := run(t, c, "echo", "ok"); out != "ok\n" {
		t.Errorf("after the long command lines: %q", out)
	}
}
