package agent

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// BenchmarkCommand runs `true` through an agent on the host (as root, the
// command as the sandbox user), next to the floor of starting `true` with
// os/exec: what the agent's protocol and shim add to a command.
func BenchmarkCommand(b *testing.B) {
	bin := sandboxtest.AgentBinary(b)
	b.Cleanup(sandboxtest.RemoveAgentBinary)
	sock := filepath.Join(b.TempDir(), "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	go serveOn(ln, Config{UID: 71000, GID: 71000, Workdir: "/", shimPath: bin})
	b.Cleanup(func() { ln.Close() })
	b.Run("agent", func(b *testing.B) {
		for b.Loop() {
			conn, err := Dial(context.Background(), sock)
			if err != nil {
				b.Fatal(err)
			}
			if err := conn.Start(StartMsg{Args: []string{"/bin/true"}}, nil); err != nil {
				b.Fatal(err)
			}
			if _, err := conn.Wait(nil, nil); err != nil {
				b.Fatal(err)
			}
			conn.Close()
		}
	})
	b.Run("floor-os-exec", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
