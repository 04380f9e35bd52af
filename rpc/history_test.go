package rpc_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/migrations"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// historyPage is session.history's result as the client reads it.
type historyPage struct {
	Events []struct {
		Seq       uint64          `json:"seq"`
		ID        string          `json:"id"`
		SessionID string          `json:"sessionId"`
		Time      time.Time       `json:"time"`
		Type      string          `json:"type"`
		V         int             `json:"v"`
		Data      json.RawMessage `json:"data"`
		Hash      string          `json:"hash"`
	} `json:"events"`
	NextAfterSeq uint64 `json:"nextAfterSeq"`
	More         bool   `json:"more"`
}

func (p historyPage) types() []string {
	var out []string
	for _, e := range p.Events {
		out = append(out, e.Type)
	}
	return out
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// The history of a session that ran several commands, over a real
// WebSocket, while open and once closed.
func TestHistoryOfSession(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "hello.py", "content": "print('Hello, World!')"})
	if r := c.shell(sid, "python3", "/workspace/hello.py"); r.Stdout != "Hello, World!\n" {
		t.Fatalf("shell: %+v", r)
	}
	if r := c.shell(sid, "sh", "-c", "echo oops >&2; exit 3"); r.ExitCode != 3 {
		t.Fatalf("shell: %+v", r)
	}
	other := c.create(map[string]any{"language": "python"}) // its events interleave in the log

	var h historyPage
	raw := c.ok("session.history", map[string]any{"sessionId": sid}, &h)
	want := []string{"SessionCreating", "SessionCreated", "CommandStarted", "CommandCompleted", "CommandStarted", "CommandCompleted", "CommandStarted", "CommandCompleted"}
	if !reflect.DeepEqual(h.types(), want) {
		t.Fatalf("history types %v, want %v", h.types(), want)
	}
	if h.More || h.NextAfterSeq != h.Events[len(h.Events)-1].Seq {
		t.Errorf("one page with everything: more %v, nextAfterSeq %d", h.More, h.NextAfterSeq)
	}
	var members struct {
		Events []json.RawMessage `json:"events"`
	}
	json.Unmarshal(raw, &members)
	for i, e := range h.Events {
		if got := keys(t, members.Events[i]); !reflect.DeepEqual(got, []string{"data", "hash", "id", "seq", "sessionId", "time", "type", "v"}) {
			t.Errorf("event members %v", got)
		}
		if e.SessionID != sid || e.V != migrations.PayloadVersion || len(e.ID) != 26 || e.Time.IsZero() || !hexHash.MatchString(e.Hash) {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && (e.Seq <= h.Events[i-1].Seq || e.ID <= h.Events[i-1].ID) {
			t.Errorf("event %d (seq %d) does not follow seq %d", i, e.Seq, h.Events[i-1].Seq)
		}
	}
	var done eventlog.CommandCompletedData
	json.Unmarshal(h.Events[5].Data, &done)
	if !done.Success || done.Stdout != "Hello, World!\n" || done.ExitCode == nil || *done.ExitCode != 0 || done.Type != "execute_shell" {
		t.Errorf("second command's result %s", h.Events[5].Data)
	}
	json.Unmarshal(h.Events[7].Data, &done)
	if done.Success || done.Stderr != "oops\n" || *done.ExitCode != 3 {
		t.Errorf("third command's result %s", h.Events[7].Data)
	}
	var started eventlog.CommandStartedData
	json.Unmarshal(h.Events[4].Data, &started)
	if !strings.Contains(string(started.Command), `"commandName":"python3"`) {
		t.Errorf("CommandStarted holds %s", h.Events[4].Data)
	}

	// Closed, its history is still there, with the close.
	c.ok("session.close", map[string]any{"sessionId": sid}, nil)
	var closed historyPage
	c.ok("session.history", map[string]any{"sessionId": sid}, &closed)
	if got := closed.types(); len(got) != len(want)+2 || got[len(got)-2] != "SessionClosing" || got[len(got)-1] != "SessionClosed" {
		t.Errorf("history of the closed session: %v", got)
	}
	if !reflect.DeepEqual(closed.Events[:len(h.Events)], h.Events) {
		t.Error("the history of the closed session does not begin with what it was while open")
	}
	// session.execute says it is closed; history still reads it.
	c.rpcErr("session.execute", map[string]any{"sessionId": sid, "command": map[string]any{"type": "list_directory"}}, rpc.CodeSessionClosed)

	// Unknown sessions and bad params.
	e := c.rpcErr("session.history", map[string]any{"sessionId": "nope"}, rpc.CodeSessionNotFound)
	if !strings.Contains(e.String(), "nope") {
		t.Errorf("not found error %s does not name the session", e)
	}
	for _, limit := range []any{0, -1, rpc.MaxHistoryLimit + 1, "ten"} {
		c.rpcErr("session.history", map[string]any{"sessionId": sid, "limit": limit}, -32602)
	}
	c.ok("session.close", map[string]any{"sessionId": other}, nil)
}

