package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/migrations"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/ from the current code")

// runAudit runs `codebeaker audit args...` in the test's process.
func runAudit(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = (&Command{Stdout: &out, Stderr: &errOut, DataDir: "data"}).Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

func mustAudit(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runAudit(t, args...)
	if err != nil {
		t.Fatalf("codebeaker audit %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// writeLog writes a data dir with two sessions through the eventlog API,
// the first closed, and returns it.
func writeLog(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	l, err := eventlog.Open(logPath(dir), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	add := func(session string, typ eventlog.Type, data any) {
		if _, err := l.Append(context.Background(), eventlog.Record{SessionID: session, Type: typ, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"closed", "open"} {
		add(s, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python", Runtime: "docker"})
		add(s, eventlog.SessionCreated, eventlog.SessionCreatedData{ContainerID: "c-" + s})
		for i := range 2 {
			exit := i
			add(s, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: fmt.Sprint(i), Type: "execute_shell",
				Command: json.RawMessage(`{"type":"execute_shell","commandName":"echo","args":["hello world"]}`)})
			add(s, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: fmt.Sprint(i), Type: "execute_shell", Success: exit == 0,
				ExitCode: &exit, DurationMs: 5, Stdout: strings.Repeat("hello world\n", 20), Stderr: "<careful> & done"})
		}
	}
	add("closed", eventlog.SessionClosing, eventlog.SessionClosingData{Reason: eventlog.ReasonClient})
	add("closed", eventlog.SessionClosed, eventlog.SessionClosedData{Reason: eventlog.ReasonClient})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAuditVerify(t *testing.T) {
	dir := writeLog(t)
	out := mustAudit(t, "verify", "--data-dir", dir)
	var n uint64
	var head string
	if _, err := fmt.Sscanf(out, "ok: %d events, head hash %s\n", &n, &head); err != nil || n != 14 || len(head) != 64 {
		t.Fatalf("verify printed %q, want ok: 14 events, head hash H", out)
	}
	// With the head kept as an anchor, still ok.
	mustAudit(t, "verify", "--data-dir", dir, "--anchor", fmt.Sprintf("%d:%s", n, head))

	// One byte of event 6's output changed with bbolt.
	db, err := bolt.Open(logPath(dir), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(migrations.BucketEvents)
		k := []byte{0, 0, 0, 0, 0, 0, 0, 6}
		return b.Put(k, bytes.Replace(b.Get(k), []byte("hello world"), []byte("hello World"), 1))
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	out, _, err = runAudit(t, "verify", "--data-dir", dir)
	if err == nil || errors.Is(err, flag.ErrHelp) { // main exits 1 on any other error
		t.Fatalf("verify of an altered log = %v, want an error (exit 1)", err)
	}
	if !strings.HasPrefix(out, "FAILED: event 6 (id ") || !strings.Contains(out, "CommandCompleted of session closed) changed") {
		t.Errorf("verify printed %q, want the changed event 6 named", out)
	}

	// Usage errors.
	if _, _, err := runAudit(t, "verify", "--data-dir", dir, "--anchor", "x"); err == nil {
		t.Error("verify accepted --anchor x")
	}
	if _, _, err := runAudit(t, "verify", "--data-dir", t.TempDir()); err == nil {
		t.Error("verify of a folder without a log succeeded")
	}
	if _, _, err := runAudit(t, "nonsense"); err == nil {
		t.Error("audit nonsense succeeded")
	}
}

func TestAuditExport(t *testing.T) {
	dir := writeLog(t)
	lines := func(out string) []eventlog.Event {
		t.Helper()
		var events []eventlog.Event
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			var e eventlog.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("line %q is not an event: %v", line, err)
			}
			events = append(events, e)
		}
		return events
	}
	all := lines(mustAudit(t, "export", "--data-dir", dir))
	if len(all) != 14 {
		t.Fatalf("export gave %d events, want 14", len(all))
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) || e.Hash == "" || e.ID.IsZero() {
			t.Errorf("exported event %d: %+v", i+1, e)
		}
	}
	var d eventlog.CommandCompletedData
	if err := all[3].Decode(&d); err != nil || d.Stderr != "<careful> & done" || d.Stdout != strings.Repeat("hello world\n", 20) {
		t.Errorf("exported CommandCompleted %s: %v", all[3].Data, err)
	}
	open := lines(mustAudit(t, "export", "--data-dir", dir, "--session", "open", "--after", "8"))
	for _, e := range open {
		if e.SessionID != "open" || e.Seq <= 8 {
			t.Errorf("export --session open --after 8 gave event %d of %s", e.Seq, e.SessionID)
		}
	}
	if len(open) != 4 { // 7 to 12 are the open session's
		t.Errorf("export --session open --after 8 gave %d events, want 4", len(open))
	}
	if _, _, err := runAudit(t, "export", "--data-dir", dir, "--session", "nobody"); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("export of an unknown session = %v", err)
	}
}

func TestAuditCompact(t *testing.T) {
	dir := writeLog(t)
	if _, _, err := runAudit(t, "compact", "--data-dir", dir); err == nil {
		t.Error("compact without --older-than succeeded")
	}
	if _, _, err := runAudit(t, "compact", "--data-dir", dir, "--older-than", "soon"); err == nil {
		t.Error("compact --older-than soon succeeded")
	}
	// Nothing is a day old.
	if out := mustAudit(t, "compact", "--data-dir", dir, "--older-than", "1d"); !strings.HasPrefix(out, "compacted the stored output of 0 command results") {
		t.Errorf("compact --older-than 1d: %q", out)
	}
	before := mustAudit(t, "verify", "--data-dir", dir)
	out := mustAudit(t, "compact", "--data-dir", dir, "--older-than", "0s")
	if !strings.HasPrefix(out, "compacted the stored output of 2 command results of 1 closed sessions") || !strings.HasSuffix(out, before) {
		t.Errorf("compact printed %q; want 2 results compacted and the same verify line as before, %q", out, before)
	}
	if after := mustAudit(t, "verify", "--data-dir", dir); after != before {
		t.Errorf("verify after compaction %q, before %q", after, before)
	}
	for _, line := range strings.Split(strings.TrimSpace(mustAudit(t, "export", "--data-dir", dir)), "\n") {
		var e struct {
			SessionID string
			Type      eventlog.Type
			Data      eventlog.CommandCompletedData
		}
		json.Unmarshal([]byte(line), &e)
		if e.Type != eventlog.CommandCompleted {
			continue
		}
		if dropped := e.Data.Stdout == "" && e.Data.Stderr == "" && e.Data.OutputCompacted && e.Data.StdoutSha256 != ""; dropped != (e.SessionID == "closed") {
			t.Errorf("after compaction, a command of session %s: %+v", e.SessionID, e.Data)
		}
	}
	if out := mustAudit(t, "replay", "--data-dir", dir, "--session", "closed"); !strings.Contains(out, "output compacted") {
		t.Errorf("the timeline does not say the output was compacted:\n%s", out)
	}
}

// The committed layout-1 file, read as it is: its replay is golden; verify
// says it has no chain until it is migrated.
func TestAuditLayout1File(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("../../../testdata/layout1.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath(dir), data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runAudit(t, "verify", "--data-dir", dir)
	if err == nil || !errors.Is(err, eventlog.ErrNoChain) {
		t.Errorf("verify of a layout-1 file = %v, want ErrNoChain", err)
	}
	got := mustAudit(t, "replay", "--data-dir", dir, "--until", "32", "--format", "json") +
		mustAudit(t, "replay", "--data-dir", dir, "--until", "32", "--session", "01jfgo0000000000000000000b") +
		mustAudit(t, "replay", "--data-dir", dir, "--until", "10", "--session", "01jfpy0000000000000000000a", "--format", "json")
	golden(t, "../../../testdata/layout1.replay.golden", got)
	if after, _ := os.ReadFile(logPath(dir)); !bytes.Equal(after, data) {
		t.Error("replay changed the data file")
	}
	// Migrated by compaction, it verifies and replays the same.
	mustAudit(t, "compact", "--data-dir", dir, "--older-than", "1000d")
	mustAudit(t, "verify", "--data-dir", dir)
	if again := mustAudit(t, "replay", "--data-dir", dir, "--until", "32", "--format", "json"); !strings.HasPrefix(got, again) {
		t.Errorf("replay after the migration differs:\n%s", again)
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (rerun with -update if the change is meant):\n got %s\nwant %s", path, got, want)
	}
}

// pagedLog is a Source over a data file, a few events a page, as a
// server's session.history pages it.
type pagedLog struct {
	log   *eventlog.Log
	calls int
}

const pageSize = 3

func (p *pagedLog) Page(ctx context.Context, sessionID string, afterSeq uint64) ([]eventlog.Event, bool, error) {
	p.calls++
	if sessionID == "" {
		events, err := p.log.Events(afterSeq, pageSize)
		return events, len(events) == pageSize, err
	}
	if ok, err := p.log.HasSession(sessionID); err != nil || !ok {
		return nil, false, errors.Join(err, fmt.Errorf("session.history: no session with id %q", sessionID))
	}
	events, err := p.log.SessionEvents(sessionID, afterSeq, pageSize)
	return events, len(events) == pageSize, err
}

func (p *pagedLog) Close() error { return nil }

// Through a Source, page by page, replay and export print what they print
// from the data file; --server needs a DialServer, and excludes --data-dir.
func TestAuditServerSource(t *testing.T) {
	dir := writeLog(t)
	runs := [][]string{
		{"export"},
		{"export", "--session", "open", "--after", "8"},
		{"replay", "--until", "9", "--format", "json"},
		{"replay", "--until", "13"},
		{"replay", "--session", "closed", "--until", "12"},
		{"replay", "--session", "open", "--until", "10", "--format", "json"},
	}
	var want []string
	for _, args := range runs {
		want = append(want, mustAudit(t, append(args, "--data-dir", dir)...))
	}

	l, err := eventlog.Open(logPath(dir), eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	source := &pagedLog{log: l}
	var dialed []string
	server := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		c := &Command{Stdout: &out, Stderr: &errOut, DataDir: "data", DialServer: func(_ context.Context, url string) (Source, error) {
			dialed = append(dialed, url)
			return source, nil
		}}
		err := c.Run(context.Background(), append(args, "--server", "ws://127.0.0.1:1/ws/jsonrpc"))
		return out.String(), err
	}
	for i, args := range runs {
		got, err := server(args...)
		if err != nil || got != want[i] {
			t.Errorf("audit %s --server: %v\n%s\nwant, as from the data file:\n%s", strings.Join(args, " "), err, got, want[i])
		}
	}
	if len(dialed) != len(runs) || dialed[0] != "ws://127.0.0.1:1/ws/jsonrpc" {
		t.Errorf("dialed %q, want the --server URL once a run", dialed)
	}
	if source.calls < 14/pageSize {
		t.Errorf("%d pages read, want the log read a page at a time", source.calls)
	}
	if _, err := server("export", "--session", "nobody"); err == nil || !strings.Contains(err.Error(), `no session with id "nobody"`) {
		t.Errorf("export --server of an unknown session = %v, want the server's error", err)
	}

	if _, _, err := runAudit(t, "replay", "--server", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "cannot read through a server") {
		t.Errorf("replay --server without DialServer = %v", err)
	}
	if _, err := server("export", "--data-dir", dir); err == nil || err.Error() != "give --data-dir or --server, not both" {
		t.Errorf("export --data-dir --server = %v", err)
	}
}
