package rpc_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
)

// Requests on one connection run concurrently; commands of one session run
// one at a time in the order they arrived.
func TestConcurrency(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	slow := c.create(map[string]any{"language": "python"})
	ordered := c.create(map[string]any{"language": "python"})

	// A slow command does not hold up the connection's other requests.
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		c.shell(slow, "sleep", "3")
	}()
	time.Sleep(300 * time.Millisecond) // let the sleep start
	c.ok("session.list", map[string]any{}, nil)
	c.shell(ordered, "true")
	select {
	case <-slowDone:
		t.Fatal("session.list and another session's command waited for a slow command")
	default:
	}

	// Ten appends sent back to back, without waiting, land in order. Each
	// sleeps a little, the early ones longer, so running them at once would
	// mix the order.
	const n = 10
	var frames []string
	for i := range n {
		frames = append(frames, fmt.Sprintf(`{"jsonrpc":"2.0","id":"order-%d","method":"session.execute","params":{"sessionId":%q,"command":{"type":"execute_shell","commandName":"sh","args":["-c","sleep 0.%d; echo %d >> order.txt"]}}}`, i, ordered, n-1-i, i))
	}
	for _, f := range frames {
		c.send(f)
	}
	for range n {
		var r response
		json.Unmarshal(c.next(time.Minute), &r)
		if r.Error != nil {
			t.Fatalf("ordered command: %s", r.Error)
		}
	}
	env := c.mustSucceed(ordered, map[string]any{"type": "read_file", "path": "order.txt"})
	var got struct{ Content string }
	json.Unmarshal(env.Result, &got)
	want := ""
	for i := range n {
		want += fmt.Sprintf("%d\n", i)
	}
	if got.Content != want {
		t.Errorf("commands ran out of order: %q", got.Content)
	}
	<-slowDone

	// A batch keeps its place: the frame after it runs after all of it.
	var batch []string
	for i := range 5 {
		batch = append(batch, fmt.Sprintf(`{"jsonrpc":"2.0","id":"b-%d","method":"session.execute","params":{"sessionId":%q,"command":{"type":"execute_shell","commandName":"sh","args":["-c","sleep 0.%d; echo b >> batch.txt"]}}}`, i, ordered, 5-i))
	}
	c.send("[" + strings.Join(batch, ",") + "]")
	c.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":"after","method":"session.execute","params":{"sessionId":%q,"command":{"type":"execute_shell","commandName":"sh","args":["-c","echo after >> batch.txt"]}}}`, ordered))
	for range 2 {
		c.next(time.Minute)
	}
	env = c.mustSucceed(ordered, map[string]any{"type": "read_file", "path": "batch.txt"})
	json.Unmarshal(env.Result, &got)
	if got.Content != "b\nb\nb\nb\nb\nafter\n" {
		t.Errorf("a frame overtook the batch before it: %q", got.Content)
	}

	// Many clients at once: every reply is in the log before it is sent,
	// so each command a client saw succeed has its CommandCompleted event.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			c := ts.dial()
			sid := c.create(map[string]any{"language": "python"})
			for i := range 5 {
				c.mustSucceed(sid, map[string]any{"type": "write_file", "path": fmt.Sprintf("f%d", i), "content": strings.Repeat("x", w)})
				events, err := ts.svc.Log().SessionEvents(sid, 0, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if last := events[len(events)-1]; last.Type != eventlog.CommandCompleted {
					t.Errorf("reply sent before its CommandCompleted event was logged: last event %s", last.Type)
				}
			}
			var list struct {
				Sessions []struct {
					SessionID      string
					ExecutionCount int
				}
			}
			c.ok("session.list", map[string]any{}, &list)
			for _, s := range list.Sessions {
				if s.SessionID == sid && s.ExecutionCount != 5 {
					t.Errorf("session %s executionCount %d, want 5", sid, s.ExecutionCount)
				}
			}
			c.ok("session.close", map[string]any{"sessionId": sid}, nil)
		})
	}
	wg.Wait()
}
