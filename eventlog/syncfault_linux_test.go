//go:build linux && (amd64 || arm64)

package eventlog_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
	"github.com/codebeaker/codebeaker/projection"
)

const envSyncFaultChild = "CODEBEAKER_EVENTLOG_SYNCFAULT_CHILD"

// TestCommitWhoseSyncFails makes bbolt's fdatasync fail for real (a seccomp
// filter answers the syscall with EIO) in two places of a commit:
//
//   - the last one, after the meta page is written: bbolt's Commit fails,
//     yet every later transaction sees the batch. The appender gets an
//     error, but the chain must go on from the batch and OnCommit must have
//     seen it;
//   - the first one, before the meta page is written: nothing of the batch
//     is in the file, and the chain goes on from the event before it.
//
// Either way the log verifies afterwards and the projection fed by OnCommit
// equals one rebuilt from the file. The filter stays for the life of the
// process, so the test runs in a child process.
func TestCommitWhoseSyncFails(t *testing.T) {
	if os.Getenv(envSyncFaultChild) == "1" {
		syncFaultChild(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCommitWhoseSyncFails$", "-test.v")
	cmd.Env = append(os.Environ(), envSyncFaultChild+"=1")
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil:
		t.Fatalf("child: %v\n%s", err, out)
	case strings.Contains(string(out), "--- SKIP"):
		t.Skipf("child skipped:\n%s", out)
	case !strings.Contains(string(out), "--- PASS: TestCommitWhoseSyncFails"):
		t.Fatalf("the child did not run the test:\n%s", out)
	}
}

func syncFaultChild(t *testing.T) {
	fault, err := failFdatasync()
	if err != nil {
		t.Skipf("cannot intercept fdatasync with seccomp: %v", err)
	}
	l, live := eventlogtest.OpenLive(t)
	ctx := context.Background()
	created := func(session string) []eventlog.Record {
		return []eventlog.Record{
			rec(session, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python"}),
			rec(session, eventlog.SessionCreated, eventlog.SessionCreatedData{}),
		}
	}
	mustAppend := func(recs ...eventlog.Record) {
		t.Helper()
		if _, err := l.Append(ctx, recs...); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	lastSeq := func() uint64 {
		t.Helper()
		seq, err := l.LastSeq()
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	mustAppend(created("s1")...)

	// The meta page's fdatasync (the second of the commit) fails.
	fault.failAfter(1)
	if _, err := l.Append(ctx, created("s2")...); err == nil || errors.Is(err, eventlog.ErrFailed) {
		t.Fatalf("append whose meta page sync failed: err = %v, want a commit error that is not ErrFailed", err)
	}
	if n := fault.count(); n != 1 {
		t.Fatalf("%d fdatasyncs failed, want 1", n)
	}
	if seq := lastSeq(); seq != 4 {
		t.Fatalf("after a commit that failed in its meta page sync the log ends at %d, want 4 (bbolt shows the batch)", seq)
	}
	if _, ok := live.Get("s2"); !ok {
		t.Error("OnCommit did not see the batch that is in the file")
	}
	mustAppend(created("s3")...)

	// The data pages' fdatasync (the first of the commit) fails.
	fault.failAfter(0)
	if _, err := l.Append(ctx, created("s4")...); err == nil || errors.Is(err, eventlog.ErrFailed) {
		t.Fatalf("append whose data sync failed: err = %v, want a commit error that is not ErrFailed", err)
	}
	if n := fault.count(); n != 2 {
		t.Fatalf("%d fdatasyncs failed, want 2", n)
	}
	if seq := lastSeq(); seq != 6 {
		t.Fatalf("after a commit that failed before its meta page the log ends at %d, want 6", seq)
	}
	if _, ok := live.Get("s4"); ok {
		t.Error("OnCommit saw a batch that is not in the file")
	}
	mustAppend(rec("s1", eventlog.SessionClosing, eventlog.SessionClosingData{Reason: eventlog.ReasonClient}),
		rec("s1", eventlog.SessionClosed, eventlog.SessionClosedData{Reason: eventlog.ReasonClient}))
	mustAppend(created("s5")...)

	path := l.Path()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := eventlog.Verify(ctx, path, eventlog.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify after the failed commits: %v", err)
	}
	if v.Events != 10 {
		t.Errorf("verify found %d events, want 10", v.Events)
	}
	r, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rebuilt, err := projection.Rebuild(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := live.List(), rebuilt.List(); !reflect.DeepEqual(got, want) {
		t.Errorf("projection fed by OnCommit:\n%+v\nrebuilt from the file:\n%+v", got, want)
	}
}

// fdatasyncFault answers fdatasync calls of this process, which a seccomp
// filter hands to it: it lets them run, except one chosen with failAfter,
// which fails with EIO.
type fdatasyncFault struct {
	fd int // the filter's listener

	mu     sync.Mutex
	pass   int // calls to let run before failing one; < 0: fail none
	failed int // calls failed so far
}

// failAfter lets the next n fdatasync calls run and fails the one after.
func (f *fdatasyncFault) failAfter(n int) {
	f.mu.Lock()
	f.pass = n
	f.mu.Unlock()
}

func (f *fdatasyncFault) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// The kernel's struct seccomp_notif and struct seccomp_notif_resp.
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  struct {
		Nr   int32
		Arch uint32
		IP   uint64
		Args [6]uint64
	}
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// failFdatasync installs, on every thread of the process, a seccomp filter
// that hands each fdatasync to the returned fault's goroutine.
func failFdatasync() (*fdatasyncFault, error) {
	arch := map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]
	const (
		load = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: load, K: 4}, // seccomp_data.arch
		{Code: jeq, K: arch, Jf: 3},
		{Code: load, K: 0}, // seccomp_data.nr
		{Code: jeq, K: unix.SYS_FDATASYNC, Jf: 1},
		{Code: ret, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	runtime.LockOSThread() // no_new_privs is per thread; TSYNC spreads both
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER|unix.SECCOMP_FILTER_FLAG_TSYNC|unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
		uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return nil, errno
	}
	f := &fdatasyncFault{fd: int(fd), pass: -1}
	go f.serve()
	return f, nil
}

func (f *fdatasyncFault) serve() {
	for {
		var n seccompNotif
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(f.fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n))); errno != 0 {
			if errno == unix.EINTR || errno == unix.ENOENT {
				continue
			}
			panic("seccomp notification: " + errno.Error())
		}
		resp := seccompNotifResp{ID: n.ID, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
		f.mu.Lock()
		switch {
		case f.pass == 0:
			resp = seccompNotifResp{ID: n.ID, Error: -int32(unix.EIO)}
			f.failed++
			f.pass = -1
		case f.pass > 0:
			f.pass--
		}
		f.mu.Unlock()
		// ENOENT: the calling thread is gone; nothing to answer.
		unix.Syscall(unix.SYS_IOCTL, uintptr(f.fd), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&resp)))
	}
}
