package docker

import (
	"context"
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
