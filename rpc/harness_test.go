package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/projection"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// testServer is a real service on a real bbolt file and the real runtimes,
// served over a real WebSocket on loopback. Transport tests need no
// engine: a test that makes a Docker session on a machine without one
// fails with the service's own -32003.
type testServer struct {
	t       testing.TB
	dataDir string
	svc     *rpc.Service
	server  *ws.Server
	http    *httptest.Server
	url     string
}

type serverOption func(*rpc.Config, *ws.Options)

// startServer opens the service on cfg and serves it; nothing is checked
// or closed at the end (a restart test stops it and starts another).
func startServer(t testing.TB, cfg rpc.Config, opts ws.Options) *testServer {
	t.Helper()
	svc, err := rpc.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, svc: svc, dataDir: cfg.DataDir}
	ts.server = ws.NewServer(svc, opts)
	mux := http.NewServeMux()
	mux.Handle("GET /health", rpc.HealthHandler(svc))
	mux.Handle("GET /ws/jsonrpc", ts.server)
	ts.http = httptest.NewServer(mux)
	ts.url = "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/ws/jsonrpc"
	return ts
}

// testConfig is the service's configuration in tests: the Docker runtime,
// quick reaping, logs into the test's output.
func testConfig(t testing.TB, dataDir string, runtimes map[string]sandbox.Runtime) rpc.Config {
	return rpc.Config{
		DataDir:      dataDir,
		Runtimes:     runtimes,
		Limits:       rpc.DefaultLimits(),
		Logger:       zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		ReapInterval: 100 * time.Millisecond,
	}
}

// newTestServer starts a server whose end checks that the live projection
// is the log's and that the sessions it made left no container.
func newTestServer(t testing.TB, opts ...serverOption) *testServer {
	t.Helper()
	dataDir := t.TempDir()
	rt, err := docker.New(docker.Options{Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dataDir, map[string]sandbox.Runtime{sandbox.KindDocker: rt})
	var wsOpts ws.Options
	for _, o := range opts {
		o(&cfg, &wsOpts)
	}
	ts := startServer(t, cfg, wsOpts)
	svc := ts.svc
	t.Cleanup(func() {
		// The projection the service kept live must be what the log says.
		rebuilt, err := projection.Rebuild(svc.Log())
		if err != nil {
			t.Errorf("rebuild projection: %v", err)
		} else if live, again := svc.View().List(), rebuilt.List(); !reflect.DeepEqual(live, again) {
			t.Errorf("projection rebuilt from the log differs from the live one:\nlive    %+v\nrebuilt %+v", live, again)
		}
		ts.http.Close()
		ts.server.CloseConnections()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Sessions outlive a shutdown; a test closes what it left open so
		// that its containers go.
		var ids []string
		for _, s := range svc.View().List() {
			ids = append(ids, s.ID)
			if err := svc.CloseSession(ctx, s.ID); err != nil {
				t.Errorf("close session %s: %v", s.ID, err)
			}
		}
		if err := svc.Close(ctx); err != nil {
			t.Errorf("close service: %v", err)
		}
		for _, id := range ids {
			if c := containersOf(t, id); len(c) > 0 {
				t.Errorf("session %s left containers behind after it closed: %v", id, c)
			}
		}
		if cfg.PoolSize > 0 {
			api := dockerAPI(t)
			if left := instanceContainers(t, api, dataDir); len(left) > 0 {
				t.Errorf("warm containers left after the service closed: %v", left)
				removeInstance(t, api, dataDir)
			}
		}
		rt.Close()
	})
	if cfg.PoolSize > 0 { // the test's creates find the pools full
		for _, l := range sandbox.Languages(sandbox.KindDocker) {
			ts.waitPool(l.Image, cfg.PoolSize)
		}
	}
	return ts
}

// containersOf lists the containers (running or not) labelled with a
// session id.
func containersOf(t testing.TB, sessionID string) []string {
	t.Helper()
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	list, err := api.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelSession+"="+sessionID))})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids
}

// wsClient is a JSON-RPC client over a real WebSocket connection. Replies
// are matched to calls by id, so calls may run concurrently.
type wsClient struct {
	t      testing.TB
	conn   *websocket.Conn
	nextID atomic.Int64

	writeMu sync.Mutex
	mu      sync.Mutex
	waiting map[string]chan json.RawMessage
	frames  chan []byte // replies that match no call (batches, id null)
	done    chan struct{}
}

