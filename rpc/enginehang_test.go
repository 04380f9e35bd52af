package rpc_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// hangingEngine passes a service's engine traffic to the real engine, and
// can stop passing it (freeze): to the service, the engine then hangs as a
// stopped dockerd does, while other tests on the engine go on.
type hangingEngine struct {
	t    *testing.T
	host string // unix://... for docker.Options.Host

	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	conns  []net.Conn
}

func newHangingEngine(t *testing.T) *hangingEngine {
	t.Helper()
	upstream := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		upstream = strings.TrimPrefix(h, "unix://")
	}
	dir, err := os.MkdirTemp("", "cb-engine")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &hangingEngine{t: t, host: "unix://" + path}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() {
		p.thaw()
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		os.RemoveAll(dir)
	})
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", upstream)
			if err != nil {
				down.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, down, up)
			p.mu.Unlock()
			go p.pipe(up, down)
			go p.pipe(down, up)
		}
	}()
	return p
}

// pipe copies src to dst, holding every chunk while the proxy is frozen.
// The end of src half-closes dst: exec streams close stdin alone.
func (p *hangingEngine) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for p.frozen {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				dst.(*net.UnixConn).CloseWrite()
			} else {
				dst.Close()
			}
			return
		}
	}
}

func (p *hangingEngine) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

func (p *hangingEngine) thaw() {
	p.mu.Lock()
	p.frozen = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// throughProxy makes the service reach the engine through p.
func throughProxy(t *testing.T, p *hangingEngine) serverOption {
	return func(cfg *rpc.Config, _ *ws.Options) {
		rt, err := docker.New(docker.Options{Host: p.host, Instance: docker.Instance(cfg.DataDir), Agent: sandboxtest.AgentBinary(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close() })
		cfg.Runtimes = map[string]sandbox.Runtime{sandbox.KindDocker: rt}
		cfg.ReconcileInterval = 500 * time.Millisecond
	}
}

// TestCloseWhileEngineHangs closes a session, a command running, while no
// engine call answers: the close answers within its bound, the session is
// closed, and its container goes once the engine answers again.
func TestCloseWhileEngineHangs(t *testing.T) {
	proxy := newHangingEngine(t)
	ts := newTestServer(t, throughProxy(t, proxy))
	closeWhileEngineHangs(t, ts, proxy.freeze, proxy.thaw)
}

func closeWhileEngineHangs(t *testing.T, ts *testServer, hang, resume func()) {
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	running := c.start("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{
		"type": "execute_shell", "commandName": "sleep", "args": []string{"600"}, "timeoutMs": 600000}})
	eventually(t, "the command running", func() bool { v, _ := ts.svc.View().Get(sid); return v.Running })
	time.Sleep(500 * time.Millisecond)

	hang()
	resumed := false
	defer func() {
		if !resumed {
			resume()
		}
	}()
	r, took := c.start("session.close", map[string]any{"sessionId": sid}).wait(closeBound)
	t.Logf("session.close with the engine hung answered after %v", took.Round(time.Millisecond))
	if r.Error != nil {
		t.Fatalf("session.close: %s", r.Error)
	}
	if _, open := ts.svc.View().Get(sid); open {
		t.Error("the session is still open after session.close answered")
	}
	time.Sleep(2 * time.Second) // the engine stays hung a little longer
	resume()
	resumed = true

	// The command's reply comes once its kill is done or given up.
	if r, took := running.wait(killBound + 45*time.Second); r.Error == nil {
		if env, _ := shellOf(t, r); env.Success {
			t.Errorf("the command the close ended succeeded: %s", r.Result)
		}
		t.Logf("the running command answered %v after it started", took.Round(time.Millisecond))
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(containersOf(t, sid)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the container of session %s is still there 90 s after the engine answered again", sid)
		}
		time.Sleep(200 * time.Millisecond)
	}
	assertNothingAfterClose(t, ts, sid)
}
