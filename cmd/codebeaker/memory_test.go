package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// Small requests must not cost the server much memory: these bombs run
// against the real binary and read its peak resident set (VmHWM) from
// /proc, the figure an operator sees.

// procKB reads a "Vm..." field of /proc/PID/status, in kB.
func procKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// frameReply is a reply to one frame of the bomb.
type frameReply struct {
	ID     json.RawMessage
	Result struct {
		Success bool
		Error   *string
	}
	Error *struct {
		Code    int
		Message string
		Data    json.RawMessage
	}
}

// queueBomb holds a python session busy with a command that waits for a
// stop file, queues 32 write_file frames of contentBytes each behind it
// (over 4 connections), then lets the queue run and returns the replies
// and the server's baseline and peak RSS in MiB.
func queueBomb(t *testing.T, srv *server, contentBytes int) (replies []frameReply, baseMiB, peakMiB float64) {
	t.Helper()
	c, err := dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ SessionID string }
	if e, err := c.call("session.create", map[string]any{"language": "python"}, &created); err != nil || e != nil {
		t.Fatalf("create: %v %v", e, err)
	}
	c.ws.Close()
	sid := created.SessionID
	defer func() {
		c, err := dial(srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.ws.Close()
		if e, err := c.call("session.close", map[string]any{"sessionId": sid}, nil); err != nil || e != nil {
			t.Errorf("close: %v %v", e, err)
		}
	}()
	stop := filepath.Join(srv.dataDir, "workspaces", sid, "stop")
	busy := make(chan error, 1)
	go func() {
		b, err := dial(srv.addr)
		if err != nil {
			busy <- err
			return
		}
		defer b.ws.Close()
		var env struct{ Success bool }
		e, err := b.call("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{
			"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "while [ ! -e stop ]; do sleep 0.1; done"}, "timeoutMs": 600000}}, &env)
		if err == nil && (e != nil || !env.Success) {
			err = fmt.Errorf("the busy command ended with %v %+v", e, env)
		}
		busy <- err
	}()
	time.Sleep(time.Second) // the busy command runs
	pid := srv.cmd.Process.Pid
	baseMiB = float64(procKB(t, pid, "VmRSS")) / 1024

	const conns, perConn = 4, 8
	content := strings.Repeat("x", contentBytes)
	var (
		sent, wg sync.WaitGroup
		mu       sync.Mutex
	)
	for i := range conns {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+srv.addr+"/ws/jsonrpc", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		sent.Go(func() {
			for j := range perConn {
				frame, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": i*perConn + j, "method": "session.execute", "params": map[string]any{
					"sessionId": sid, "command": map[string]any{"type": "write_file", "path": fmt.Sprintf("f%d-%d", i, j), "content": content}}})
				if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
		wg.Go(func() {
			ws.SetReadDeadline(time.Now().Add(5 * time.Minute))
			for range perConn {
				var r frameReply
				if err := ws.ReadJSON(&r); err != nil {
					t.Errorf("read a reply: %v", err)
					return
				}
				mu.Lock()
				replies = append(replies, r)
				mu.Unlock()
			}
		})
	}
	// A frame is sent once the server has read it; it is queued or
	// refused within a few seconds more. Then the busy command ends and
	// the queue runs.
	sent.Wait()
	time.Sleep(3 * time.Second)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-busy; err != nil {
		t.Error(err)
	}
	peakMiB = float64(procKB(t, pid, "VmHWM")) / 1024
	return replies, baseMiB, peakMiB
}

// overBudget tells the refusal of a frame the request budget cannot hold.
func overBudget(r frameReply) bool {
	return r.Error != nil && r.Error.Code == -32004 && string(r.ID) == "null" && strings.Contains(string(r.Error.Data), "max-request-bytes-in-flight")
}

// rssBound is the most a bomb may take the server's RSS to. The request
// budget bounds the live bytes of requests; the Go collector lets the heap
// grow to twice what is live (GOGC=100), and more is allocated while it
// marks on a loaded machine (1.1 to 1.8 times the budget was seen).
func rssBound(baseMiB float64, budgetMiB int) float64 { return baseMiB + 3*float64(budgetMiB) }

// The reviewer's bomb: 32 queued write_file frames of 15 MiB behind a
// running command, with the default request budget. Their content is over
// the file limit, which is decided when the frame is parsed: the queue
// keeps almost nothing, and frames are refused only while the ones before
// them are decoded.
func TestQueuedFrameBombOverFileLimit(t *testing.T) {
	needDocker(t)
	srv := startServer(t, filepath.Join(t.TempDir(), "data"))
	replies, base, peak := queueBomb(t, srv, 15<<20)
	bound := rssBound(base, int(ws.DefaultOptions().MaxRequestBytesInFlight>>20)) // the reviewer saw 1.77 GB, 2.3 GB here
	t.Logf("server RSS %.0f MiB before the bomb, peak %.0f MiB (bound %.0f MiB)", base, peak, bound)
	if peak > bound {
		t.Errorf("peak RSS %.0f MiB over %.0f MiB", peak, bound)
	}
	if len(replies) != 32 {
		t.Fatalf("%d replies to 32 frames", len(replies))
	}
	refused := 0
	for _, r := range replies {
		switch {
		case r.Error == nil && !r.Result.Success && r.Result.Error != nil && strings.Contains(*r.Result.Error, "file limit"):
		case overBudget(r):
			refused++
		default:
			t.Errorf("reply %s: %+v %+v, want a failed command over the file limit", r.ID, r, r.Error)
		}
	}
	t.Logf("%d frames refused for the request budget", refused)
}

// 32 queued write_file frames of 6 MiB, within the file limit, with a
// request budget of 64 MiB: the frames past the budget are refused with
// -32004 and the rest run.
func TestQueuedFrameBombBudget(t *testing.T) {
	needDocker(t)
	const budgetMiB = 64
	srv := startServer(t, filepath.Join(t.TempDir(), "data"), "--max-request-bytes-in-flight", fmt.Sprint(budgetMiB<<20))
	replies, base, peak := queueBomb(t, srv, 6<<20)
	bound := rssBound(base, budgetMiB)
	t.Logf("server RSS %.0f MiB before the bomb, peak %.0f MiB (bound %.0f MiB)", base, peak, bound)
	if peak > bound {
		t.Errorf("peak RSS %.0f MiB over %.0f MiB", peak, bound)
	}
	var ran, refused int
	for _, r := range replies {
		switch {
		case r.Error == nil && r.Result.Success:
			ran++
		case overBudget(r):
			refused++
		default:
			t.Errorf("reply %s: %+v %+v", r.ID, r, r.Error)
		}
	}
	t.Logf("%d frames ran, %d refused", ran, refused)
	if len(replies) != 32 || ran == 0 || refused == 0 || ran > budgetMiB/6 {
		t.Errorf("%d replies: %d ran, %d refused; want 32, at most %d ran and the others refused", len(replies), ran, refused, budgetMiB/6)
	}
}

// The reviewer's history bomb: after 1,000 commands of 60 KB output, 16
// concurrent session.history calls with limit 1000.
func TestHistoryBomb(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	log, err := eventlog.Open(filepath.Join(dataDir, eventlog.FileName), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const sid, commands, outputBytes = "01hbomb0000000000000000000", 1000, 60_000
	ctx := context.Background()
	if _, err := log.Append(ctx,
		eventlog.Record{SessionID: sid, Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{Language: "python", Runtime: "docker"}},
		eventlog.Record{SessionID: sid, Type: eventlog.SessionCreated, Data: eventlog.SessionCreatedData{ContainerID: "gone", Workspace: "workspaces/" + sid}},
	); err != nil {
		t.Fatal(err)
	}
	letters := []byte("abcdefghijklmnopqrstuvwxyz0123456789 \n")
	out := make([]byte, outputBytes)
	for i := 0; i < commands; i += 50 {
		var recs []eventlog.Record
		for j := i; j < i+50; j++ {
			for k := range out {
				out[k] = letters[rand.IntN(len(letters))]
			}
			id := fmt.Sprintf("cmd%06d", j)
			recs = append(recs,
				eventlog.Record{SessionID: sid, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: id, Type: "execute_shell", Command: json.RawMessage(`{"type":"execute_shell","commandName":"cat"}`)}},
				// A map, not CommandCompletedData: only the stored shape matters.
				eventlog.Record{SessionID: sid, Type: eventlog.CommandCompleted, Data: map[string]any{
					"commandId": id, "type": "execute_shell", "success": true, "exitCode": 0, "durationMs": 1, "stdoutBytes": outputBytes, "stdout": string(out)}})
		}
		if _, err := log.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := log.Append(ctx,
		eventlog.Record{SessionID: sid, Type: eventlog.SessionClosing, Data: eventlog.SessionClosingData{Reason: eventlog.ReasonClient}},
		eventlog.Record{SessionID: sid, Type: eventlog.SessionClosed, Data: eventlog.SessionClosedData{Reason: eventlog.ReasonClient}},
	); err != nil {
		t.Fatal(err)
	}
	log.Close()

	srv := startServer(t, dataDir)
	pid := srv.cmd.Process.Pid
	base := float64(procKB(t, pid, "VmRSS")) / 1024

	// /health is polled throughout.
	healthStop := make(chan struct{})
	healthDone := make(chan []time.Duration)
	go func() {
		var took []time.Duration
		defer func() { healthDone <- took }()
		for {
			select {
			case <-healthStop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			start := time.Now()
			resp, err := http.Get("http://" + srv.addr + "/health")
			if err != nil {
				t.Errorf("health: %v", err)
				return
			}
			resp.Body.Close()
			took = append(took, time.Since(start))
		}
	}()

	const calls = 16
	type page struct {
		Events []struct{ Seq uint64 }
		More   bool
	}
	pages := make([]page, calls)
	errs := make([]error, calls)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range calls {
		wg.Go(func() {
			c, err := dial(srv.addr)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.ws.Close()
			e, err := c.call("session.history", map[string]any{"sessionId": sid, "limit": 1000}, &pages[i])
			if err == nil && e != nil {
				err = fmt.Errorf("JSON-RPC error %d", e.Code)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(healthStop)
	health := <-healthDone
	peak := float64(procKB(t, pid, "VmHWM")) / 1024
	slices.Sort(health)
	var p99, worst time.Duration
	if n := len(health); n > 0 {
		p99, worst = health[(n*99)/100], health[n-1]
	}
	const bound = 400 // MiB; it was 2.2 GB
	t.Logf("server RSS %.0f MiB before the bomb, peak %.0f MiB (bound %d MiB); %d calls took %s; /health p99 %s, worst %s over %d polls",
		base, peak, bound, calls, took.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond), len(health))
	if peak > bound {
		t.Errorf("peak RSS %.0f MiB over %d MiB", peak, bound)
	}
	for i := range calls {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
		} else if n := len(pages[i].Events); n == 0 || !pages[i].More || pages[i].Events[0].Seq != 1 {
			t.Errorf("call %d: %d events, more %v; want a first page that ends early", i, n, pages[i].More)
		}
	}
	srv.stop()
}
