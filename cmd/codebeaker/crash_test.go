package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/gorilla/websocket"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// binary is codebeaker built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "codebeaker-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "codebeaker")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build codebeaker: %v\n%s", err, out)
		os.Exit(1)
	}
	// Beside the server, where it looks for its agent.
	if err := sandboxtest.BuildAgent(filepath.Join(dir, docker.AgentName)); err != nil {
		fmt.Fprintf(os.Stderr, "build the agent: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a real codebeaker process.
type server struct {
	t       *testing.T
	cmd     *exec.Cmd
	addr    string
	dataDir string
}

// startServer starts the binary on dataDir; flags are added to its defaults.
func startServer(t *testing.T, dataDir string, flags ...string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logFile, err := os.OpenFile(filepath.Join(dataDir, "..", filepath.Base(dataDir)+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// No warm pool unless a test asks: a test that ends with a kill would
	// leave its warm containers.
	args := append([]string{"serve", "--addr", addr, "--data-dir", dataDir, "--log-format", "json", "--reconcile-interval", "500ms", "--pool-size", "0"}, flags...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, addr: addr, dataDir: dataDir}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not serve within 30 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		s.t.Errorf("server exited after SIGTERM with %v", err)
	}
}

// conn is one client connection making one call at a time.
type conn struct {
	ws *websocket.Conn
	id int
}

func dial(addr string) (*conn, error) {
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws/jsonrpc", nil)
	if err != nil {
		return nil, err
	}
	return &conn{ws: ws}, nil
}

// call returns the result, or an error: a JSON-RPC error (rpcErr) or a lost
// connection (the server died before answering: not acknowledged).
func (c *conn) call(method string, params any, result any) (rpcErr *struct{ Code int }, err error) {
	c.id++
	if err := c.ws.WriteJSON(map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	c.ws.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var resp struct {
		Result json.RawMessage
		Error  *struct{ Code int }
	}
	if err := c.ws.ReadJSON(&resp); err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return resp.Error, nil
	}
	if result != nil {
		return nil, json.Unmarshal(resp.Result, result)
	}
	return nil, nil
}

// acks is what clients were told succeeded: the log must have all of it.
type acks struct {
	mu       sync.Mutex
	created  map[string]bool
	closed   map[string]bool
	closing  map[string]bool   // close sent, answer or not
	commands map[string]string // token -> session
}

func (a *acks) add(m map[string]bool, key string) {
	a.mu.Lock()
	m[key] = true
	a.mu.Unlock()
}

// load runs clients against the server until it dies. focus picks the
// operation most of them do, so that kills land during creates, commands
// and closes.
func load(addr string, round, workers int, focus string, a *acks, stop <-chan struct{}) {
	// The sessions still open from earlier rounds are shared out, so that
	// commands and closes start at once.
	var open []string
	if c, err := dial(addr); err == nil {
		var list struct{ Sessions []struct{ SessionID string } }
		c.call("session.list", map[string]any{}, &list)
		for _, s := range list.Sessions {
			open = append(open, s.SessionID)
		}
		c.ws.Close()
	}
	var wg sync.WaitGroup
	for w := range workers {
		var mine []string
		for i := w; i < len(open); i += workers {
			mine = append(mine, open[i])
		}
		wg.Go(func() {
			c, err := dial(addr)
			if err != nil {
				return
			}
			defer c.ws.Close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				op := focus
				if rand.IntN(3) == 0 || len(mine) == 0 {
					op = []string{"create", "write", "shell", "close"}[rand.IntN(4)]
				}
				if len(mine) == 0 || (op == "create" && len(mine) > 4) {
					op = "create"
				}
				if op == "close" && len(mine) < 2 {
					op = "shell"
				}
				switch op {
				case "create":
					var res struct{ SessionID string }
					if e, err := c.call("session.create", map[string]any{"language": "python", "memoryLimitMB": 64}, &res); err != nil || e != nil {
						return
					}
					a.add(a.created, res.SessionID)
					mine = append(mine, res.SessionID)
				case "write", "shell":
					sid := mine[rand.IntN(len(mine))]
					token := fmt.Sprintf("r%d-w%d-n%d", round, w, n)
					command := map[string]any{"type": "write_file", "path": token, "content": token}
					if op == "shell" {
						command = map[string]any{"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "echo " + token + " >> tokens.txt"}}
					}
					var env struct{ Success bool }
					if e, err := c.call("session.execute", map[string]any{"sessionId": sid, "command": command}, &env); err != nil || e != nil {
						return
					}
					if env.Success {
						a.mu.Lock()
						a.commands[token] = sid
						a.mu.Unlock()
					}
				case "close":
					sid := mine[0]
					mine = mine[1:]
					a.add(a.closing, sid)
					if e, err := c.call("session.close", map[string]any{"sessionId": sid}, nil); err != nil || e != nil {
						return
					}
					a.add(a.closed, sid)
				}
			}
		})
	}
	wg.Wait()
}

// TestKillNine kills the server with SIGKILL in the middle of a load of
// concurrent sessions and commands, restarts it, and checks that nothing a
// client was told is lost and that sessions and containers agree.
func TestKillNine(t *testing.T) {
	api := needDocker(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	a := &acks{created: map[string]bool{}, closed: map[string]bool{}, closing: map[string]bool{}, commands: map[string]string{}}
	const rounds = 10
	focuses := []string{"create", "shell", "close", "write"}
	t.Cleanup(func() { removeInstance(t, api, docker.Instance(dataDir)) })
	// With the pool on: kills land during claims and refills too.
	srv := startServer(t, dataDir, "--pool-size", "1")
	for round := range rounds {
		focus := focuses[round%len(focuses)]
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { load(srv.addr, round, 4, focus, a, stop); close(done) }()
		time.Sleep(time.Duration(1000+rand.IntN(3000)) * time.Millisecond)
		srv.kill()
		close(stop)
		<-done

		completed, recovery := checkLog(t, filepath.Join(dataDir, eventlog.FileName), a)
		srv = startServer(t, dataDir, "--pool-size", "1")
		checkServer(t, api, srv.addr, dataDir, completed)
		t.Logf("round %d (%s): %d sessions created, %d closed, %d commands acknowledged so far, all in the log; %d sessions open; recoveries so far: %v",
			round, focus, len(a.created), len(a.closed), len(a.commands), len(completed), recovery)
	}
	// Leave nothing behind: close what is open, then a clean stop.
	c, err := dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Sessions []struct{ SessionID string } }
	c.call("session.list", map[string]any{}, &list)
	for _, s := range list.Sessions {
		if e, err := c.call("session.close", map[string]any{"sessionId": s.SessionID}, nil); err != nil || e != nil {
			t.Errorf("close %s: %v %v", s.SessionID, e, err)
		}
	}
	c.ws.Close()
	srv.stop()
	eventlogtest.Check(t, filepath.Join(dataDir, eventlog.FileName))
}

// checkLog opens the log of the dead server and checks every acknowledged
// operation is in it. It returns the completed-command count of every
// session the log has open, and how often each kind of recovery event
// appears (what earlier restarts found and did).
func checkLog(t *testing.T, path string, a *acks) (map[string]int, map[eventlog.Type]int) {
	t.Helper()
	log, err := eventlog.Open(path, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	created, closed := map[string]bool{}, map[string]bool{}
	open := map[string]int{}
	started := map[string]string{} // token -> command id
	done := map[string]bool{}      // command ids completed
	recovery := map[eventlog.Type]int{}
	err = log.Scan(0, func(e eventlog.Event) error {
		switch e.Type {
		case eventlog.CommandInterrupted, eventlog.SessionRecovered, eventlog.ContainerRemoved:
			recovery[e.Type]++
		case eventlog.SessionCreating:
			open[e.SessionID] = 0
		case eventlog.SessionCreated:
			created[e.SessionID] = true
		case eventlog.SessionClosed, eventlog.SessionCreateFailed:
			closed[e.SessionID] = true
			delete(open, e.SessionID)
			if e.Type == eventlog.SessionCreateFailed {
				recovery[e.Type]++
			}
		case eventlog.CommandStarted:
			var d eventlog.CommandStartedData
			e.Decode(&d)
			var cmd struct {
				Path string
				Args []string
			}
			json.Unmarshal(d.Command, &cmd)
			token := cmd.Path
			if len(cmd.Args) == 2 {
				token = strings.Fields(cmd.Args[1])[1]
			}
			started[token] = d.CommandID
		case eventlog.CommandCompleted:
			var d eventlog.CommandCompletedData
			e.Decode(&d)
			done[d.CommandID] = true
			if _, ok := open[e.SessionID]; ok {
				open[e.SessionID]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for sid := range a.created {
		if !created[sid] {
			t.Errorf("acknowledged session %s has no SessionCreated event", sid)
		}
	}
	for sid := range a.closed {
		if !closed[sid] {
			t.Errorf("acknowledged close of %s has no SessionClosed event", sid)
		}
	}
	for token, sid := range a.commands {
		id, ok := started[token]
		if !ok || !done[id] {
			t.Errorf("acknowledged command %s of session %s is not in the log (started %v)", token, sid, ok)
		}
	}
	return open, recovery
}

// checkServer checks the restarted server: every session the log has open
// is listed with its count and runs a command, and every container with our
// labels belongs to a listed session.
func checkServer(t *testing.T, api *client.Client, addr, dataDir string, completed map[string]int) {
	t.Helper()
	c, err := dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.ws.Close()
	var list struct {
		Sessions []struct {
			SessionID, ContainerID string
			ExecutionCount         int
		}
	}
	if e, err := c.call("session.list", map[string]any{}, &list); err != nil || e != nil {
		t.Fatalf("session.list: %v %v", e, err)
	}
	listed := map[string]bool{}
	for _, s := range list.Sessions {
		listed[s.SessionID] = true
		want, ok := completed[s.SessionID]
		if !ok {
			t.Errorf("session %s is listed but the log did not have it open", s.SessionID)
		} else if s.ExecutionCount != want {
			t.Errorf("session %s lists %d executions, the log has %d", s.SessionID, s.ExecutionCount, want)
		}
		var env struct{ Success bool }
		if e, err := c.call("session.execute", map[string]any{"sessionId": s.SessionID, "command": map[string]any{"type": "execute_shell", "commandName": "true"}}, &env); err != nil || e != nil || !env.Success {
			t.Errorf("session %s does not execute after the restart: %v %v %v", s.SessionID, e, err, env)
		}
	}
	// Sessions the log had open but that are not listed were being created
	// (never acknowledged) or closed; the restart finished those.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list2 struct {
			Sessions []struct{ SessionID, ContainerID string }
		}
		c.call("session.list", map[string]any{}, &list2)
		want := map[string]string{}
		for _, s := range list2.Sessions {
			want[s.SessionID] = s.ContainerID
		}
		problems := containerProblems(t, api, docker.Instance(dataDir), want)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("containers and sessions disagree 30 s after the restart: %v", problems)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func containerProblems(t *testing.T, api *client.Client, instance string, sessions map[string]string) []string {
	list, err := api.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+instance))})
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	running := map[string]bool{}
	warm := map[string]int{} // by image
	for _, c := range list {
		sid := c.Labels[docker.LabelSession]
		if image := c.Labels[docker.LabelPool]; image != "" && sessions[sid] != c.ID {
			// The default pool keeps one per image.
			if warm[image]++; warm[image] > 1 {
				problems = append(problems, fmt.Sprintf("%d warm containers of %s, the pool keeps 1", warm[image], image))
			}
			continue
		}
		if sessions[sid] != c.ID {
			problems = append(problems, fmt.Sprintf("container %.12s of session %s is owned by no open session", c.ID, sid))
			continue
		}
		running[c.ID] = c.State == "running"
	}
	for sid, id := range sessions {
		if !running[id] {
			problems = append(problems, fmt.Sprintf("session %s points at container %.12s, which does not run", sid, id))
		}
	}
	return problems
}

// A SIGTERM lets a running command finish and be answered; the sessions
// stay open across the restart. A second signal exits at once.
func TestGracefulShutdown(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, dataDir)
	c, err := dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ SessionID string }
	if e, err := c.call("session.create", map[string]any{"language": "python"}, &created); err != nil || e != nil {
		t.Fatalf("create: %v %v", e, err)
	}
	sid := created.SessionID
	answered := make(chan error, 1)
	go func() {
		var env struct {
			Success bool
			Result  struct{ Stdout string }
		}
		_, err := c.call("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{
			"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "sleep 2; echo finished"}}}, &env)
		if err == nil && (!env.Success || env.Result.Stdout != "finished\n") {
			err = fmt.Errorf("command ended with %+v", env)
		}
		answered <- err
	}()
	time.Sleep(500 * time.Millisecond)
	srv.stop() // SIGTERM, and waits for a clean exit
	if err := <-answered; err != nil {
		t.Errorf("the running command was not let finish: %v", err)
	}

	srv = startServer(t, dataDir)
	c, err = dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Sessions []struct {
			SessionID      string
			ExecutionCount int
		}
	}
	c.call("session.list", map[string]any{}, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].SessionID != sid || list.Sessions[0].ExecutionCount != 1 {
		t.Fatalf("after a graceful restart: %+v", list)
	}
	var env struct{ Success bool }
	if e, err := c.call("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "read_file", "path": "missing"}}, &env); err != nil || e != nil {
		t.Errorf("session does not take commands after the restart: %v %v", e, err)
	}

	// Two signals: the second one does not wait for the running command.
	go c.call("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "execute_shell", "commandName": "sleep", "args": []string{"60"}}}, nil)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	srv.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGTERM)
	err = srv.cmd.Wait()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 130 {
		t.Errorf("after a second signal the server exited with %v, want code 130", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("a second signal took %s to end the server", took)
	}
	// Clean up the session the next run still has.
	srv = startServer(t, dataDir)
	if c, err = dial(srv.addr); err == nil {
		c.call("session.close", map[string]any{"sessionId": sid}, nil)
	}
	srv.stop()
}

// A damaged data file stops the server with a message naming the file and
// what to do, and the file is left as it was.
func TestCorruptDataFile(t *testing.T) {
	dataDir := t.TempDir()
	path := filepath.Join(dataDir, eventlog.FileName)
	garbage := []byte(strings.Repeat("not a bbolt file ", 4096))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir).CombinedOutput()
	if err == nil {
		t.Fatalf("the server started on a damaged file:\n%s", out)
	}
	if !strings.Contains(string(out), path) || !strings.Contains(string(out), "move it aside") {
		t.Errorf("the message does not name the file and what to do:\n%s", out)
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(garbage) {
		t.Error("the damaged file was changed")
	}
}

// needDocker returns a client of the engine, failing the test when none
// answers; the client is closed at the test's end.
func needDocker(t *testing.T) *client.Client {
	t.Helper()
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	if _, err := api.Ping(context.Background()); err != nil {
		t.Fatalf("a Docker engine is needed (run scripts/ensure-docker.sh): %v", err)
	}
	return api
}
