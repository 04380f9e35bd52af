package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"

	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ShimArg is the argument that makes the agent's binary a shim.
const ShimArg = "shim"

// Shim's file descriptors, as startShim passes them.
const (
	shimControlFD = 0 // read: the spec line, then 'K' or EOF
	shimStatusFD  = 1 // write: status lines
	shimStdin     = 3
	shimStdout    = 4
	shimStderr    = 5
)

// RunShim is the shim: the parent of one command, and the subreaper of
// everything the command starts, so that no process of it escapes the kill
// by double-forking or calling setsid (orphans come back to the shim, not
// to the agent). It runs as root like the agent, which the command's user
// can neither signal nor trace.
func RunShim() int {
	// The command is killed if the shim dies (SIGKILL as its parent-death
	// signal), which is bound to the thread that starts it: keep it.
	runtime.LockOSThread()
	status := os.NewFile(shimStatusFD, "status")
	report := func(st shimStatus) {
		b, _ := json.Marshal(st)
		status.Write(append(b, '\n'))
	}
	// All that needs no command is done before waiting for one: a spare
	// shim (see agent.shim) is ready sooner.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		report(shimStatus{Error: fmt.Sprintf("cannot become a subreaper: %v", err)})
		return 2
	}
	if err := dropBoundingSet(); err != nil {
		report(shimStatus{Error: fmt.Sprintf("cannot drop the capability bounding set: %v", err)})
		return 2
	}
	json.Unmarshal([]byte(`{"args":["x"],"env":["A=b"],"dir":"/","UID":1,"GID":1}`), &shimSpec{}) // warms the decoder

	control := bufio.NewReader(os.NewFile(shimControlFD, "control"))
	line, err := control.ReadBytes('\n')
	if err != nil {
		report(shimStatus{Error: "no command given"})
		return 2
	}
	var spec shimSpec
	if err := json.Unmarshal(line, &spec); err != nil || len(spec.Args) == 0 {
		report(shimStatus{Error: "malformed command"})
		return 2
	}
	path, err := lookPath(spec.Args[0], spec.Env)
	if err != nil {
		report(shimStatus{Error: err.Error()})
		return 2
	}
	// The command gets its stdio as 0, 1 and 2 and nothing else of the
	// shim's: the agent passed these without close-on-exec.
	for _, fd := range []int{shimStdin, shimStdout, shimStderr} {
		syscall.CloseOnExec(fd)
	}

	// Kill is heard from now on, also while the command is being started:
	// between its switch to the sandbox user and its exec, a process of
	// that user left running by an earlier command can stop it, and the
	// start would wait for ever. The kill ends the stopped child, and the
	// start returns.
	self := os.Getpid()
	var killed atomic.Bool
	killRequested := make(chan struct{})
	released := make(chan struct{})
	go func() {
		b, err := control.ReadByte()
		if err != nil || b != 'K' {
			// Released (or the agent is gone): what is left of the command
			// goes on as the session's, under the agent.
			close(released)
			return
		}
		killed.Store(true)
		killTree(self)
		close(killRequested)
	}()

	// The memory cgroup's killer picks by size and this score: the command
	// and all it starts (and this shim) before the agent, whose death
	// would end the whole sandbox. Raising it needs no capability.
	os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	pid, err := syscall.ForkExec(path, spec.Args, &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: []uintptr{shimStdin, shimStdout, shimStderr},
		Sys:   commandAttr(spec),
	})
	if err != nil {
		report(shimStatus{Error: startError(err)})
		return 2
	}
	for _, fd := range []int{shimStdin, shimStdout, shimStderr} {
		syscall.Close(fd)
	}
	report(shimStatus{PID: pid})
	if killed.Load() {
		killTree(self) // the kill may have come before the fork
	}

	// Reap everything that comes to the shim; the command's end is
	// reported, the rest only reaped. The tree is empty for good once
	// wait4 finds no child: only a descendant can bring a new one.
	empty := make(chan struct{})
	go func() {
		defer close(empty)
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			if got == pid {
				st := shimStatus{Exited: true}
				if ws.Signaled() {
					st.Signal = int(ws.Signal())
				} else {
					st.Code = ws.ExitStatus()
				}
				report(st)
			}
		}
	}()

	select {
	case <-released:
	case <-killRequested:
		killTree(self)
		select {
		case <-empty:
		case <-time.After(5 * time.Second):
		}
	}
	return 0
}

