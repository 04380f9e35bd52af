package sandboxtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Scenarios: what each program of Harness.Scripts must do. argv[1] is the
// first argument the suite passes. Arguments are ASCII.
const (
	// Echo writes argv[1] to stdout and argv[2] to stderr as they are (no
	// newline added) and exits with code argv[3].
	Echo = "echo"
	// Cat copies the file argv[1] to stdout byte for byte; stdin when it is
	// given no argument.
	Cat = "cat"
	// Env writes the value of the environment variable argv[1] to stdout,
	// or exits with code 3 when it is not set.
	Env = "env"
	// Write writes the text argv[2] to the file argv[1], a path relative to
	// the working directory, replacing what was there.
	Write = "write"
	// Spawn starts a detached grandchild (double fork, setsid, stdio on
	// /dev/null) that appends a line to the file argv[1] every 100 ms,
	// forever. Once the file has a line, Spawn prints "started\n" and
	// sleeps forever.
	Spawn = "spawn"
	// Detach starts a detached grandchild as Spawn does, writing to the
	// file argv[1], and once the file has a line prints "detached\n" and
	// exits: the grandchild is the session's now, not a command's.
	Detach = "detach"
	// Procs prints one line for each live process of the sandbox (of the
	// sandbox user; zombies aside) other than itself, and nothing when it is
	// alone.
	Procs = "procs"
	// Flood writes argv[1] bytes of 'o' to stdout and as many of 'e' to
	// stderr, alternating argv[2] bytes to each (argv[2] divides argv[1]),
	// so that a runtime that reads one stream to its end before the other
	// deadlocks.
	Flood = "flood"
	// Alloc allocates argv[1] MiB, writing to every page, then prints
	// "allocated".
	Alloc = "alloc"
	// ForkBomb prints "forking\n", then every process forks forever,
	// retrying when fork fails.
	ForkBomb = "forkbomb"
	// StopStorm prints "storming\n", then sends SIGSTOP to every process
	// it may signal (kill(-1, SIGSTOP)), as fast as it can, forever: a
	// kill that runs as the sandbox user is stopped before it acts.
	StopStorm = "stopstorm"
	// SpawnStorm prints "spawning\n" and waits forever, while 16 detached
	// chains (each process in a session of its own, stdio on /dev/null)
	// spawn without end: each process of a chain starts its successor and
	// exits, so the pids change all the time and no list of pids taken
	// once holds them all; a spawn that fails is retried.
	SpawnStorm = "spawnstorm"
)

// Scenarios lists every scenario; a Harness has a program for each or says
// why it cannot.
var Scenarios = []string{Echo, Cat, Env, Write, Spawn, Detach, Procs, Flood, Alloc, ForkBomb, StopStorm, SpawnStorm}

// Harness is what the suite needs from a runtime's tests.
type Harness struct {
	// Language is the language of Scripts. Each script runs as execute_code
	// runs code: stored at Language.CodeFile in the workspace, started with
	// Language.CodeCommand, the scenario's arguments appended.
	Language sandbox.Language
	// Scripts holds the program of each scenario, in Language.
	Scripts map[string]string
	// Unsupported names the scenarios the runtime cannot run, with why;
	// the cases that need one are skipped with that reason. Every scenario
	// is in exactly one of Scripts and Unsupported.
	Unsupported map[string]string
	// New makes a fresh sandbox and its workspace from the runtime's usual
	// spec, changed by tweak when it is not nil. It fails t if it cannot,
	// and removes both when t ends, whether the test failed or not.
	New func(t *testing.T, tweak func(*sandbox.Spec)) (sandbox.Sandbox, *sandbox.Workspace)
}

// Limits the suite works with.
const (
	// slack is how much longer than its timeout a command may take before
	// the suite calls it hung. Only a hang exceeds it: it is no measure of
	// speed, the machine may be busy.
	slack = 20 * time.Second
	// plainTimeout is the timeout of commands that end on their own.
	plainTimeout = 60 * time.Second
	// ticksFile is where Spawn's grandchild writes.
	ticksFile = "ticks.txt"
)