// Paging through a session's history and the whole log.
func TestHistoryPaging(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	a := c.create(map[string]any{"language": "python"})
	b := c.create(map[string]any{"language": "python"})
	for i := range 3 {
		c.mustSucceed(a, map[string]any{"type": "create_directory", "path": "d" + string(rune('0'+i))})
		c.mustSucceed(b, map[string]any{"type": "list_directory"})
	}
	c.ok("session.close", map[string]any{"sessionId": b}, nil)

	var all historyPage
	c.ok("session.history", map[string]any{"sessionId": a}, &all)
	if len(all.Events) != 8 {
		t.Fatalf("session a has %d events, want 8", len(all.Events))
	}
	for _, limit := range []int{1, 3, 8} {
		var paged historyPage
		after, pages := uint64(0), 0
		for {
			var p historyPage
			c.ok("session.history", map[string]any{"sessionId": a, "afterSeq": after, "limit": limit}, &p)
			pages++
			if len(p.Events) > limit {
				t.Fatalf("a page of %d has %d events", limit, len(p.Events))
			}
			paged.Events = append(paged.Events, p.Events...)
			if len(p.Events) > 0 && p.NextAfterSeq != p.Events[len(p.Events)-1].Seq {
				t.Errorf("nextAfterSeq %d is not the page's last seq", p.NextAfterSeq)
			}
			if !p.More {
				break
			}
			after = p.NextAfterSeq
		}
		if !reflect.DeepEqual(paged.Events, all.Events) {
			t.Errorf("pages of %d give %v, want %v", limit, paged.types(), all.types())
		}
		if want := (8 + limit - 1) / limit; pages != want {
			t.Errorf("pages of %d: %d pages, want %d", limit, pages, want)
		}
	}
	// After the last event: an empty page that stays where it is.
	var end historyPage
	c.ok("session.history", map[string]any{"sessionId": a, "afterSeq": all.NextAfterSeq}, &end)
	if len(end.Events) != 0 || end.More || end.NextAfterSeq != all.NextAfterSeq {
		t.Errorf("page after the end: %+v", end)
	}

	// No sessionId: the whole log, every session, in seq order without gaps.
	var log historyPage
	for after := uint64(0); ; {
		var p historyPage
		c.ok("session.history", map[string]any{"afterSeq": after, "limit": 5}, &p)
		log.Events = append(log.Events, p.Events...)
		if !p.More {
			break
		}
		after = p.NextAfterSeq
	}
	sessions := map[string]int{}
	for i, e := range log.Events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("whole-log event %d has seq %d", i+1, e.Seq)
		}
		sessions[e.SessionID]++
	}
	if sessions[a] != 8 || sessions[b] != 10 || len(sessions) != 2 {
		t.Errorf("whole log by session: %v, want a 8 and the closed b 10", sessions)
	}
	last, err := ts.svc.Log().LastSeq()
	if err != nil || uint64(len(log.Events)) != last {
		t.Errorf("whole log paged gives %d events, the log has %d (%v)", len(log.Events), last, err)
	}
}