// commandAttr is how the command is started: as the sandbox user, killed
// should the shim die, in a process group of its own, or, on a terminal,
// in a session of its own that the terminal controls (its stdin is the
// terminal).
func commandAttr(spec shimSpec) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(spec.UID), Gid: uint32(spec.GID), Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	if spec.TTY {
		attr.Setsid, attr.Setctty, attr.Ctty = true, true, 0
	} else {
		attr.Setpgid = true
	}
	return attr
}

// killTree kills every descendant of root, again and again until none is
// left: a process forking meanwhile either is killed before its fork
// (a pending SIGKILL fails fork) or leaves a child the next pass finds,
// since orphans come back to root, the subreaper.
func killTree(root int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		live := descendants(root)
		if len(live) == 0 {
			return
		}
		for _, pid := range live {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		runtime.Gosched()
	}
}

// killAll kills every process of the sandbox but the agent (PID 1) and
// the trees of the shims in spare (background processes), again until
// none is left. Only PID 1 may do it: elsewhere it would reach far beyond
// a sandbox.
func killAll(spare []int) error {
	if os.Getpid() != 1 {
		return errors.New("kill all: the agent is not the sandbox's init")
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		spared := map[int]bool{}
		for _, shim := range spare {
			spared[shim] = true
			for _, pid := range descendants(shim) {
				spared[pid] = true
			}
		}
		left := 0
		for _, pid := range descendants(0) {
			if !spared[pid] {
				syscall.Kill(pid, syscall.SIGKILL)
				left++
			}
		}
		if left == 0 {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("kill all: processes survived 10 s of SIGKILL")
}

// descendants lists the live processes under root, as /proc
// shows them now; root 0 means every process but the caller.
func descendants(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	children := map[int][]int{}
	live := map[int]bool{}
	var all []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		ppid, state, threads, ok := procStat(pid)
		if !ok || state == 'X' {
			continue
		}
		// A zombie stays in the tree, which may go on through it: a process
		// whose main thread exited alone shows as one while its other
		// threads, and its children, run on. It is live if it has threads.
		children[ppid] = append(children[ppid], pid)
		if state != 'Z' || threads > 1 {
			live[pid] = true
			all = append(all, pid)
		}
	}
	if root == 0 {
		return all
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if live[c] {
				out = append(out, c)
			}
			queue = append(queue, c)
		}
	}
	return out
}

// procStat reads a process's parent, state and number of threads from
// /proc/PID/stat, whose second field (the name, in parentheses) may itself
// hold ") ".
func procStat(pid int) (ppid int, state byte, threads int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 18 || len(f[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	threads, err2 := strconv.Atoi(f[17]) // field 20, num_threads
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return ppid, f[0][0], threads, true
}

// lookPath finds a program as a shell would for the command: in the PATH
// of the command's environment, not the shim's.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("executable file not found in $PATH")
}

// startError words why exec failed, as the engine's exec said it.
func startError(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "no such file or directory"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied"
	case errors.Is(err, syscall.ENOTDIR):
		return "not a directory"
	case errors.Is(err, syscall.ENOEXEC):
		return "exec format error"
	}
	return err.Error()
}

// dropBoundingSet empties the shim's capability bounding set, which the
// command inherits: it then holds no capability, nor any it could ever
// gain, whatever it execs. The shim keeps the ones it has (to switch to
// the sandbox user, and to kill).
func dropBoundingSet() error {
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return err
		}
	}
	return nil
}
