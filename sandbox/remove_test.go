package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// deepTree makes a chain of depth folders named "a" under dir/name, with
// a file, a FIFO and a branch of two levels every 50 levels, and a symlink
// to outside halfway down: what a program can make in a second. It keeps
// two descriptors open at most, so it works under a low limit.
func deepTree(t *testing.T, dir, name string, depth int, outside string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range depth {
		if i%50 == 0 {
			f, err := unix.Openat(fd, "file", unix.O_CREAT|unix.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(f)
			if err := unix.Mkfifo("/proc/self/fd/"+strconv.Itoa(fd)+"/fifo", 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkdirat(fd, "branch", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkdirat(fd, "branch/b", 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if i == depth/2 {
			if err := unix.Symlinkat(outside, fd, "out"); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mkdirat(fd, "a", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, "a", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
}

// lowFileLimit lets the test open only a few hundred more descriptors, as
// if the server had spent the rest, and restores the limit after.
func lowFileLimit(t *testing.T) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(len(open) + 300)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// A folder tree far deeper than the descriptors the server may open is
// deleted whole, by delete_file and when the session's workspace goes,
// and nothing outside it is touched through the symlink in it.
func TestDeleteDeepTree(t *testing.T) {
	const depth = 3000
	ws, outside := newWorkspace(t)
	writeHost(t, filepath.Join(outside, "keep.txt"), "keep")
	deepTree(t, ws.Dir(), "deep", depth, outside)
	deepTree(t, ws.Dir(), "deep2", depth, outside)
	lowFileLimit(t)

	if _, err := ws.Delete("deep"); err != nil {
		t.Fatalf("Delete of a %d-level tree: %v", depth, err)
	}
	if _, err := os.Lstat(filepath.Join(ws.Dir(), "deep")); !os.IsNotExist(err) {
		t.Errorf("deep is still there after Delete (Lstat: %v)", err)
	}
	if names, _ := os.ReadDir(ws.Dir()); len(names) != 1 {
		t.Errorf("the workspace holds %v after Delete; want deep2 alone", names)
	}
	if err := ws.Remove(); err != nil {
		t.Fatalf("Remove of a workspace holding a %d-level tree: %v", depth, err)
	}
	if _, err := os.Lstat(ws.Dir()); !os.IsNotExist(err) {
		t.Errorf("the workspace is still there after Remove (Lstat: %v)", err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "keep.txt")); err != nil || string(b) != "keep" {
		t.Errorf("a file outside, behind a symlink in the tree, reads %q, %v after the removal", b, err)
	}
	if err := RemoveTree(ws.Dir()); err != nil {
		t.Errorf("RemoveTree of a missing folder: %v", err)
	}
}

// A folder that a program fills as fast as it can while it is deleted
// ends the delete all the same, deleted or with what happened: removal
// does not race the writer for ever.
func TestDeleteEndsWhileFilled(t *testing.T) {
	ws, _ := newWorkspace(t)
	dir := filepath.Join(ws.Dir(), "busy", "deeper")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(w)+"-"+strconv.Itoa(i)), nil, 0o644)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(200 * time.Millisecond) // a few thousand files first

	ended := make(chan error, 1)
	start := time.Now()
	go func() { _, err := ws.Delete("busy"); ended <- err }()
	select {
	case err := <-ended:
		t.Logf("Delete ended after %v: %v", time.Since(start).Round(time.Millisecond), err)
		if err != nil {
			wantPathError(t, "Delete(busy)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Delete of a folder being filled has not ended after 30s")
	}
}
