package proc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

func TestOutputRing(t *testing.T) {
	o := newOutput(10, 4)
	var all []byte
	for i, w := range []string{"abc", "defghij", "klmnopqrstuvwxyz0123", "4", "56789"} {
		o.write([]byte(w))
		all = append(all, w...)
		first := max(0, int64(len(all))-10)
		if o.total != int64(len(all)) || o.first() != first {
			t.Fatalf("write %d: total %d first %d, want %d %d", i, o.total, o.first(), len(all), first)
		}
		for off := first; off <= int64(len(all)); off++ {
			buf := make([]byte, 20)
			n := o.read(off, buf)
			if got, want := string(buf[:n]), string(all[off:]); got != want {
				t.Fatalf("after write %d, read at %d: %q, want %q", i, off, got, want)
			}
		}
	}
	if string(o.head) != "abcd" {
		t.Fatalf("head %q", o.head)
	}
	if sum := sha256.Sum256(all); !bytes.Equal(o.sum.Sum(nil), sum[:]) {
		t.Fatal("digest is not of every byte")
	}
}

// hostStart runs processes on the host, in a process group of their own
// (the tree the tests kill), as a runtime's StartFunc does in its sandbox.
func hostStart(spec sandbox.ProcessSpec) (*Started, error) {
	cmd := exec.Command(spec.Args[0], spec.Args[1:]...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	st := &Started{}
	if spec.PTY != nil {
		master, slave, err := OpenPTY(*spec.PTY)
		if err != nil {
			return nil, err
		}
		defer slave.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		st.Stdout, st.Terminal = master, master
	} else {
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		outR, outW, _ := os.Pipe()
		errR, errW, _ := os.Pipe()
		cmd.Stdout, cmd.Stderr = outW, errW
		defer outW.Close()
		defer errW.Close()
		st.Stdin, st.Stdout, st.Stderr = in, outR, errR
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrCannotStart, err)
	}
	pid := cmd.Process.Pid
	st.Wait = func() (Exit, error) {
		err := cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}, nil
		}
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			return Exit{}, err
		}
		return Exit{Code: ws.ExitStatus()}, nil
	}
	st.Signal = func(sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
	st.Kill = func() error { return syscall.Kill(-pid, syscall.SIGKILL) }
	return st, nil
}

func newTestTable(t *testing.T, lim Limits) *Table {
	tab := NewTable(hostStart, lim)
	t.Cleanup(tab.Close)
	return tab
}

var nextID int