// Run runs the suite against the runtime of h, each case in a subtest with
// a fresh sandbox.
func Run(t *testing.T, h Harness) {
	for _, name := range Scenarios {
		_, script := h.Scripts[name]
		_, unsupported := h.Unsupported[name]
		if script == unsupported {
			t.Fatalf("sandboxtest: scenario %q must be in exactly one of Harness.Scripts and Harness.Unsupported", name)
		}
	}
	cases := []struct {
		name  string
		needs []string
		run   func(t *testing.T, h Harness)
	}{
		{"OutputAndExitCode", []string{Echo}, testOutputAndExitCode},
		{"NonZeroExitCode", []string{Echo}, testNonZeroExitCode},
		{"Stdin", []string{Cat}, testStdin},
		{"Env", []string{Env}, testEnv},
		{"WorkingDirectory", []string{Write}, testWorkingDirectory},
		{"FilesSharedWithHost", []string{Write, Cat}, testFilesSharedWithHost},
		{"TimeoutKillsProcessTree", []string{Spawn, Procs, Echo}, testTimeoutKillsTree},
		{"CancelKillsProcessTree", []string{Spawn, Procs, Echo}, testCancelKillsTree},
		{"KillSparesOtherProcesses", []string{Detach, Spawn, Echo}, testKillSparesOthers},
		{"OutputCap", []string{Flood}, testOutputCap},
		{"MemoryLimit", []string{Alloc, Echo}, testMemoryLimit},
		{"PidsLimit", []string{ForkBomb, Procs, Echo}, testPidsLimit},
		{"StopStormEndsAtTimeout", []string{StopStorm, Procs, Echo}, testStopStorm},
		{"SpawnStormEndsAtTimeout", []string{SpawnStorm, Procs, Echo}, testSpawnStorm},
		{"ProgramNotFound", []string{Echo}, testProgramNotFound},
		{"Close", []string{Echo}, testClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, name := range c.needs {
				if why, ok := h.Unsupported[name]; ok {
					t.Skipf("the runtime cannot run scenario %q: %s", name, why)
				}
			}
			c.run(t, h)
		})
	}
}

// env is one test's sandbox.
type env struct {
	t  *testing.T
	h  Harness
	sb sandbox.Sandbox
	ws *sandbox.Workspace
}

func newEnv(t *testing.T, h Harness, tweak func(*sandbox.Spec)) *env {
	t.Helper()
	sb, ws := h.New(t, tweak)
	return &env{t: t, h: h, sb: sb, ws: ws}
}

// proc stores the program of scenario in the workspace and returns the
// process that runs it with args, with a timeout that only a hang reaches.
func (e *env) proc(scenario string, args ...string) sandbox.Process {
	e.t.Helper()
	file, _ := e.h.Language.CodeFile(scenario)
	if _, err := e.ws.WriteFile(file, []byte(e.h.Scripts[scenario]), false); err != nil {
		e.t.Fatalf("store the %s script: %v", scenario, err)
	}
	return sandbox.Process{
		Args:        append(e.h.Language.CodeCommand(file), args...),
		Dir:         sandbox.WorkspaceDir,
		Timeout:     plainTimeout,
		OutputLimit: 1 << 20,
	}
}

// execCtx runs p and fails the test if Exec has not returned within
// bound: the runtime hung. (Exec is left running; the sandbox's cleanup
// ends it.)
func (e *env) execCtx(ctx context.Context, p sandbox.Process, bound time.Duration) (sandbox.Result, error) {
	e.t.Helper()
	type outcome struct {
		res sandbox.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := e.sb.Exec(ctx, p)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(bound):
		e.t.Fatalf("Exec(%q) has not returned after %v: it hangs", p.Args, bound)
		return sandbox.Result{}, nil
	}
}

// exec runs p, failing the test if Exec fails or hangs.
func (e *env) exec(p sandbox.Process) sandbox.Result {
	e.t.Helper()
	res, err := e.execCtx(context.Background(), p, p.Timeout+slack)
	if err != nil {
		e.t.Fatalf("Exec(%q): %v", p.Args, err)
	}
	return res
}

// assertWorks runs a plain command: the sandbox still serves.
func (e *env) assertWorks(after string) {
	e.t.Helper()
	res := e.exec(e.proc(Echo, "still here", "", "0"))
	if res.ExitCode != 0 || string(res.Stdout) != "still here" || res.TimedOut || res.OOMKilled {
		e.t.Fatalf("after %s, a plain command gave exit %d, stdout %q, stderr %q, timedOut %v, oomKilled %v",
			after, res.ExitCode, res.Stdout, res.Stderr, res.TimedOut, res.OOMKilled)
	}
}

