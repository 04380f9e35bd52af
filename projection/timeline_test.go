package projection_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
)

func TestTimeline(t *testing.T) {
	tl := projection.NewTimeline("s")
	var seq uint64
	apply := func(session string, typ eventlog.Type, at time.Duration, data any) {
		t.Helper()
		seq++
		if err := tl.Apply(event(seq, session, typ, t0.Add(at), data)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := tl.State(); ok {
		t.Error("an empty timeline knows its session")
	}
	exit := 2
	apply("s", eventlog.SessionCreating, 0, eventlog.SessionCreatingData{Language: "python", Runtime: "docker", Config: eventlog.SessionConfig{IdleTimeoutMinutes: 5, MaxLifetimeMinutes: 60, MemoryLimitMB: 256}})
	apply("other", eventlog.SessionCreating, 0, eventlog.SessionCreatingData{Language: "go"})
	apply("s", eventlog.SessionCreated, time.Second, eventlog.SessionCreatedData{ContainerID: "c1"})
	apply("s", eventlog.CommandStarted, 2*time.Second, eventlog.CommandStartedData{CommandID: "a", Type: "execute_shell",
		Command: json.RawMessage(`{"type":"execute_shell","commandName":"python3","args":["-c","print('hi there')"]}`)})
	apply("s", eventlog.CommandCompleted, 3*time.Second, eventlog.CommandCompletedData{CommandID: "a", Type: "execute_shell", Success: false,
		Error: "exit code 2", ExitCode: &exit, DurationMs: 1000, TimedOut: true, StdoutBytes: 10})
	apply("s", eventlog.CommandStarted, 4*time.Second, eventlog.CommandStartedData{CommandID: "b", Type: "write_file",
		Command: json.RawMessage(`{"type":"write_file","path":"/workspace/a.py","content":"x"}`)})
	apply("s", eventlog.CommandInterrupted, 5*time.Second, eventlog.CommandInterruptedData{CommandID: "b"})
	apply("s", eventlog.SessionRecovered, 6*time.Second, eventlog.SessionRecoveredData{ContainerID: "c2", Restored: true})

	s, ok := tl.State()
	if !ok || s.State != projection.Idle || s.ExecutionCount != 1 || s.ContainerID != "c2" || s.LastSeq != seq {
		t.Errorf("state while open = %+v", s)
	}
	if len(tl.Entries) != 7 {
		t.Fatalf("%d entries, want 7 (the other session's event is not one)", len(tl.Entries))
	}
	done := tl.Entries[3].Command
	if done == nil || done.Summary != `python3 -c "print('hi there')"` || done.Success == nil || *done.Success || done.ExitCode == nil || *done.ExitCode != 2 ||
		done.DurationMs == nil || *done.DurationMs != 1000 || !done.TimedOut || done.Error != "exit code 2" {
		t.Errorf("completed command = %+v", done)
	}
	if started := tl.Entries[2].Command; started == nil || started.Success != nil || started.Summary != done.Summary {
		t.Errorf("started command = %+v", started)
	}
	if c := tl.Entries[5].Command; c == nil || !c.Interrupted || c.Summary != "/workspace/a.py" || c.Type != "write_file" {
		t.Errorf("interrupted command = %+v", c)
	}
	if d := tl.Entries[0].Detail; !strings.Contains(d, "python") || !strings.Contains(d, "256 MB") {
		t.Errorf("SessionCreating detail = %q", d)
	}
	if d := tl.Entries[6].Detail; !strings.Contains(d, "c2") || !strings.Contains(d, "restored") {
		t.Errorf("SessionRecovered detail = %q", d)
	}

	apply("s", eventlog.SessionClosing, 7*time.Second, eventlog.SessionClosingData{Reason: eventlog.ReasonIdleTimeout})
	apply("s", eventlog.SessionClosed, 8*time.Second, eventlog.SessionClosedData{Reason: eventlog.ReasonIdleTimeout, Error: "workspace: could not be deleted"})
	s, ok = tl.State()
	if !ok || s.State != projection.Closed || s.CloseReason != eventlog.ReasonIdleTimeout || s.ExecutionCount != 1 || s.LastSeq != seq || s.Language != "python" {
		t.Errorf("state once closed = %+v", s)
	}
	if d := tl.Entries[len(tl.Entries)-1].Detail; !strings.Contains(d, "could not be deleted") {
		t.Errorf("SessionClosed detail = %q", d)
	}
}

func TestTimelineCreateFailed(t *testing.T) {
	tl := projection.NewTimeline("f")
	tl.Apply(event(1, "f", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{Language: "csharp"}))
	tl.Apply(event(2, "f", eventlog.SessionCreateFailed, t0, eventlog.SessionCreateFailedData{Error: "no image"}))
	if s, ok := tl.State(); !ok || s.State != projection.Closed || s.CloseReason != eventlog.ReasonCreateFailed {
		t.Errorf("state = %+v, %v", s, ok)
	}
	if d := tl.Entries[1].Detail; d != "failed: no image" {
		t.Errorf("detail = %q", d)
	}
}

func TestCommandSummary(t *testing.T) {
	for _, c := range []struct{ typ, raw, want string }{
		{"execute_shell", `{"commandName":"ls","args":["-la","/workspace"]}`, "ls -la /workspace"},
		{"execute_shell", `{"command":"echo","args":["a b",""]}`, `echo "a b" ""`},
		{"copy_file", `{"source":"a","destination":"b"}`, "a -> b"},
		{"delete_file", `{"path":"x/y"}`, "x/y"},
		{"execute_code", `{"code":"\nimport os\nprint(1)\n"}`, "import os ..."},
		{"list_directory", `{}`, "/workspace"},
		{"execute_code", `{"code":"` + strings.Repeat("é", 100) + `"}`, strings.Repeat("é", 60) + "..."},
		{"bad", `not json`, ""},
	} {
		if got := projection.CommandSummary(c.typ, json.RawMessage(c.raw)); got != c.want {
			t.Errorf("CommandSummary(%s, %s) = %q, want %q", c.typ, c.raw, got, c.want)
		}
	}
}
