package rpc_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// busySession starts a command in a new python session that runs until
// the returned function is called; that function waits for its reply.
func busySession(t *testing.T, ts *testServer) (sid string, release func()) {
	t.Helper()
	c := ts.dial()
	sid = c.create(map[string]any{"language": "python"})
	done := make(chan response, 1)
	go func() {
		done <- c.call("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{
			"type": "execute_shell", "commandName": "sh", "args": []string{"-c", "while [ ! -e stop ]; do sleep 0.05; done"}, "timeoutMs": 300000}})
	}()
	for deadline := time.Now().Add(time.Minute); ; {
		if s, _ := ts.svc.View().Get(sid); s.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the busy command did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sid, func() {
		t.Helper()
		if err := os.WriteFile(filepath.Join(ts.dataDir, "workspaces", sid, "stop"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.Error != nil {
			t.Errorf("busy command: %s", r.Error)
		}
	}
}

// liveHeap is the heap still in use after a full collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func waitQueue(t *testing.T, ts *testServer, sid string, n int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); rpc.QueueLen(ts.svc, sid) != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d commands queued, want %d", rpc.QueueLen(ts.svc, sid), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func executeFrame(id, sid string, command map[string]any) string {
	frame, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "session.execute", "params": map[string]any{"sessionId": sid, "command": command}})
	return string(frame)
}

// A queued command keeps only what it needs, decoded: not its frame, its
// params or the raw command, and nothing of content or stdin over the
// limit, whose refusal is decided when the frame is parsed. The replies
// are as before: failed commands, recorded in the log.
func TestQueuedCommandsKeepOnlyTheDecodedCommand(t *testing.T) {
	const fileLimit = 2 << 20
	ts := newTestServer(t, func(cfg *rpc.Config, _ *ws.Options) { cfg.Limits.MaxFileBytes = fileLimit })
	sid, release := busySession(t, ts)
	c := ts.dial()
	before := liveHeap()

	const overLimit, kept, bigStdin = 6, 4, 4
	sent := 0
	send := func(prefix string, n int, command func(i int) map[string]any) {
		for i := range n {
			c.send(executeFrame(fmt.Sprintf("%s-%d", prefix, i), sid, command(i)))
			sent++
		}
	}
	send("over", overLimit, func(int) map[string]any {
		return map[string]any{"type": "write_file", "path": "big", "content": strings.Repeat("x", 5<<20)}
	})
	send("kept", kept, func(i int) map[string]any {
		return map[string]any{"type": "write_file", "path": fmt.Sprintf("f%d", i), "content": strings.Repeat("k", fileLimit)}
	})
	send("stdin", bigStdin, func(int) map[string]any {
		return map[string]any{"type": "execute_shell", "commandName": "cat", "stdin": strings.Repeat("s", 3<<20)}
	})
	waitQueue(t, ts, sid, sent)
	grew := int64(liveHeap()) - int64(before)
	const bound = kept*fileLimit + 8<<20 // the kept content, and some slack
	t.Logf("live heap grew by %.1f MiB with %d commands (%d MiB of frames) queued (bound %d MiB)", float64(grew)/(1<<20), sent, overLimit*5+kept*fileLimit>>20+bigStdin*3, bound>>20)
	if grew > bound {
		t.Errorf("live heap grew by %.1f MiB with the commands queued; want at most %d MiB", float64(grew)/(1<<20), bound>>20)
	}

	release()
	counts := map[string]int{}
	for range sent {
		var r struct {
			response
			Result envelope `json:"result"`
		}
		json.Unmarshal(c.next(time.Minute), &r)
		id := strings.Trim(string(r.ID), `"`)
		kind, _, _ := strings.Cut(id, "-")
		msg := ""
		if r.Result.Error != nil {
			msg = *r.Result.Error
		}
		ok := false
		switch kind {
		case "over":
			ok = r.Error == nil && !r.Result.Success && msg == fmt.Sprintf("content of %d bytes is over the %d-byte file limit", 5<<20, fileLimit)
		case "kept":
			ok = r.Error == nil && r.Result.Success
		case "stdin":
			ok = r.Error == nil && !r.Result.Success && msg == fmt.Sprintf("stdin of %d bytes is over the %d-byte limit", 3<<20, fileLimit)
		}
		if !ok {
			t.Errorf("reply %s: error %v, envelope %+v %s", id, r.Error, r.Result, msg)
		}
		counts[kind]++
	}
	if counts["over"] != overLimit || counts["kept"] != kept || counts["stdin"] != bigStdin {
		t.Errorf("replies %v", counts)
	}
	// Every command ran in its turn and is in the log, with a small copy.
	events, err := ts.svc.Log().SessionEvents(sid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	started := 0
	for _, e := range events {
		if e.Type == "CommandStarted" {
			started++
			if len(e.Data) > 80<<10 {
				t.Errorf("CommandStarted of %d bytes", len(e.Data))
			}
		}
	}
	if started != 1+sent {
		t.Errorf("%d commands started, want %d", started, 1+sent)
	}
}

// The request budget: frames past it are refused with -32004 while queued
// commands hold it; small requests still go through; when the commands have
// run, nothing stays counted.
func TestRequestBudget(t *testing.T) {
	const budget, content = 24 << 20, 2 << 20
	ts := newTestServer(t, func(_ *rpc.Config, o *ws.Options) { o.MaxRequestBytesInFlight = budget })
	sid, release := busySession(t, ts)
	c := ts.dial()
	// More than the budget holds even once decoded, however fast the
	// server decodes: some must be refused.
	const frames = budget/content + 4
	for i := range frames {
		c.send(executeFrame(fmt.Sprintf("w-%d", i), sid, map[string]any{"type": "write_file", "path": fmt.Sprintf("f%d", i), "content": strings.Repeat("w", content)}))
	}
	refused := 0
	for deadline := time.Now().Add(2 * time.Minute); rpc.QueueLen(ts.svc, sid)+refused < frames; {
		if time.Now().After(deadline) {
			t.Fatalf("%d queued, %d refused, of %d", rpc.QueueLen(ts.svc, sid), refused, frames)
		}
		var r response
		json.Unmarshal(c.next(time.Minute), &r)
		if r.Error == nil || r.Error.Code != rpc.CodeCapacityExhausted || string(r.ID) != "null" || !strings.Contains(string(r.Error.Data), "in flight") {
			t.Fatalf("want a refusal for the budget, got %s", c.next(0))
		}
		refused++
	}
	queued := rpc.QueueLen(ts.svc, sid)
	held := ts.server.RequestBytesInFlight()
	t.Logf("%d queued, %d refused; %.1f MiB of the %d MiB budget held", queued, refused, float64(held)/(1<<20), budget>>20)
	if queued == 0 || refused == 0 || held > budget || held < int64(queued*content) {
		t.Errorf("%d queued, %d refused, %d bytes held of %d", queued, refused, held, budget)
	}
	// Small requests need no budget.
	var list struct{ Count int }
	ts.dial().ok("session.list", map[string]any{}, &list)

	release()
	for range queued {
		var r struct {
			response
			Result envelope `json:"result"`
		}
		json.Unmarshal(c.next(time.Minute), &r)
		if r.Error != nil || !r.Result.Success {
			t.Errorf("queued write: %+v %+v", r.Error, r.Result)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ts.server.RequestBytesInFlight() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still counted after every command ran", ts.server.RequestBytesInFlight())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The connection still takes large commands.
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "after", "content": strings.Repeat("a", content)})
}