// assertAlone fails unless no process of the sandbox is left but Procs.
func (e *env) assertAlone(after string) {
	e.t.Helper()
	res := e.exec(e.proc(Procs))
	if res.ExitCode != 0 || len(res.Stdout) > 0 {
		e.t.Errorf("after %s, processes are left in the sandbox (exit %d):\n%s%s", after, res.ExitCode, res.Stdout, res.Stderr)
	}
}

// hostSize is the size of a workspace file seen from the host, -1 when it
// does not exist.
func (e *env) hostSize(rel string) int64 {
	info, err := os.Stat(filepath.Join(e.ws.Dir(), rel))
	if err != nil {
		return -1
	}
	return info.Size()
}

// assertTicksStopped fails unless Spawn's grandchild wrote and then
// stopped writing: it was killed.
func (e *env) assertTicksStopped(after string) {
	e.t.Helper()
	before := e.hostSize(ticksFile)
	if before <= 0 {
		e.t.Fatalf("after %s, %s is empty or missing: the grandchild never ran", after, ticksFile)
	}
	time.Sleep(700 * time.Millisecond) // 7 ticks of a grandchild still alive
	if now := e.hostSize(ticksFile); now != before {
		e.t.Errorf("after %s, %s still grows (%d bytes, then %d): the detached grandchild survived", after, ticksFile, before, now)
	}
}

func testOutputAndExitCode(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	const out, errText = "out line 1\nout line 2\n", "err line\n"
	res := e.exec(e.proc(Echo, out, errText, "0"))
	if string(res.Stdout) != out || string(res.Stderr) != errText || res.ExitCode != 0 {
		t.Fatalf("got exit %d, stdout %q, stderr %q; want exit 0, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr, out, errText)
	}
	if res.StdoutBytes != int64(len(out)) || res.StderrBytes != int64(len(errText)) || res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("counted %d/%d bytes, truncated %v/%v; want %d/%d, not truncated",
			res.StdoutBytes, res.StderrBytes, res.StdoutTruncated, res.StderrTruncated, len(out), len(errText))
	}
	if res.TimedOut || res.OOMKilled || res.Duration <= 0 {
		t.Errorf("timedOut %v, oomKilled %v, duration %v", res.TimedOut, res.OOMKilled, res.Duration)
	}
	if id := e.sb.ID(); strings.ContainsAny(id, " \n") {
		t.Errorf("ID() = %q", id)
	}
}

func testNonZeroExitCode(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	for _, code := range []int{1, 42} {
		res := e.exec(e.proc(Echo, "", "failing", strconv.Itoa(code)))
		if res.ExitCode != code || string(res.Stderr) != "failing" || res.TimedOut || res.OOMKilled {
			t.Errorf("exit %d: got exit %d, stderr %q, timedOut %v, oomKilled %v", code, res.ExitCode, res.Stderr, res.TimedOut, res.OOMKilled)
		}
	}
}

func testStdin(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	// More than any pipe holds, every byte value: stdin is fed while
	// stdout is read.
	in := make([]byte, 1<<20)
	for i := range in {
		in[i] = byte(i * 7)
	}
	p := e.proc(Cat)
	p.Stdin = in
	p.OutputLimit = 2 << 20
	res := e.exec(p)
	if res.ExitCode != 0 || !bytes.Equal(res.Stdout, in) {
		t.Fatalf("cat of %d bytes of stdin: exit %d, %d bytes out (equal: %v), stderr %q",
			len(in), res.ExitCode, len(res.Stdout), bytes.Equal(res.Stdout, in), res.Stderr)
	}
	// No stdin reads as empty, at once.
	res = e.exec(e.proc(Cat))
	if res.ExitCode != 0 || len(res.Stdout) != 0 || res.TimedOut {
		t.Errorf("cat with no stdin: exit %d, stdout %q, timedOut %v", res.ExitCode, res.Stdout, res.TimedOut)
	}
}