// storedOutput is the output members of a CommandCompleted payload as
// session.history returns them.
type storedOutput struct {
	Stdout         string `json:"stdout"`
	StdoutEncoding string `json:"stdoutEncoding"`
	Stderr         string `json:"stderr"`
	StderrEncoding string `json:"stderrEncoding"`
	StoredCut      bool   `json:"storedCut"`
}

// storedBytes returns the bytes one stream's members hold.
func storedBytes(t *testing.T, text, encoding string) []byte {
	t.Helper()
	switch encoding {
	case "":
		return []byte(text)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			t.Fatalf("stored output %q is not base64: %v", text, err)
		}
		return b
	}
	t.Fatalf("stored output has encoding %q", encoding)
	return nil
}

// lastOutput returns the output the session's last CommandCompleted event
// holds, read back with session.history.
func lastOutput(t *testing.T, c *wsClient, sid string) storedOutput {
	t.Helper()
	var h historyPage
	c.ok("session.history", map[string]any{"sessionId": sid, "limit": rpc.MaxHistoryLimit}, &h)
	for i := len(h.Events) - 1; i >= 0; i-- {
		if h.Events[i].Type == "CommandCompleted" {
			var o storedOutput
			if err := json.Unmarshal(h.Events[i].Data, &o); err != nil {
				t.Fatal(err)
			}
			return o
		}
	}
	t.Fatal("no CommandCompleted in the history")
	return storedOutput{}
}

// Output that is not UTF-8 is stored as the bytes the program printed;
// the client's reply still shows it as text.
func TestHistoryKeepsOutputBytes(t *testing.T) {
	const limit = 7 // stored bytes per stream
	ts := newTestServer(t, func(c *rpc.Config, _ *ws.Options) { c.Limits.StoredOutputBytes = limit })
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	defer c.ok("session.close", map[string]any{"sessionId": sid}, nil)

	printed := []byte("\xff\xfe ok\x80")
	r := c.shell(sid, "python3", "-c", `import sys; sys.stdout.buffer.write(b'\xff\xfe ok\x80'); sys.stderr.buffer.write(b'caf\xc3\xa9')`)
	if r.Stdout != "\uFFFD ok\uFFFD" || r.Stderr != "café" {
		t.Errorf("the reply changed: stdout %q, stderr %q", r.Stdout, r.Stderr)
	}
	o := lastOutput(t, c, sid)
	if got := storedBytes(t, o.Stdout, o.StdoutEncoding); !bytes.Equal(got, printed) {
		t.Errorf("stored stdout %q (%q, encoding %q), the program printed %q", got, o.Stdout, o.StdoutEncoding, printed)
	}
	if o.StderrEncoding != "" || o.Stderr != "café" || o.StoredCut {
		t.Errorf("UTF-8 stderr stored as %+v, want the text as it is", o)
	}

	// execute_code: the same bytes, through the other path.
	c.exec(sid, map[string]any{"type": "execute_code", "code": `import sys; sys.stdout.buffer.write(b'\xff\xfe ok\x80')`})
	if o := lastOutput(t, c, sid); !bytes.Equal(storedBytes(t, o.Stdout, o.StdoutEncoding), printed) {
		t.Errorf("execute_code: stored stdout %+v, the program printed %q", o, printed)
	}

	// Cut at the stored cap: bytes, never inside a character, so UTF-8
	// stays text.
	c.shell(sid, "python3", "-c", `import sys; sys.stdout.buffer.write('ééééé'.encode()); sys.stderr.buffer.write(b'\xff' * 10)`)
	o = lastOutput(t, c, sid)
	if o.Stdout != "ééé" || o.StdoutEncoding != "" || !o.StoredCut {
		t.Errorf("UTF-8 cut at %d bytes: stored %+v, want the text of the whole characters within them", limit, o)
	}
	if got := storedBytes(t, o.Stderr, o.StderrEncoding); !bytes.Equal(got, bytes.Repeat([]byte{0xff}, limit)) {
		t.Errorf("bytes cut at %d: stored %q (%+v)", limit, got, o)
	}
}