func start(t *testing.T, tab *Table, spec sandbox.ProcessSpec) string {
	t.Helper()
	nextID++
	spec.ID = fmt.Sprint("p", nextID)
	if spec.Retain == 0 {
		spec.Retain = 1 << 20
	}
	if _, err := tab.StartProcess(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	return spec.ID
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func wait(t *testing.T, tab *Table, id string) sandbox.ProcessState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := tab.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	return st
}

func TestReadFromOffsets(t *testing.T) {
	tab := newTestTable(t, Limits{})
	id := start(t, tab, sandbox.ProcessSpec{Args: sh("printf 0123456789; printf err >&2; exit 3"), Retain: 6, Head: 4})
	st := wait(t, tab, id)
	if st.Running || st.ExitCode != 3 || st.Output[0].Bytes != 10 || st.Output[0].FirstRetained != 4 || string(st.Output[0].Head) != "0123" {
		t.Fatalf("state %+v", st)
	}
	if sum := sha256.Sum256([]byte("0123456789")); !bytes.Equal(st.Output[0].SHA256, sum[:]) {
		t.Fatal("stdout's digest")
	}
	for _, c := range []struct {
		offset      int64
		limit       int
		data        string
		at          int64
		eof         bool
		description string
	}{
		{0, 0, "456789", 4, true, "below the retained: from the first retained"},
		{6, 0, "6789", 6, true, "from inside"},
		{6, 2, "67", 6, false, "limited"},
		{10, 0, "", 10, true, "at the end"},
	} {
		out, err := tab.ReadOutput(context.Background(), id, sandbox.Stdout, c.offset, c.limit)
		if err != nil || string(out.Data) != c.data || out.Offset != c.at || out.EOF != c.eof || out.FirstRetained != 4 {
			t.Errorf("%s: %+v %v", c.description, out, err)
		}
	}
	if out, _ := tab.ReadOutput(context.Background(), id, sandbox.Stderr, 0, 0); string(out.Data) != "err" {
		t.Errorf("stderr %q", out.Data)
	}
	if _, err := tab.ReadOutput(context.Background(), "nope", sandbox.Stdout, 0, 0); !errors.Is(err, sandbox.ErrNoProcess) {
		t.Errorf("unknown id: %v", err)
	}
	if err := tab.Signal(context.Background(), id, syscall.SIGTERM); !errors.Is(err, sandbox.ErrProcessEnded) {
		t.Errorf("signal after the end: %v", err)
	}
}

func TestFollowLive(t *testing.T) {
	tab := newTestTable(t, Limits{})
	id := start(t, tab, sandbox.ProcessSpec{Args: sh("echo first; sleep 1; echo second >&2; echo third")})
	began := time.Now()
	var firstAt time.Duration
	var got [2]string
	var next [2]int64
	st, err := tab.Follow(context.Background(), id, [2]int64{}, func(c sandbox.Chunk) error {
		if firstAt == 0 {
			firstAt = time.Since(began)
		}
		if c.Offset != next[c.Stream] || c.Dropped != 0 {
			t.Errorf("chunk at %d (dropped %d), want %d", c.Offset, c.Dropped, next[c.Stream])
		}
		next[c.Stream] += int64(len(c.Data))
		got[c.Stream] += string(c.Data)
		return nil
	})
	total := time.Since(began)
	if err != nil || st.Running || got[0] != "first\nthird\n" || got[1] != "second\n" {
		t.Fatalf("follow: %v %+v %q", err, st, got)
	}
	if total-firstAt < 700*time.Millisecond {
		t.Fatalf("the first chunk came %s after the start, the end %s: not live", firstAt, total)
	}
}

func TestFollowBehindTheRingIsToldWhatItMissed(t *testing.T) {
	tab := newTestTable(t, Limits{})
	id := start(t, tab, sandbox.ProcessSpec{Args: sh("head -c 1000000 /dev/zero"), Retain: 1000})
	wait(t, tab, id)
	var dropped, data int64
	_, err := tab.Follow(context.Background(), id, [2]int64{10, 0}, func(c sandbox.Chunk) error {
		if c.Dropped > 0 {
			if c.Offset != 10 {
				t.Errorf("gap at %d", c.Offset)
			}
			dropped += c.Dropped
		}
		data += int64(len(c.Data))
		return nil
	})
	if err != nil || dropped != 999000-10 || data != 1000 {
		t.Fatalf("dropped %d, data %d, %v", dropped, data, err)
	}
}

func TestFloodDoesNotWaitForReaders(t *testing.T) {
	tab := newTestTable(t, Limits{})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	began := time.Now()
	id := start(t, tab, sandbox.ProcessSpec{Args: sh("head -c 120000000 /dev/zero"), Retain: 1 << 20})
	// A follower that takes its time: the process must not wait for it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tab.Follow(ctx, id, [2]int64{}, func(sandbox.Chunk) error { time.Sleep(100 * time.Millisecond); return nil })
	st := wait(t, tab, id)
	took := time.Since(began)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("120 MB flood: %s, heap %d -> %d KB", took, before.HeapInuse>>10, after.HeapInuse>>10)
	if st.Output[0].Bytes != 120000000 || st.Output[0].FirstRetained != 120000000-(1<<20) {
		t.Fatalf("state %+v", st.Output[0])
	}
	if took > 20*time.Second {
		t.Fatalf("the flood took %s: the process waited for its follower", took)
	}
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 32<<20 {
		t.Fatalf("heap grew %d MB for a 1 MiB ring", grown>>20)
	}
}

func TestInputSignalsTimeoutAndLimits(t *testing.T) {
	tab := newTestTable(t, Limits{MaxProcesses: 2, MaxEnded: 1})
	cat := start(t, tab, sandbox.ProcessSpec{Args: []string{"cat"}, Stdin: []byte("a")})
	ctx := context.Background()
	if err := tab.WriteInput(ctx, cat, []byte("b"), false); err != nil {
		t.Fatal(err)
	}
	if err := tab.WriteInput(ctx, cat, []byte("c"), true); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, tab, cat); st.ExitCode != 0 {
		t.Fatalf("cat %+v", st)
	}
	if out, _ := tab.ReadOutput(ctx, cat, sandbox.Stdout, 0, 0); string(out.Data) != "abc" {
		t.Fatalf("cat wrote %q", out.Data)
	}
	trap := start(t, tab, sandbox.ProcessSpec{Args: sh("trap 'echo got USR1; exit 7' USR1; while :; do sleep 0.05; done")})
	slow := start(t, tab, sandbox.ProcessSpec{Args: []string{"sleep", "100"}, Timeout: 200 * time.Millisecond})
	_, err := tab.StartProcess(ctx, sandbox.ProcessSpec{ID: "third", Args: []string{"true"}})
	if !errors.Is(err, sandbox.ErrTooManyProcesses) {
		t.Fatalf("a third process: %v", err)
	}
	if st := wait(t, tab, slow); !st.TimedOut || st.Signal != syscall.SIGKILL {
		t.Fatalf("timed out: %+v", st)
	}
	time.Sleep(100 * time.Millisecond) // the trap is set
	if err := tab.Signal(ctx, trap, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, tab, trap); st.ExitCode != 7 {
		t.Fatalf("after USR1: %+v", st)
	}
	// One ended process is kept: the oldest are forgotten.
	list, _ := tab.ListProcesses(ctx)
	if len(list) != 1 || list[0].ID != trap {
		t.Fatalf("kept %+v", list)
	}
	if _, err := tab.ReadOutput(ctx, cat, sandbox.Stdout, 0, 0); !errors.Is(err, sandbox.ErrNoProcess) {
		t.Fatalf("a forgotten process: %v", err)
	}
}