func testEnv(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	for name, want := range map[string]string{"CB_GREETING": "hello, sandbox", "CB_EQUALS": "a=b=c"} {
		p := e.proc(Env, name)
		p.Env = []string{"CB_GREETING=hello, sandbox", "CB_EQUALS=a=b=c"}
		res := e.exec(p)
		if res.ExitCode != 0 || string(res.Stdout) != want {
			t.Errorf("$%s: exit %d, stdout %q, stderr %q; want %q", name, res.ExitCode, res.Stdout, res.Stderr, want)
		}
	}
	// One command's environment does not reach the next.
	res := e.exec(e.proc(Env, "CB_GREETING"))
	if res.ExitCode != 3 {
		t.Errorf("$CB_GREETING of an earlier command is still set: exit %d, stdout %q", res.ExitCode, res.Stdout)
	}
}

func testWorkingDirectory(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	dir, err := e.ws.MkdirAll("sub/dir")
	if err != nil {
		t.Fatal(err)
	}
	p := e.proc(Write, "here.txt", "written in sub/dir")
	p.Dir = dir
	if res := e.exec(p); res.ExitCode != 0 {
		t.Fatalf("write in %s: exit %d, stderr %q", dir, res.ExitCode, res.Stderr)
	}
	got, err := os.ReadFile(filepath.Join(e.ws.Dir(), "sub", "dir", "here.txt"))
	if err != nil || string(got) != "written in sub/dir" {
		t.Errorf("sub/dir/here.txt = %q, %v: the working directory was not %s", got, err, dir)
	}
	if e.hostSize("here.txt") >= 0 {
		t.Errorf("here.txt landed at the top of the workspace, not in %s", dir)
	}
}

func testFilesSharedWithHost(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	write := func(rel, text string) {
		t.Helper()
		if res := e.exec(e.proc(Write, rel, text)); res.ExitCode != 0 {
			t.Fatalf("sandbox write of %s: exit %d, stderr %q", rel, res.ExitCode, res.Stderr)
		}
	}
	cat := func(rel string) string {
		t.Helper()
		res := e.exec(e.proc(Cat, rel))
		if res.ExitCode != 0 {
			t.Fatalf("sandbox read of %s: exit %d, stderr %q", rel, res.ExitCode, res.Stderr)
		}
		return string(res.Stdout)
	}
	hostRead := func(rel string) string {
		t.Helper()
		got, err := e.ws.ReadFile(rel, 1<<20)
		if err != nil {
			t.Fatalf("host read of %s: %v", rel, err)
		}
		return string(got)
	}

	// Sandbox to host.
	write("from-sandbox.txt", "made in the sandbox")
	if got := hostRead("from-sandbox.txt"); got != "made in the sandbox" {
		t.Errorf("host sees %q", got)
	}
	if got, err := os.ReadFile(filepath.Join(e.ws.Dir(), "from-sandbox.txt")); err != nil || string(got) != "made in the sandbox" {
		t.Errorf("host folder holds %q, %v", got, err)
	}
	// Host to sandbox, in a folder the host made.
	if _, err := e.ws.WriteFile("host/from-host.txt", []byte("made on the host"), false); err != nil {
		t.Fatal(err)
	}
	if got := cat("host/from-host.txt"); got != "made on the host" {
		t.Errorf("sandbox sees %q", got)
	}
	// Each side can change what the other made.
	write("host/from-host.txt", "changed in the sandbox")
	write("host/new-in-host-folder.txt", "new")
	if got := hostRead("host/from-host.txt"); got != "changed in the sandbox" {
		t.Errorf("after the sandbox changed it, host sees %q", got)
	}
	if _, err := e.ws.WriteFile("from-sandbox.txt", []byte("changed on the host"), false); err != nil {
		t.Fatal(err)
	}
	if got := cat("from-sandbox.txt"); got != "changed on the host" {
		t.Errorf("after the host changed it, sandbox sees %q", got)
	}
}

func testTimeoutKillsTree(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	p := e.proc(Spawn, ticksFile)
	p.Timeout = 3 * time.Second
	res := e.exec(p)
	if !res.TimedOut {
		t.Fatalf("TimedOut is false (exit %d, stdout %q, stderr %q)", res.ExitCode, res.Stdout, res.Stderr)
	}
	if string(res.Stdout) != "started\n" {
		t.Errorf("stdout = %q; want the %q printed before the timeout (stderr %q)", res.Stdout, "started\n", res.Stderr)
	}
	if res.OOMKilled {
		t.Error("OOMKilled on a timeout")
	}
	e.assertTicksStopped("the timeout")
	e.assertAlone("the timeout")
	e.assertWorks("a timeout")
}