func (ts *testServer) dial() *wsClient {
	ts.t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(ts.url, nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	c := &wsClient{t: ts.t, conn: conn, waiting: map[string]chan json.RawMessage{}, frames: make(chan []byte, 64), done: make(chan struct{})}
	go c.read()
	ts.t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, frame, err := c.conn.ReadMessage()
		if err != nil {
			close(c.frames)
			return
		}
		var probe struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(frame, &probe) == nil && len(probe.ID) > 0 && string(probe.ID) != "null" {
			c.mu.Lock()
			ch := c.waiting[string(probe.ID)]
			delete(c.waiting, string(probe.ID))
			c.mu.Unlock()
			if ch != nil {
				ch <- frame
				continue
			}
		}
		c.frames <- frame
	}
}

// send writes one raw frame.
func (c *wsClient) send(frame string) {
	c.t.Helper()
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next frame that did not answer a call made with call.
func (c *wsClient) next(timeout time.Duration) []byte {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatal("connection closed")
		}
		return f
	case <-time.After(timeout):
		c.t.Fatalf("no frame within %s", timeout)
		return nil
	}
}

// response is a decoded JSON-RPC response.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *rpcError       `json:"error"`
}

type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (e *rpcError) String() string { return fmt.Sprintf("%d %s %s", e.Code, e.Message, e.Data) }

// call sends a request and waits for its response.
func (c *wsClient) call(method string, params any) response {
	c.t.Helper()
	id := fmt.Sprint(c.nextID.Add(1))
	ch := make(chan json.RawMessage, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(id), "method": method, "params": params})
	c.send(string(req))
	select {
	case frame := <-ch:
		var r response
		if err := json.Unmarshal(frame, &r); err != nil {
			c.t.Fatalf("bad response %s: %v", frame, err)
		}
		return r
	case <-time.After(3 * time.Minute):
		c.t.Fatalf("no response to %s within 3 minutes", method)
		return response{}
	}
}

// ok calls and fails the test on a JSON-RPC error; it decodes the result
// into out if given.
func (c *wsClient) ok(method string, params any, out any) json.RawMessage {
	c.t.Helper()
	r := c.call(method, params)
	if r.Error != nil {
		c.t.Fatalf("%s: error %s", method, r.Error)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			c.t.Fatalf("%s: decode result %s: %v", method, r.Result, err)
		}
	}
	return r.Result
}

// rpcErr calls and expects a JSON-RPC error with code.
func (c *wsClient) rpcErr(method string, params any, code int) *rpcError {
	c.t.Helper()
	r := c.call(method, params)
	if r.Error == nil {
		c.t.Fatalf("%s: want error %d, got result %s", method, code, r.Result)
	}
	if r.Error.Code != code {
		c.t.Fatalf("%s: want error %d, got %s", method, code, r.Error)
	}
	return r.Error
}

// envelope is session.execute's result.
type envelope struct {
	Success    bool            `json:"success"`
	Result     json.RawMessage `json:"result"`
	Error      *string         `json:"error"`
	DurationMs *int64          `json:"durationMs"`
}

type shellResult struct {
	ExitCode        int    `json:"exitCode"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	DurationMs      *int64 `json:"durationMs"`
	TimedOut        bool   `json:"timedOut"`
	OOMKilled       bool   `json:"oomKilled"`
	StdoutTruncated bool   `json:"stdoutTruncated"`
}

func (c *wsClient) create(params map[string]any) string {
	c.t.Helper()
	var res struct {
		SessionID string `json:"sessionId"`
	}
	c.ok("session.create", params, &res)
	if res.SessionID == "" {
		c.t.Fatal("session.create returned no sessionId")
	}
	return res.SessionID
}

func (c *wsClient) exec(sessionID string, command map[string]any) envelope {
	c.t.Helper()
	var env envelope
	raw := c.ok("session.execute", map[string]any{"sessionId": sessionID, "command": command}, &env)
	if env.DurationMs == nil || !strings.Contains(string(raw), `"error":`) {
		c.t.Fatalf("execute envelope lacks durationMs or error: %s", raw)
	}
	return env
}

// mustSucceed executes and fails the test unless the command succeeded.
func (c *wsClient) mustSucceed(sessionID string, command map[string]any) envelope {
	c.t.Helper()
	env := c.exec(sessionID, command)
	if !env.Success {
		msg := "<nil>"
		if env.Error != nil {
			msg = *env.Error
		}
		c.t.Fatalf("%v failed: %s (result %s)", command["type"], msg, env.Result)
	}
	return env
}

func (c *wsClient) shell(sessionID, program string, args ...string) shellResult {
	c.t.Helper()
	env := c.exec(sessionID, map[string]any{"type": "execute_shell", "commandName": program, "args": args})
	var r shellResult
	if err := json.Unmarshal(env.Result, &r); err != nil {
		c.t.Fatalf("shell result %s: %v", env.Result, err)
	}
	return r
}

// keys returns the member names of a JSON object, sorted.
func keys(t testing.TB, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not an object: %s", raw)
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	sandboxtest.RemoveAgentBinary()
	os.Exit(code)
}
