package sandbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newWorkspace opens a workspace in a fresh temporary folder, owned by the
// user running the test, next to a folder "outside" that no path may reach.
func newWorkspace(t *testing.T) (ws *Workspace, outside string) {
	t.Helper()
	base := t.TempDir()
	outside = filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	ws, err := OpenWorkspace(filepath.Join(base, "ws"), os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatalf("OpenWorkspace: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws, outside
}

// writeHost writes a file straight into a host folder, around Workspace.
func writeHost(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// wantPathError fails unless err is a *PathError; it returns its message.
func wantPathError(t *testing.T, what string, err error) string {
	t.Helper()
	var pe *PathError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: got error %v (%T), want a *PathError", what, err, err)
	}
	return pe.Msg
}

func TestRel(t *testing.T) {
	ok := map[string]string{
		"/workspace/a":     "a",
		"/workspace/a/b/":  "a/b",
		"a":                "a",
		"./a/../b":         "b",
		"a/./b//c":         "a/b/c",
		"/workspace":       ".",
		"/workspace/":      ".",
		".":                ".",
		"/workspace/a/../": ".",
	}
	for in, want := range ok {
		got, err := Rel(in)
		if err != nil || got != want {
			t.Errorf("Rel(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "../x", "/etc/passwd", "/workspacex/a", "/workspace/../etc", "a/../../x", "/", "a\x00b", ""} {
		got, err := Rel(in)
		if err == nil {
			t.Errorf("Rel(%q) = %q; want it refused", in, got)
			continue
		}
		wantPathError(t, "Rel("+strings.ReplaceAll(in, "\x00", `\x00`)+")", err)
	}
}

func TestDisplay(t *testing.T) {
	if got := Display("."); got != "/workspace" {
		t.Errorf(`Display(".") = %q`, got)
	}
	if got := Display("a/b"); got != "/workspace/a/b" {
		t.Errorf(`Display("a/b") = %q`, got)
	}
}

func TestWriteReadEveryByte(t *testing.T) {
	ws, _ := newWorkspace(t)
	data := make([]byte, 256*3)
	for i := range data {
		data[i] = byte(i)
	}
	shown, err := ws.WriteFile("/workspace/bytes.bin", data, false)
	if err != nil || shown != "/workspace/bytes.bin" {
		t.Fatalf("WriteFile = %q, %v", shown, err)
	}
	got, err := ws.ReadFile("bytes.bin", 1<<20)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(data))
	}
	onDisk, err := os.ReadFile(filepath.Join(ws.Dir(), "bytes.bin"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("host file differs from what was written (err %v)", err)
	}
}

func TestWriteReplacesAndAppends(t *testing.T) {
	ws, _ := newWorkspace(t)
	steps := []struct {
		data   string
		append bool
		want   string
	}{
		{"first line\n", true, "first line\n"}, // Append creates a missing file
		{"second\n", true, "first line\nsecond\n"},
		{"new", false, "new"}, // Create truncates
		{"", false, ""},
		{"x", true, "x"},
	}
	for i, s := range steps {
		if _, err := ws.WriteFile("log.txt", []byte(s.data), s.append); err != nil {
			t.Fatalf("step %d: WriteFile: %v", i, err)
		}
		got, err := ws.ReadFile("log.txt", 100)
		if err != nil || string(got) != s.want {
			t.Fatalf("step %d: file is %q (err %v), want %q", i, got, err, s.want)
		}
	}
}

func TestWriteMakesParents(t *testing.T) {
	ws, _ := newWorkspace(t)
	shown, err := ws.WriteFile("a/b/c/d.txt", []byte("deep"), false)
	if err != nil || shown != "/workspace/a/b/c/d.txt" {
		t.Fatalf("WriteFile = %q, %v", shown, err)
	}
	for _, dir := range []string{"a", "a/b", "a/b/c"} {
		info, err := os.Stat(filepath.Join(ws.Dir(), dir))
		if err != nil || !info.IsDir() {
			t.Errorf("folder %s not made (err %v)", dir, err)
		}
	}
	// A file standing where a parent folder should be is a client error.
	_, err = ws.WriteFile("a/b/c/d.txt/e", []byte("x"), false)
	wantPathError(t, "write under a file", err)
	_, err = ws.WriteFile("/workspace", []byte("x"), false)
	wantPathError(t, "write to the workspace itself", err)
}

func TestReadErrors(t *testing.T) {
	ws, _ := newWorkspace(t)
	_, err := ws.ReadFile("/workspace/missing.py", 100)
	if msg := wantPathError(t, "read missing", err); msg != "File not found: /workspace/missing.py" {
		t.Errorf("missing file message = %q", msg)
	}
	if _, err := ws.WriteFile("eleven.txt", []byte("0123456789A"), false); err != nil {
		t.Fatal(err)
	}
	if got, err := ws.ReadFile("eleven.txt", 11); err != nil || string(got) != "0123456789A" {
		t.Errorf("read at the limit = %q, %v", got, err)
	}
	_, err = ws.ReadFile("eleven.txt", 10)
	if msg := wantPathError(t, "read over the limit", err); !strings.Contains(msg, "limit") {
		t.Errorf("over-limit message = %q", msg)
	}
	if _, err := ws.MkdirAll("dir"); err != nil {
		t.Fatal(err)
	}
	_, err = ws.ReadFile("dir", 100)
	wantPathError(t, "read a folder", err)
}

// TestSpecialFilesDoNotHang: a FIFO planted by user code must not block a
// file command forever (open(2) of a FIFO waits for the other end).
func TestSpecialFilesDoNotHang(t *testing.T) {
	ws, _ := newWorkspace(t)
	if err := syscall.Mkfifo(filepath.Join(ws.Dir(), "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	ops := map[string]func() error{
		"read":        func() error { _, err := ws.ReadFile("fifo", 100); return err },
		"write":       func() error { _, err := ws.WriteFile("fifo", []byte("x"), false); return err },
		"append":      func() error { _, err := ws.WriteFile("fifo", []byte("x"), true); return err },
		"copy from":   func() error { _, _, _, err := ws.Copy("fifo", "copy.txt", 1<<20); return err },
		"copy to":     func() error { _, _, _, err := ws.Copy("plain.txt", "fifo", 1<<20); return err },
		"list":        func() error { _, _, _, err := ws.List("fifo", 10); return err },
		"working dir": func() error { _, err := ws.CheckDir("fifo"); return err },
	}
	if _, err := ws.WriteFile("plain.txt", []byte("plain"), false); err != nil {
		t.Fatal(err)
	}
	run := func(how string) {
		for name, op := range ops {
			done := make(chan error, 1)
			go func() { done <- op() }()
			select {
			case err := <-done:
				wantPathError(t, name+" of a FIFO "+how, err)
			case <-time.After(10 * time.Second):
				// The goroutine stays blocked; the test binary ends anyway.
				t.Fatalf("%s of a FIFO %s hangs", name, how)
			}
		}
	}
	run("nobody opened")
	// A reader that never reads (user code) must not block a write either.
	reader, err := os.OpenFile(filepath.Join(ws.Dir(), "fifo"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	run("held open by a reader")
	if _, err := os.Stat(filepath.Join(ws.Dir(), "copy.txt")); err == nil {
		t.Error("copy from a FIFO left a destination file")
	}
}

func TestSymlinkEscapesRefused(t *testing.T) {
	ws, outside := newWorkspace(t)
	secret := filepath.Join(outside, "secret.txt")
	writeHost(t, secret, "host secret")
	// evil -> the outside folder (absolute), up -> it through "..",
	// leak -> a host file, dangling -> a host file that does not exist yet.
	symlink(t, outside, filepath.Join(ws.Dir(), "evil"))
	symlink(t, "../outside", filepath.Join(ws.Dir(), "up"))
	symlink(t, "/etc", filepath.Join(ws.Dir(), "etc"))
	symlink(t, secret, filepath.Join(ws.Dir(), "leak"))
	symlink(t, filepath.Join(outside, "created.txt"), filepath.Join(ws.Dir(), "dangling"))
	if err := os.Mkdir(filepath.Join(ws.Dir(), "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, "../../outside/secret.txt", filepath.Join(ws.Dir(), "sub", "leak2"))
	writeHost(t, filepath.Join(ws.Dir(), "inside.txt"), "inside")

	read := func(p string) error { _, err := ws.ReadFile(p, 1<<20); return err }
	write := func(p string) error { _, err := ws.WriteFile(p, []byte("pwned"), false); return err }
	appendTo := func(p string) error { _, err := ws.WriteFile(p, []byte("pwned"), true); return err }
	cases := map[string]error{
		"read evil/secret.txt":    read("evil/secret.txt"),
		"read up/secret.txt":      read("/workspace/up/secret.txt"),
		"read etc/passwd":         read("etc/passwd"),
		"read leak":               read("leak"),
		"read sub/leak2":          read("sub/leak2"),
		"write evil/secret.txt":   write("evil/secret.txt"),
		"write up/new.txt":        write("up/new.txt"),
		"write leak":              write("leak"),
		"append leak":             appendTo("leak"),
		"write sub/leak2":         write("sub/leak2"),
		"write dangling":          write("dangling"),
		"write evil/deep/new.txt": write("evil/deep/new.txt"),
		"mkdir evil/made":         func() error { _, err := ws.MkdirAll("evil/made"); return err }(),
		"copy from leak":          func() error { _, _, _, err := ws.Copy("leak", "stolen.txt", 1<<20); return err }(),
		"copy from up/secret.txt": func() error { _, _, _, err := ws.Copy("up/secret.txt", "stolen.txt", 1<<20); return err }(),
		"copy to leak":            func() error { _, _, _, err := ws.Copy("inside.txt", "leak", 1<<20); return err }(),
		"copy to evil/copied.txt": func() error { _, _, _, err := ws.Copy("inside.txt", "evil/copied.txt", 1<<20); return err }(),
		"copy to dangling":        func() error { _, _, _, err := ws.Copy("inside.txt", "dangling", 1<<20); return err }(),
		"list evil":               func() error { _, _, _, err := ws.List("evil", 100); return err }(),
		"list up":                 func() error { _, _, _, err := ws.List("up", 100); return err }(),
		"list etc":                func() error { _, _, _, err := ws.List("/workspace/etc", 100); return err }(),
		"delete evil/secret.txt":  func() error { _, err := ws.Delete("evil/secret.txt"); return err }(),
		"delete up/secret.txt":    func() error { _, err := ws.Delete("up/secret.txt"); return err }(),
		"working directory evil":  func() error { _, err := ws.CheckDir("evil"); return err }(),
		"working directory /etc":  func() error { _, err := ws.CheckDir("/etc"); return err }(),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: allowed, want refused", name)
			continue
		}
		wantPathError(t, name, err)
	}
	if got, err := os.ReadFile(secret); err != nil || string(got) != "host secret" {
		t.Errorf("outside file is now %q (err %v)", got, err)
	}
	entries, err := os.ReadDir(outside)
	if err != nil || len(entries) != 1 {
		t.Errorf("outside folder holds %v (err %v), want only secret.txt", entries, err)
	}
	if _, err := os.Lstat(filepath.Join(ws.Dir(), "stolen.txt")); err == nil {
		t.Error("a copy from outside left stolen.txt in the workspace")
	}

	// Deleting a folder removes the links in it, never what they point to.
	symlink(t, outside, filepath.Join(ws.Dir(), "sub", "out"))
	if _, err := ws.Delete("sub"); err != nil {
		t.Errorf("Delete(sub): %v", err)
	}
	// Deleting a symlink removes the link, never what it points to.
	for _, link := range []string{"evil", "up", "leak", "etc"} {
		if _, err := ws.Delete(link); err != nil {
			t.Errorf("Delete(%s): %v", link, err)
		}
		if _, err := os.Lstat(filepath.Join(ws.Dir(), link)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("link %s still there after Delete (err %v)", link, err)
		}
	}
	if got, err := os.ReadFile(secret); err != nil || string(got) != "host secret" {
		t.Errorf("after deleting the links the outside file is %q (err %v)", got, err)
	}
}

func TestSymlinksInsideWork(t *testing.T) {
	ws, _ := newWorkspace(t)
	writeHost(t, filepath.Join(ws.Dir(), "dir", "real.txt"), "real")
	symlink(t, "dir/real.txt", filepath.Join(ws.Dir(), "link.txt"))
	symlink(t, "dir", filepath.Join(ws.Dir(), "dirlink"))
	symlink(t, "../dir/real.txt", filepath.Join(ws.Dir(), "dir", "self.txt"))

	for _, p := range []string{"link.txt", "dirlink/real.txt", "dir/self.txt"} {
		if got, err := ws.ReadFile(p, 100); err != nil || string(got) != "real" {
			t.Errorf("ReadFile(%s) = %q, %v", p, got, err)
		}
	}
	if _, err := ws.WriteFile("dirlink/new.txt", []byte("new"), false); err != nil {
		t.Errorf("write through dirlink: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(ws.Dir(), "dir", "new.txt")); err != nil || string(got) != "new" {
		t.Errorf("dir/new.txt = %q, %v", got, err)
	}
	if _, _, n, err := ws.Copy("link.txt", "dirlink/copy.txt", 1<<20); err != nil || n != 4 {
		t.Errorf("copy through links = %d, %v", n, err)
	}
	if _, entries, _, err := ws.List("dirlink", 100); err != nil || len(entries) != 4 {
		t.Errorf("List(dirlink) = %v, %v; want 4 entries", entries, err)
	}
	if shown, err := ws.CheckDir("dirlink"); err != nil || shown != "/workspace/dirlink" {
		t.Errorf("CheckDir(dirlink) = %q, %v", shown, err)
	}
}

func TestCopy(t *testing.T) {
	ws, _ := newWorkspace(t)
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if _, err := ws.WriteFile("src.txt", data, false); err != nil {
		t.Fatal(err)
	}
	src, dst, n, err := ws.Copy("/workspace/src.txt", "out/dst.txt", 1<<20)
	if err != nil || src != "/workspace/src.txt" || dst != "/workspace/out/dst.txt" || n != int64(len(data)) {
		t.Fatalf("Copy = %q, %q, %d, %v", src, dst, n, err)
	}
	if got, err := ws.ReadFile("out/dst.txt", 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copied file differs (err %v)", err)
	}
	// Copying over a longer file leaves none of it behind.
	if _, err := ws.WriteFile("short.txt", []byte("ab"), false); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ws.Copy("short.txt", "out/dst.txt", 1<<20); err != nil {
		t.Fatal(err)
	}
	if got, _ := ws.ReadFile("out/dst.txt", 100); string(got) != "ab" {
		t.Errorf("overwritten copy = %q", got)
	}
	// Onto itself, directly or through a link: refused, the file intact.
	symlink(t, "src.txt", filepath.Join(ws.Dir(), "src-link"))
	for _, dst := range []string{"src.txt", "/workspace/./src.txt", "src-link"} {
		_, _, _, err = ws.Copy("src.txt", dst, 1<<20)
		wantPathError(t, "copy src.txt onto "+dst, err)
		if got, _ := ws.ReadFile("src.txt", 1<<20); !bytes.Equal(got, data) {
			t.Fatalf("copy onto %s changed src.txt to %d bytes", dst, len(got))
		}
	}
	_, _, _, err = ws.Copy("missing.txt", "x.txt", 1<<20)
	if msg := wantPathError(t, "copy missing", err); msg != "File not found: /workspace/missing.txt" {
		t.Errorf("copy missing message = %q", msg)
	}
	_, _, _, err = ws.Copy("out", "x.txt", 1<<20)
	wantPathError(t, "copy a folder", err)
	_, _, _, err = ws.Copy("../src.txt", "x.txt", 1<<20)
	wantPathError(t, "copy from ..", err)
	_, _, _, err = ws.Copy("src.txt", "/tmp/x.txt", 1<<20)
	wantPathError(t, "copy to /tmp", err)
}

func TestList(t *testing.T) {
	ws, _ := newWorkspace(t)
	writeHost(t, filepath.Join(ws.Dir(), "b.txt"), "12345")
	writeHost(t, filepath.Join(ws.Dir(), "a", "inner.txt"), "x")
	symlink(t, "b.txt", filepath.Join(ws.Dir(), "c"))
	symlink(t, "/etc/passwd", filepath.Join(ws.Dir(), "d-outside")) // listed, not followed
	writeHost(t, filepath.Join(ws.Dir(), "A-upper"), "")

	shown, entries, more, err := ws.List("/workspace", 10)
	if err != nil || shown != "/workspace" || more {
		t.Fatalf("List = %q, %v, more=%v, %v", shown, entries, more, err)
	}
	want := []struct {
		name, kind string
		size       int64
	}{
		{"A-upper", "file", 0}, {"a", "directory", -1}, {"b.txt", "file", 5}, {"c", "symlink", -1}, {"d-outside", "symlink", -1},
	}
	if len(entries) != len(want) {
		t.Fatalf("List returned %d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, w := range want {
		e := entries[i]
		if e.Name != w.name || e.Type != w.kind || (w.size >= 0 && e.Size != w.size) {
			t.Errorf("entry %d = %+v, want name %s type %s size %d", i, e, w.name, w.kind, w.size)
		}
		if e.ModifiedAt.IsZero() || e.ModifiedAt.Location() != time.UTC {
			t.Errorf("entry %s modifiedAt = %v, want a UTC time", e.Name, e.ModifiedAt)
		}
	}

	_, entries, more, err = ws.List(".", 2)
	if err != nil || !more || len(entries) != 2 || entries[0].Name != "A-upper" || entries[1].Name != "a" {
		t.Errorf("List limit 2 = %+v, more=%v, %v; want the first two and more", entries, more, err)
	}
	_, entries, more, err = ws.List(".", 5)
	if err != nil || more || len(entries) != 5 {
		t.Errorf("List limit 5 of 5 = %d entries, more=%v, %v", len(entries), more, err)
	}
	shown, entries, _, err = ws.List("a", 10)
	if err != nil || shown != "/workspace/a" || len(entries) != 1 || entries[0].Name != "inner.txt" {
		t.Errorf("List(a) = %q, %+v, %v", shown, entries, err)
	}
	_, _, _, err = ws.List("b.txt", 10)
	wantPathError(t, "list a file", err)
	_, _, _, err = ws.List("missing", 10)
	wantPathError(t, "list missing", err)
}

func TestDelete(t *testing.T) {
	ws, _ := newWorkspace(t)
	writeHost(t, filepath.Join(ws.Dir(), "tree", "a", "b.txt"), "b")
	writeHost(t, filepath.Join(ws.Dir(), "file.txt"), "f")

	for _, p := range []string{"/workspace", ".", "/workspace/", "tree/..", "./"} {
		_, err := ws.Delete(p)
		wantPathError(t, "Delete("+p+")", err)
	}
	if shown, err := ws.Delete("file.txt"); err != nil || shown != "/workspace/file.txt" {
		t.Errorf("Delete(file.txt) = %q, %v", shown, err)
	}
	if shown, err := ws.Delete("/workspace/tree"); err != nil || shown != "/workspace/tree" {
		t.Errorf("Delete(tree) = %q, %v", shown, err)
	}
	entries, err := os.ReadDir(ws.Dir())
	if err != nil || len(entries) != 0 {
		t.Errorf("workspace holds %v after the deletes (err %v)", entries, err)
	}
	_, err = ws.Delete("file.txt")
	if msg := wantPathError(t, "delete missing", err); msg != "File not found: /workspace/file.txt" {
		t.Errorf("delete missing message = %q", msg)
	}
	_, err = ws.Delete("../ws")
	wantPathError(t, "delete ../ws", err)
	if _, err := os.Stat(ws.Dir()); err != nil {
		t.Errorf("workspace folder gone: %v", err)
	}
}

func TestCheckDirAndMkdirAll(t *testing.T) {
	ws, _ := newWorkspace(t)
	if shown, err := ws.MkdirAll("/workspace/x/y"); err != nil || shown != "/workspace/x/y" {
		t.Fatalf("MkdirAll = %q, %v", shown, err)
	}
	if _, err := ws.MkdirAll("x/y"); err != nil {
		t.Errorf("MkdirAll of an existing folder: %v", err)
	}
	writeHost(t, filepath.Join(ws.Dir(), "x", "file"), "")
	_, err := ws.MkdirAll("x/file/z")
	wantPathError(t, "mkdir under a file", err)

	for in, want := range map[string]string{"/workspace": "/workspace", ".": "/workspace", "x/y": "/workspace/x/y", "/workspace/x/./y/": "/workspace/x/y"} {
		if got, err := ws.CheckDir(in); err != nil || got != want {
			t.Errorf("CheckDir(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"x/file", "missing", "/tmp", "..", ""} {
		_, err := ws.CheckDir(in)
		wantPathError(t, "CheckDir("+in+")", err)
	}
}

func TestOwnership(t *testing.T) {
	ws, _ := newWorkspace(t)
	if _, err := ws.WriteFile("d/f.txt", []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "d", "d/f.txt"} {
		info, err := os.Lstat(filepath.Join(ws.Dir(), p))
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
			t.Errorf("%q is owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
	}
}

func TestRemove(t *testing.T) {
	ws, _ := newWorkspace(t)
	if _, err := ws.WriteFile("f", []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	if err := ws.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ws.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace folder still there: %v", err)
	}
}

func TestCappedBuffer(t *testing.T) {
	b := &CappedBuffer{Limit: 5}
	check := func(step string, kept string, total int64, truncated bool) {
		t.Helper()
		if string(b.Bytes()) != kept || b.Total() != total || b.Truncated() != truncated {
			t.Errorf("%s: kept %q total %d truncated %v; want %q %d %v", step, b.Bytes(), b.Total(), b.Truncated(), kept, total, truncated)
		}
	}
	check("empty", "", 0, false)
	for _, w := range []struct {
		p         string
		kept      string
		total     int64
		truncated bool
	}{
		{"abc", "abc", 3, false},
		{"de", "abcde", 5, false}, // exactly the limit is not truncated
		{"", "abcde", 5, false},
		{"f", "abcde", 6, true},
		{"ghijkl", "abcde", 12, true},
	} {
		n, err := b.Write([]byte(w.p))
		if n != len(w.p) || err != nil {
			t.Errorf("Write(%q) = %d, %v; want all taken", w.p, n, err)
		}
		check("after "+w.p, w.kept, w.total, w.truncated)
	}

	straddle := &CappedBuffer{Limit: 4}
	straddle.Write([]byte("ab"))
	straddle.Write([]byte("cdef"))
	if string(straddle.Bytes()) != "abcd" || straddle.Total() != 6 || !straddle.Truncated() {
		t.Errorf("straddling write kept %q total %d", straddle.Bytes(), straddle.Total())
	}

	zero := &CappedBuffer{}
	zero.Write([]byte("x"))
	if len(zero.Bytes()) != 0 || zero.Total() != 1 || !zero.Truncated() {
		t.Errorf("limit 0 kept %q total %d truncated %v", zero.Bytes(), zero.Total(), zero.Truncated())
	}
}

func TestWorkspaceSizeAndShapeLimits(t *testing.T) {
	ws, err := OpenWorkspace(t.TempDir(), os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// A sparse file is cheap to make and would be expensive to copy.
	if _, err := ws.WriteFile("small.txt", []byte("12345"), false); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(ws.Dir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 40)
	f.Close()
	var pe *PathError
	if _, _, _, err := ws.Copy("sparse", "copy", 1<<20); !errors.As(err, &pe) || !strings.Contains(err.Error(), "copy limit") {
		t.Errorf("copy of a 1 TiB sparse file: %v", err)
	}
	if _, _, n, err := ws.Copy("small.txt", "copy", 5); err != nil || n != 5 {
		t.Errorf("copy at the limit: %d %v", n, err)
	}
	deep := strings.Repeat("d/", MaxPathDepth+1) + "x"
	if _, err := ws.WriteFile(deep, []byte("x"), false); !errors.As(err, &pe) {
		t.Errorf("write %d folders deep: %v", MaxPathDepth+1, err)
	}
	if _, err := ws.WriteFile(strings.Repeat("n", 300), []byte("x"), false); !errors.As(err, &pe) || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a 300-byte name: %v", err)
	}
}

// TestWorkspaceModes: a workspace is entered by its owner (the sandbox
// user) and passed through by the jail's root (mode 0711), never listed
// or read by anyone else; one left more open by an earlier run is
// tightened when opened again. PrivateDirs does the same for the data dir.
func TestWorkspaceModes(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "workspaces", "ws")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // as OpenWorkspace made them before
	os.Chmod(filepath.Join(base, "workspaces"), 0o755)
	os.Chmod(base, 0o755)
	ws, err := OpenWorkspace(dir, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	wantMode(t, dir, 0o711)
	fresh, err := OpenWorkspace(filepath.Join(base, "workspaces", "fresh"), os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	wantMode(t, fresh.Dir(), 0o711)

	if err := PrivateDirs(base, filepath.Join(base, "workspaces"), filepath.Join(base, "new", "dir")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{base, filepath.Join(base, "workspaces"), filepath.Join(base, "new", "dir")} {
		wantMode(t, d, 0o700)
	}
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky); got != want {
		t.Errorf("%s: mode %v; want %v", path, got, want)
	}
}

// TestNoSetIDOnServerWrites: a file the server copies or writes never
// carries a setuid or setgid bit, whatever the source or the file it
// replaces had (the server writes as root, which keeps them).
func TestNoSetIDOnServerWrites(t *testing.T) {
	ws, _ := newWorkspace(t)
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	plant := func(name string, mode os.FileMode) {
		t.Helper()
		path := filepath.Join(ws.Dir(), name)
		if err := os.WriteFile(path, sh, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	plant("suid-sh", 0o755|os.ModeSetuid)
	for name, mode := range map[string]os.FileMode{
		"setuid-exec":   0o755 | os.ModeSetuid,
		"setgid-exec":   0o755 | os.ModeSetgid,
		"setgid-noexec": 0o644 | os.ModeSetgid, // chown keeps this one
		"both":          0o755 | os.ModeSetuid | os.ModeSetgid,
	} {
		plant(name, mode)
		if _, _, _, err := ws.Copy("suid-sh", name, 1<<30); err != nil {
			t.Fatalf("copy onto %s: %v", name, err)
		}
		wantNoSetID(t, filepath.Join(ws.Dir(), name), "copy onto "+name)
		plant(name, mode)
		if _, err := ws.WriteFile(name, sh, false); err != nil {
			t.Fatalf("write onto %s: %v", name, err)
		}
		wantNoSetID(t, filepath.Join(ws.Dir(), name), "write onto "+name)
		plant(name, mode)
		if _, err := ws.WriteFile(name, []byte("more"), true); err != nil {
			t.Fatalf("append to %s: %v", name, err)
		}
		wantNoSetID(t, filepath.Join(ws.Dir(), name), "append to "+name)
	}
	if _, _, _, err := ws.Copy("suid-sh", "new-copy", 1<<30); err != nil {
		t.Fatal(err)
	}
	wantNoSetID(t, filepath.Join(ws.Dir(), "new-copy"), "a new copy of a setuid file")
}

func wantNoSetID(t *testing.T, path, what string) {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := info.Mode(); m&(os.ModeSetuid|os.ModeSetgid) != 0 {
		t.Errorf("%s: mode %v keeps a setuid/setgid bit", what, m)
	}
}

// A folder that a program fills while it is deleted: the reply says so,
// not "already exists". The program is a goroutine writing into the folder
// on the host; the race is retried until the delete loses it, for at most
// 20 seconds.
func TestDeleteWhileRecreated(t *testing.T) {
	ws, _ := newWorkspace(t)
	dir := filepath.Join(ws.Dir(), "busy")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			os.Mkdir(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i%64)), nil, 0o644)
		}
	}()
	defer func() { close(stop); <-done }()

	deadline := time.Now().Add(20 * time.Second)
	tries := 0
	for time.Now().Before(deadline) {
		tries++
		_, err := ws.Delete("busy")
		if err == nil || strings.HasPrefix(err.Error(), "File not found") {
			continue // the delete won this time
		}
		msg := wantPathError(t, "Delete(busy)", err)
		t.Logf("after %d deletes: %s", tries, msg)
		if strings.Contains(msg, "already exists") || !strings.Contains(msg, "/workspace/busy") || !strings.Contains(msg, "created") {
			t.Errorf("Delete of a folder refilled during the delete says %q; want what happened", msg)
		}
		return
	}
	t.Fatalf("%d deletes in 20s never raced with the writer: the case is not tested", tries)
}