// testKillSparesOthers kills a command whose tree is detached, while a
// process an earlier command left running (detached too) lives on: a kill
// reaches its own command's processes, all of them, and no other.
func testKillSparesOthers(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	const kept = "kept.txt"
	res := e.exec(e.proc(Detach, kept))
	if res.ExitCode != 0 || string(res.Stdout) != "detached\n" || res.TimedOut {
		t.Fatalf("detach: exit %d, stdout %q, stderr %q, timedOut %v", res.ExitCode, res.Stdout, res.Stderr, res.TimedOut)
	}
	p := e.proc(Spawn, ticksFile)
	p.Timeout = 3 * time.Second
	if res := e.exec(p); !res.TimedOut {
		t.Fatalf("spawn: TimedOut is false (exit %d, stdout %q, stderr %q)", res.ExitCode, res.Stdout, res.Stderr)
	}
	e.assertTicksStopped("the timeout")
	before := e.hostSize(kept)
	time.Sleep(700 * time.Millisecond)
	if now := e.hostSize(kept); now <= before {
		t.Errorf("%s stopped growing (%d bytes, then %d) when another command was killed: the kill reached beyond its command", kept, before, now)
	}
	e.assertWorks("a kill beside a detached process")
}

func testCancelKillsTree(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := e.proc(Spawn, ticksFile)
	p.Timeout = 10 * time.Minute // not what ends it
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		defer cancel()
		deadline := time.After(plainTimeout)
		for e.hostSize(ticksFile) <= 0 {
			select {
			case <-ended:
				return
			case <-deadline:
				return // cancel anyway; the checks below say the grandchild never ran
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	res, err := e.execCtx(ctx, p, plainTimeout+slack)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Exec after cancel: error %v; want one wrapping context.Canceled (exit %d, stdout %q, stderr %q)",
			err, res.ExitCode, res.Stdout, res.Stderr)
	} else if want := "command cancelled: context canceled"; err.Error() != want {
		t.Errorf("Exec after cancel: error %q; want %q, as clients are told", err, want)
	}
	if res.TimedOut {
		t.Error("TimedOut after a cancel")
	}
	e.assertTicksStopped("the cancel")
	e.assertAlone("the cancel")

	// A context that ended before Exec: nothing runs.
	ended2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	p = e.proc(Write, "never.txt", "ran")
	if _, err := e.execCtx(ended2, p, p.Timeout+slack); !errors.Is(err, context.Canceled) {
		t.Errorf("Exec with a cancelled context: error %v; want one wrapping context.Canceled", err)
	} else if want := "command cancelled before it started: context canceled"; err.Error() != want {
		t.Errorf("Exec with a cancelled context: error %q; want %q, as clients are told", err, want)
	}
	if e.hostSize("never.txt") >= 0 {
		t.Error("Exec with a cancelled context ran the command")
	}
	e.assertWorks("a cancel")
}

func testOutputCap(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	const total, chunk, limit = 5 << 20, 256 << 10, 64 << 10
	p := e.proc(Flood, strconv.Itoa(total), strconv.Itoa(chunk))
	p.OutputLimit = limit
	res := e.exec(p)
	if res.TimedOut {
		t.Fatal("the flood timed out: stdout and stderr are not drained at the same time")
	}
	if res.ExitCode != 0 {
		t.Fatalf("flood: exit %d, stderr starts %q", res.ExitCode, res.Stderr[:min(len(res.Stderr), 200)])
	}
	for _, s := range []struct {
		name      string
		kept      []byte
		total     int64
		truncated bool
		fill      byte
	}{
		{"stdout", res.Stdout, res.StdoutBytes, res.StdoutTruncated, 'o'},
		{"stderr", res.Stderr, res.StderrBytes, res.StderrTruncated, 'e'},
	} {
		if len(s.kept) != limit || !bytes.Equal(s.kept, bytes.Repeat([]byte{s.fill}, limit)) {
			t.Errorf("%s: kept %d bytes (want exactly %d of %q)", s.name, len(s.kept), limit, s.fill)
		}
		if s.total != total || !s.truncated {
			t.Errorf("%s: counted %d bytes, truncated %v; want %d, true", s.name, s.total, s.truncated, total)
		}
	}
}

