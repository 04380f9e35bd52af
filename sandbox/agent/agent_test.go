package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startAgent serves on a socket in a fresh folder, in this process (as
// root in CI): no command is run by these tests, so no shim is needed.
func startAgent(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// No shim can start (it would be this test binary): none is needed.
		serveOn(ln, Config{UID: 71000, GID: 71000, Workdir: "/", Build: "test", shimPath: "/nonexistent/shim"})
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return sock
}

func dialRaw(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readError reads frames until an Error, which it returns; nil if the
// connection ends first.
func readError(t *testing.T, c net.Conn) *ErrorMsg {
	t.Helper()
	fr := NewReader(c)
	for {
		f, err := fr.Next()
		if err != nil {
			return nil
		}
		if f.Type == Error {
			msg, err := Decode(f)
			if err != nil {
				t.Fatalf("the agent's Error frame does not decode: %v", err)
			}
			return msg.(*ErrorMsg)
		}
	}
}

func TestAgentRefusesAnotherVersion(t *testing.T) {
	sock := startAgent(t)
	c := dialRaw(t, sock)
	if err := WriteJSON(c, Hello, HelloMsg{Version: Version + 1}); err != nil {
		t.Fatal(err)
	}
	e := readError(t, c)
	if e == nil || e.Code != CodeVersion || !strings.Contains(e.Message, "protocol version "+strconv.Itoa(Version)) {
		t.Fatalf("Hello of version %d: %+v; want an Error of code %q naming both versions", Version+1, e, CodeVersion)
	}
	// The agent serves on.
	conn, err := Dial(context.Background(), sock)
	if err != nil {
		t.Fatalf("Dial after a refused Hello: %v", err)
	}
	conn.Close()
}

func TestServerRefusesAnotherVersion(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "fake.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		NewReader(c).Next()
		WriteJSON(c, Hello, HelloMsg{Version: Version + 1})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Dial(ctx, sock)
	if !IsVersionMismatch(err) || !strings.Contains(err.Error(), "protocol version "+strconv.Itoa(Version+1)) {
		t.Fatalf("Dial to an agent of version %d: %v; want a version mismatch naming it", Version+1, err)
	}
}

// TestAgentSurvivesGarbage sends what a hostile or broken peer could, each
// on a connection of its own: every one ends with an Error or a hang-up,
// and the agent serves on.
func TestAgentSurvivesGarbage(t *testing.T) {
	sock := startAgent(t)
	hello, _ := AppendFrame(nil, Hello, []byte(`{"version":1}`))
	huge := binary.BigEndian.AppendUint32(nil, 0xffffffff)
	for name, b := range map[string][]byte{
		"random bytes":       []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"huge length":        huge,
		"zero length":        {0, 0, 0, 0},
		"start before hello": mustFrame(Start, `{"args":["true"]}`),
		"bad hello":          mustFrame(Hello, `{"version":"one"}`),
		"hello then garbage": append(bytes.Clone(hello), 0, 0, 0, 2, 'Z', 'Z'),
		"hello then bad start": append(bytes.Clone(hello),
			mustFrame(Start, `{"args":["true"],"uid":0}`)...),
		"hello then stdout": append(bytes.Clone(hello), mustFrame(Stdout, "x")...),
		"hello then huge":   append(bytes.Clone(hello), huge...),
	} {
		c := dialRaw(t, sock)
		c.Write(b)
		if cw, ok := c.(*net.UnixConn); ok {
			cw.CloseWrite()
		}
		readError(t, c) // an Error or a hang-up; a hang (no end) fails at the deadline
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: the connection is still open after the agent gave up", name)
		}
	}
	conn, err := Dial(context.Background(), sock)
	if err != nil {
		t.Fatalf("Dial after the garbage: %v", err)
	}
	conn.Close()
}

func mustFrame(t FrameType, payload string) []byte {
	b, err := AppendFrame(nil, t, []byte(payload))
	if err != nil {
		panic(err)
	}
	return b
}

// TestAgentRefusesOtherUsers opens the socket to everyone (as a folder
// made wrong would) and connects as the sandbox user: the agent refuses by
// the peer's credentials before reading anything.
func TestAgentRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test connects as another user: it must run as root, as CI does")
	}
	const python = "/usr/bin/python3" // Debian's: one the sandbox user may run
	sock := startAgent(t)
	for dir := filepath.Dir(sock); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		os.Chmod(dir, 0o755) // t.TempDir's folders are 0700
	}
	os.Chmod(sock, 0o777)
	// It reads first: the refusal comes before anything is read, and
	// sending into a closed connection resets it.
	script := `import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(10)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data[5:].decode())
`
	cmd := exec.Command(python, "-c", script, sock)
	cmd.SysProcAttr = sandboxUser()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("connect as uid 71000: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid 71000 may not use the agent") || strings.Contains(string(out), `"version"`) {
		t.Fatalf("the agent answered uid 71000 with %q; want a refusal and no Hello", out)
	}
}
