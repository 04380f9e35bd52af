package eventlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
)

// envMillionDir names where BenchmarkVerifyMillion and
// BenchmarkReplayMillion keep the log of a million events they build (about
// 600 MB; it takes a minute or two to write), so that a second run reuses
// it. Unset, they use a folder in the temporary directory.
const envMillionDir = "CODEBEAKER_BENCH_MILLION_DIR"

const millionEvents = 1_000_000

// millionLog returns the path of a closed log of a million events: 10,000
// sessions of 100 events each (created, 48 commands with a command object
// and a few hundred bytes of output, closed), written as a server would.
func millionLog(b *testing.B) string {
	b.Helper()
	dir := os.Getenv(envMillionDir)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "codebeaker-bench-million")
	}
	path := filepath.Join(dir, eventlog.FileName)
	if l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true}); err == nil {
		last, err := l.LastSeq()
		l.Close()
		if err == nil && last == millionEvents {
			return path
		}
	}
	os.Remove(path)
	start := time.Now()
	l, err := eventlog.Open(path, eventlog.Options{MaxBatch: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	output := strings.Repeat("line of output from a test run: ok\n", 8) // 288 bytes
	exit := 0
	for s := range millionEvents / 100 {
		id := fmt.Sprintf("01kbench%018d", s)
		recs := []eventlog.Record{
			{SessionID: id, Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{Language: "python", Runtime: "docker",
				Config: eventlog.SessionConfig{IdleTimeoutMinutes: 30, MaxLifetimeMinutes: 120, MemoryLimitMB: 512, CPUShares: 1024, PidsLimit: 256, Image: "codebeaker-python:latest"}}},
			{SessionID: id, Type: eventlog.SessionCreated, Data: eventlog.SessionCreatedData{ContainerID: strings.Repeat("c0ffee", 10) + "abcd", Workspace: "/var/lib/codebeaker/workspaces/" + id}},
		}
		for c := range 48 {
			cmd := fmt.Sprintf("01KBENCHCMD%015d", s*48+c)
			recs = append(recs,
				eventlog.Record{SessionID: id, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: cmd, Type: "execute_shell",
					Command: json.RawMessage(`{"type":"execute_shell","commandName":"python3","args":["-m","pytest","-q","/workspace/tests/test_app.py"],"timeoutMs":30000}`)}},
				eventlog.Record{SessionID: id, Type: eventlog.CommandCompleted, Data: eventlog.CommandCompletedData{CommandID: cmd, Type: "execute_shell", Success: true,
					ExitCode: &exit, DurationMs: 850, StdoutBytes: int64(len(output)), Stdout: output}})
		}
		recs = append(recs,
			eventlog.Record{SessionID: id, Type: eventlog.SessionClosing, Data: eventlog.SessionClosingData{Reason: eventlog.ReasonIdleTimeout}},
			eventlog.Record{SessionID: id, Type: eventlog.SessionClosed, Data: eventlog.SessionClosedData{Reason: eventlog.ReasonIdleTimeout}})
		if s%10 == 0 { // a tenth stay open
			recs = recs[:len(recs)-2]
			recs = append(recs,
				eventlog.Record{SessionID: id, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: id + "-last", Type: "list_directory"}},
				eventlog.Record{SessionID: id, Type: eventlog.CommandCompleted, Data: eventlog.CommandCompletedData{CommandID: id + "-last", Type: "list_directory", Success: true}})
		}
		if _, err := l.Append(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	info, _ := os.Stat(path)
	b.Logf("wrote %s: %d events, %d MB, in %s", path, millionEvents, info.Size()>>20, time.Since(start).Round(time.Second))
	return path
}

// BenchmarkVerifyMillion verifies a log of a million events:
//
//	go test ./eventlog -run '^$' -bench Million -benchtime 1x
func BenchmarkVerifyMillion(b *testing.B) {
	path := millionLog(b)
	for b.Loop() {
		v, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if v.Events != millionEvents {
			b.Fatalf("verified %d events", v.Events)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
	b.ReportMetric(float64(millionEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReplayMillion opens a log of a million events read-only and
// rebuilds the projection from it, as `codebeaker audit replay` does.
func BenchmarkReplayMillion(b *testing.B) {
	path := millionLog(b)
	for b.Loop() {
		l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		p, err := projection.Rebuild(l)
		l.Close()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(p.List()); n != millionEvents/100/10 {
			b.Fatalf("replay left %d open sessions", n)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/replay")
	b.ReportMetric(float64(millionEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