func testMemoryLimit(t *testing.T, h Harness) {
	e := newEnv(t, h, func(s *sandbox.Spec) { s.MemoryLimitMB = 64 })
	res := e.exec(e.proc(Alloc, "8"))
	if res.ExitCode != 0 || !strings.HasPrefix(string(res.Stdout), "allocated") || res.OOMKilled {
		t.Fatalf("8 MiB under a 64 MiB limit: exit %d, stdout %q, stderr %q, oomKilled %v", res.ExitCode, res.Stdout, res.Stderr, res.OOMKilled)
	}
	// Twice: each kill is reported, not only the first.
	for i := 1; i <= 2; i++ {
		res := e.exec(e.proc(Alloc, "256"))
		if !res.OOMKilled || res.ExitCode == 0 || res.TimedOut || strings.Contains(string(res.Stdout), "allocated") {
			t.Fatalf("256 MiB under a 64 MiB limit, try %d: oomKilled %v, exit %d, timedOut %v, stdout %q, stderr %q",
				i, res.OOMKilled, res.ExitCode, res.TimedOut, res.Stdout, res.Stderr)
		}
	}
	e.assertWorks("an out-of-memory kill")
}

func testPidsLimit(t *testing.T, h Harness) {
	e := newEnv(t, h, func(s *sandbox.Spec) { s.PidsLimit = 64 })
	p := e.proc(ForkBomb)
	p.Timeout = 5 * time.Second
	res := e.exec(p)
	if !strings.HasPrefix(string(res.Stdout), "forking") {
		t.Errorf("the fork bomb did not start: exit %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	e.assertAlone("a fork bomb")
	e.assertWorks("a fork bomb")
}

// stormBound is how long after its timeout (or cancel) a storm's Exec may
// take to return: the kill, its check and the output's grace, on a busy
// machine. Without a kill that the program cannot stop, Exec never returns.
const stormBound = 20 * time.Second

func testStopStorm(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	p := e.stormTimesOut("stop storm", StopStorm, "storming\n", 3*time.Second)

	// A cancel (the session closing) ends it as well.
	ctx, cancel := context.WithCancel(context.Background())
	p.Timeout = 10 * time.Minute
	time.AfterFunc(2*time.Second, cancel)
	start := time.Now()
	if _, err := e.execCtx(ctx, p, 2*time.Second+stormBound); !errors.Is(err, context.Canceled) {
		t.Errorf("Exec of a stop storm, cancelled: error %v; want one wrapping context.Canceled", err)
	}
	t.Logf("a stop storm cancelled after 2s returned after %v", time.Since(start).Round(time.Millisecond))
	e.assertAlone("a stop storm's cancel")
	e.assertWorks("a stop storm's cancel")
}

func testSpawnStorm(t *testing.T, h Harness) {
	newEnv(t, h, nil).stormTimesOut("spawn storm", SpawnStorm, "spawning\n", 2*time.Second)
}

// stormTimesOut runs a storm scenario that prints banner, with timeout,
// and checks that it ends at its timeout with nothing of it left and the
// sandbox still working. It returns the process, for more runs.
func (e *env) stormTimesOut(name, scenario, banner string, timeout time.Duration) sandbox.Process {
	e.t.Helper()
	p := e.proc(scenario)
	p.Timeout = timeout
	start := time.Now()
	res, err := e.execCtx(context.Background(), p, p.Timeout+stormBound)
	e.t.Logf("a %s with a %v timeout returned after %v", name, p.Timeout, time.Since(start).Round(time.Millisecond))
	if err != nil {
		e.t.Fatalf("Exec: %v", err)
	}
	if !res.TimedOut || string(res.Stdout) != banner {
		e.t.Errorf("timedOut %v, exit %d, stdout %q, stderr %q; want a timeout after %q", res.TimedOut, res.ExitCode, res.Stdout, res.Stderr, banner)
	}
	e.assertAlone("a " + name + "'s timeout")
	e.assertWorks("a " + name + "'s timeout")
	return p
}

func testProgramNotFound(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	if _, err := e.ws.WriteFile("not-executable.txt", []byte("just text\n"), false); err != nil {
		t.Fatal(err)
	}
	for _, prog := range []string{"codebeaker-no-such-program", sandbox.WorkspaceDir + "/not-executable.txt", sandbox.WorkspaceDir + "/missing"} {
		p := sandbox.Process{Args: []string{prog, "arg"}, Dir: sandbox.WorkspaceDir, Timeout: plainTimeout, OutputLimit: 1 << 20}
		res, err := e.execCtx(context.Background(), p, p.Timeout+slack)
		if !errors.Is(err, sandbox.ErrCannotStart) {
			t.Errorf("Exec(%s): error %v (exit %d, stdout %q); want one wrapping sandbox.ErrCannotStart", prog, err, res.ExitCode, res.Stdout)
		}
	}
	e.assertWorks("programs that could not start")
}

func testClose(t *testing.T, h Harness) {
	e := newEnv(t, h, nil)
	e.assertWorks("creation")
	ctx := context.Background()
	if err := e.sb.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.sb.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	p := e.proc(Echo, "after close", "", "0")
	res, err := e.execCtx(ctx, p, p.Timeout+slack)
	if err == nil {
		t.Errorf("Exec after Close succeeded: exit %d, stdout %q", res.ExitCode, res.Stdout)
	}
}

// pythonTicker starts Spawn's and Detach's detached grandchild, writing to
// argv[1], and returns once the file has a line.
const pythonTicker = `import os, sys, time
path = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        while True:
            with open(path, "a") as f:
                f.write("tick\n")
            time.sleep(0.1)
    os._exit(0)
os.wait()
while not os.path.exists(path) or os.path.getsize(path) == 0:
    time.sleep(0.01)
`

// PythonScripts are the suite's scenarios in Python, for runtimes whose
// sandboxes have python3 (the Docker runtime's python image).
var PythonScripts = map[string]string{
	Echo: `import sys
sys.stdout.write(sys.argv[1])
sys.stdout.flush()
sys.stderr.write(sys.argv[2])
sys.stderr.flush()
sys.exit(int(sys.argv[3]))
`,
	Cat: `import shutil, sys
src = open(sys.argv[1], "rb") if len(sys.argv) > 1 else sys.stdin.buffer
shutil.copyfileobj(src, sys.stdout.buffer)
`,
	Env: `import os, sys
value = os.environ.get(sys.argv[1])
if value is None:
    sys.exit(3)
sys.stdout.write(value)
`,
	Write: `import sys
with open(sys.argv[1], "w") as f:
    f.write(sys.argv[2])
`,
	Spawn:  pythonTicker + "print(\"started\", flush=True)\ntime.sleep(3600)\n",
	Detach: pythonTicker + "print(\"detached\", flush=True)\n",
	Procs: `import os
me, uid = os.getpid(), os.getuid()
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    if int(pid) == me:
        continue
    try:
        if os.stat("/proc/" + pid).st_uid != uid:
            continue
        with open("/proc/" + pid + "/stat") as f:
            stat = f.read()
        if stat[stat.rindex(")") + 2] in "ZX":
            continue
        with open("/proc/" + pid + "/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        continue  # ended while we looked
    print(pid, cmd)
`,
	Flood: `import os, sys
total, chunk = int(sys.argv[1]), int(sys.argv[2])
out, err = b"o" * chunk, b"e" * chunk
def write(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
for _ in range(total // chunk):
    write(1, out)
    write(2, err)
`,
	Alloc: `import sys
held = b"x" * (int(sys.argv[1]) << 20)
print("allocated", len(held))
`,
	ForkBomb: `import os, time
print("forking", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
`,
	StopStorm: `import os, signal
print("storming", flush=True)
while True:
    try:
        os.kill(-1, signal.SIGSTOP)
    except OSError:
        pass
`,
	SpawnStorm: `import os, time
def fork():
    while True:
        try:
            return os.fork()
        except OSError:
            time.sleep(0.001)
print("spawning", flush=True)
for _ in range(16):
    if fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        while True:  # a chain: the child goes on, the parent leaves
            os.setsid()
            if fork() > 0:
                os._exit(0)
time.sleep(3600)
`,
}