// A page stops growing at the page size or the reply cap, whichever is
// lower, and ends early with more: true; an event bigger than the page
// size comes alone; one bigger than the reply cap is an error naming it.
func TestHistoryPagesStopAtTheirSize(t *testing.T) {
	const maxReply = 8 << 20
	ts := newTestServer(t, func(_ *rpc.Config, o *ws.Options) { o.MaxReplyBytes = maxReply })
	c := ts.dial()
	const sid = "01hpagesize0000000000000000"
	completed := func(i, outputBytes int) eventlog.Record {
		return eventlog.Record{SessionID: sid, Type: eventlog.CommandCompleted, Data: map[string]any{
			"commandId": fmt.Sprint(i), "type": "execute_shell", "success": true, "exitCode": 0, "stdout": strings.Repeat("o", outputBytes)}}
	}
	recs := []eventlog.Record{
		{SessionID: sid, Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{Language: "python", Runtime: "docker"}},
		{SessionID: sid, Type: eventlog.SessionCreated, Data: eventlog.SessionCreatedData{ContainerID: "gone"}},
	}
	for i := range 60 {
		recs = append(recs, completed(i, 100<<10))
	}
	recs = append(recs, completed(60, 6<<20), completed(61, 9<<20), completed(62, 10))
	recs = append(recs,
		eventlog.Record{SessionID: sid, Type: eventlog.SessionClosing, Data: eventlog.SessionClosingData{Reason: eventlog.ReasonClient}},
		eventlog.Record{SessionID: sid, Type: eventlog.SessionClosed, Data: eventlog.SessionClosedData{Reason: eventlog.ReasonClient}})
	events, err := ts.svc.Log().Append(t.Context(), recs...)
	if err != nil {
		t.Fatal(err)
	}
	huge := events[len(events)-4].Seq // the 9 MiB event

	for _, params := range []map[string]any{{"sessionId": sid}, {}} {
		var got []uint64
		after := uint64(0)
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("paging does not end")
			}
			params["afterSeq"], params["limit"] = after, rpc.MaxHistoryLimit
			r := c.call("session.history", params)
			if r.Error != nil {
				var data struct {
					Bytes, MaxBytes int
					Seq             uint64
				}
				json.Unmarshal(r.Error.Data, &data)
				if r.Error.Code != rpc.CodeMessageTooLarge || data.Seq != huge || data.Bytes < 9<<20 || data.MaxBytes > maxReply {
					t.Fatalf("history after %d: %s", after, r.Error)
				}
				after = huge // the client skips it
				continue
			}
			var p historyPage
			json.Unmarshal(r.Result, &p)
			size := len(r.Result)
			if size > maxReply || len(p.Events) > 1 && size > rpc.MaxHistoryPageBytes+4<<10 {
				t.Errorf("a page of %d events is %d bytes", len(p.Events), size)
			}
			for _, e := range p.Events {
				got = append(got, e.Seq)
			}
			if len(p.Events) > 0 && p.NextAfterSeq != p.Events[len(p.Events)-1].Seq {
				t.Errorf("nextAfterSeq %d, last event %d", p.NextAfterSeq, p.Events[len(p.Events)-1].Seq)
			}
			if len(p.Events) == 1 && len(p.Events[0].Data) > 6<<20 && !p.More {
				t.Errorf("the 6 MiB event's page says no more")
			}
			if !p.More {
				break
			}
			if len(p.Events) == 0 {
				t.Fatal("an empty page says more")
			}
			after = p.NextAfterSeq
		}
		var want []uint64
		for _, e := range events {
			if e.Seq != huge {
				want = append(want, e.Seq)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("paged %v\nwant %v", got, want)
		}
	}
	// The first page of 100 KiB events ends early, at the page size.
	var first historyPage
	c.ok("session.history", map[string]any{"sessionId": sid, "limit": rpc.MaxHistoryLimit}, &first)
	if n := len(first.Events); !first.More || n < 30 || n > 42 || first.NextAfterSeq != first.Events[n-1].Seq {
		t.Errorf("first page: %d events, more %v, nextAfterSeq %d", n, first.More, first.NextAfterSeq)
	}
}
