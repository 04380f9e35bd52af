package sandboxtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var agentBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// AgentBinary builds cmd/codebeaker-agent once per test process, static as
// the image scripts build it, and returns its path. A package whose tests
// call it removes the build from its TestMain with RemoveAgentBinary.
func AgentBinary(tb testing.TB) string {
	tb.Helper()
	b := &agentBuild
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "codebeaker-agent-test-")
		if b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "codebeaker-agent")
		b.err = BuildAgent(b.path)
	})
	if b.err != nil {
		tb.Fatalf("build the agent: %v", b.err)
	}
	return b.path
}

// BuildAgent builds cmd/codebeaker-agent into path.
func BuildAgent(path string) error {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", path, "github.com/codebeaker/codebeaker/cmd/codebeaker-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return &buildError{err: err, out: string(out)}
	}
	return nil
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// RemoveAgentBinary removes what AgentBinary built.
func RemoveAgentBinary() {
	if agentBuild.dir != "" {
		os.RemoveAll(agentBuild.dir)
	}
}