func TestTerminal(t *testing.T) {
	tab := newTestTable(t, Limits{})
	ctx := context.Background()
	id := start(t, tab, sandbox.ProcessSpec{Args: sh("test -t 0 && test -t 1 && echo tty; read line; stty size; read line; stty size"), PTY: &sandbox.WinSize{Cols: 80, Rows: 24}})
	if err := tab.WriteInput(ctx, id, []byte("go\n"), false); err != nil {
		t.Fatal(err)
	}
	readUntil := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := tab.ReadOutput(ctx, id, sandbox.Stdout, 0, 0)
			if strings.Contains(string(out.Data), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in %q", want, out.Data)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	readUntil("24 80")
	if err := tab.Resize(ctx, id, sandbox.WinSize{Cols: 100, Rows: 30}); err != nil {
		t.Fatal(err)
	}
	tab.WriteInput(ctx, id, []byte("again\n"), false)
	readUntil("30 100")
	st := wait(t, tab, id)
	if out, _ := tab.ReadOutput(ctx, id, sandbox.Stdout, 0, 0); !strings.Contains(string(out.Data), "tty\r\n") || st.ExitCode != 0 {
		t.Fatalf("%+v %q", st, out.Data)
	}
	cat := start(t, tab, sandbox.ProcessSpec{Args: []string{"cat"}})
	if err := tab.Resize(ctx, cat, sandbox.WinSize{Cols: 1, Rows: 1}); err == nil {
		t.Fatal("resized a process with no terminal")
	}
}
