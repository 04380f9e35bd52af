package eventlog_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
	"github.com/codebeaker/codebeaker/projection"
)

func TestEventsPages(t *testing.T) {
	l := eventlogtest.Open(t)
	for i := range 10 {
		appendOne(t, l, rec(fmt.Sprintf("s%d", i%3), eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprint(i)}))
	}
	all := scanAll(t, l)
	var paged []eventlog.Event
	for after := uint64(0); ; {
		page, err := l.Events(after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 3 {
			t.Fatalf("a page of 3 has %d events", len(page))
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Seq
	}
	if !reflect.DeepEqual(paged, all) {
		t.Errorf("paged events %v differ from Scan's %v", seqs(paged), seqs(all))
	}
	if rest, err := l.Events(7, 0); err != nil || !reflect.DeepEqual(seqs(rest), []uint64{8, 9, 10}) {
		t.Errorf("Events(7, no limit) = %v, %v", seqs(rest), err)
	}
	if none, err := l.Events(10, 5); err != nil || len(none) != 0 {
		t.Errorf("Events after the last = %v, %v", seqs(none), err)
	}
}

func TestReadOnly(t *testing.T) {
	path, events := auditedLog(t)
	l := eventlogtest.OpenWith(t, path, eventlog.Options{ReadOnly: true})
	// Readers share the file.
	other := eventlogtest.OpenWith(t, path, eventlog.Options{ReadOnly: true})
	if got := scanAll(t, other); !reflect.DeepEqual(got, events) {
		t.Errorf("a read-only log reads %v, want %v", seqs(got), seqs(events))
	}
	if _, err := l.Append(context.Background(), rec("s", eventlog.SessionClosing, eventlog.SessionClosingData{})); !errors.Is(err, eventlog.ErrReadOnly) {
		t.Errorf("Append to a read-only log = %v, want ErrReadOnly", err)
	}
	if _, err := l.CompactOutput(context.Background(), time.Now()); !errors.Is(err, eventlog.ErrReadOnly) {
		t.Errorf("CompactOutput of a read-only log = %v, want ErrReadOnly", err)
	}
	// A writer cannot have it while readers do, and the other way round.
	if w, err := eventlog.Open(path, eventlog.Options{LockTimeout: 100 * time.Millisecond}); !errors.Is(err, eventlog.ErrLocked) {
		if err == nil {
			w.Close()
		}
		t.Errorf("Open for writing while readers hold the file = %v, want ErrLocked", err)
	}
	l.Close()
	other.Close()
	w := eventlogtest.OpenWith(t, path, eventlog.Options{})
	if r, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond}); !errors.Is(err, eventlog.ErrLocked) {
		if err == nil {
			r.Close()
		}
		t.Errorf("read-only Open while a writer holds the file = %v, want ErrLocked", err)
	}
	w.Close()
	if _, err := eventlog.Open(path+".missing", eventlog.Options{ReadOnly: true}); err == nil {
		t.Error("read-only Open of a missing file succeeded")
	}
}

// Compaction drops old output of closed sessions only, and the chain still
// verifies.
func TestCompactOutput(t *testing.T) {
	l, live := eventlogtest.OpenLive(t)
	ctx := context.Background()
	command := func(session, id, stdout, stderr string) {
		t.Helper()
		exit := 0
		appendOne(t, l, rec(session, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: id, Type: "execute_shell"}))
		appendOne(t, l, rec(session, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: id, Type: "execute_shell", Success: true,
			ExitCode: &exit, StdoutBytes: int64(len(stdout)), StderrBytes: int64(len(stderr)), Stdout: stdout, Stderr: stderr}))
	}
	for _, s := range []string{"closed", "open", "late"} {
		appendOne(t, l, rec(s, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python"}))
		appendOne(t, l, rec(s, eventlog.SessionCreated, eventlog.SessionCreatedData{}))
	}
	command("closed", "c1", strings.Repeat("old output\n", 100), "<old> & warnings")
	command("closed", "c2", "", "")
	command("closed", "c3", "", "only stderr")
	printed := "\xff\xfe ok\x80" // not UTF-8: stored as base64
	exit := 0
	appendOne(t, l, rec("closed", eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "c4", Type: "execute_shell"}))
	c4 := eventlog.CommandCompletedData{CommandID: "c4", Type: "execute_shell", Success: true, ExitCode: &exit, StdoutBytes: int64(len(printed)), StderrBytes: 4}
	c4.SetOutput([]byte(printed), []byte("café"), 1<<10)
	if c4.StdoutEncoding != eventlog.OutputBase64 || c4.StderrEncoding != "" {
		t.Fatalf("SetOutput: %+v", c4)
	}
	appendOne(t, l, rec("closed", eventlog.CommandCompleted, c4))
	command("open", "o1", "open output", "")
	time.Sleep(2 * time.Millisecond)
	cutoff := time.Now()
	time.Sleep(2 * time.Millisecond)
	command("late", "l1", "recent output", "")
	for _, s := range []string{"closed", "late"} {
		appendOne(t, l, rec(s, eventlog.SessionClosing, eventlog.SessionClosingData{Reason: eventlog.ReasonClient}))
		appendOne(t, l, rec(s, eventlog.SessionClosed, eventlog.SessionClosedData{Reason: eventlog.ReasonClient}))
	}
	before := scanAll(t, l)
	headSeq, head, err := l.Head()
	if err != nil {
		t.Fatal(err)
	}

	res, err := l.CompactOutput(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 3 || res.Sessions != 1 || res.Bytes <= 0 {
		t.Errorf("CompactOutput = %+v, want 3 events of 1 session, some bytes saved", res)
	}
	after := scanAll(t, l)
	if len(after) != len(before) {
		t.Fatalf("%d events after compaction, %d before", len(after), len(before))
	}
	compacted := map[string]eventlog.CommandCompletedData{}
	for i, e := range after {
		if e.Hash != before[i].Hash {
			t.Errorf("event %d's hash changed in compaction", e.Seq)
		}
		if e.Type != eventlog.CommandCompleted {
			if !reflect.DeepEqual(e, before[i]) {
				t.Errorf("event %d (%s) changed in compaction", e.Seq, e.Type)
			}
			continue
		}
		var d, was eventlog.CommandCompletedData
		if err := errors.Join(e.Decode(&d), before[i].Decode(&was)); err != nil {
			t.Fatal(err)
		}
		if d.OutputCompacted {
			compacted[d.CommandID] = d
			if d.Stdout != "" || d.Stderr != "" {
				t.Errorf("compacted event %d still holds output: %+v", e.Seq, d)
			}
			// The digests are of the bytes the program wrote.
			stdout, stderr := outputBytes(t, was.Stdout, was.StdoutEncoding), outputBytes(t, was.Stderr, was.StderrEncoding)
			if (stdout != "" && d.StdoutSha256 != chain.Digest(stdout)) || (stderr != "" && d.StderrSha256 != chain.Digest(stderr)) {
				t.Errorf("event %d's digests %s %s are not of its output %q %q", e.Seq, d.StdoutSha256, d.StderrSha256, stdout, stderr)
			}
			// Everything else stays.
			d.StdoutSha256, d.StderrSha256, d.OutputCompacted, d.Stdout, d.Stderr = "", "", false, was.Stdout, was.Stderr
		}
		if !reflect.DeepEqual(d, was) {
			t.Errorf("event %d: %+v, before compaction %+v", e.Seq, d, was)
		}
	}
	if _, ok := compacted["c1"]; !ok || len(compacted) != 3 || compacted["c3"].StdoutSha256 != "" || compacted["c3"].StderrSha256 == "" {
		t.Errorf("compacted commands %v, want c1, c3 (stderr only) and c4", compacted)
	}
	if d := compacted["c4"]; d.StdoutSha256 != chain.Digest(printed) || d.StdoutEncoding != eventlog.OutputBase64 {
		t.Errorf("compacted c4 %+v, want the digest of the bytes printed, still marked base64", d)
	}
	if seq, h, _ := l.Head(); seq != headSeq || h != head {
		t.Errorf("the head moved in compaction")
	}
	// Nothing left to do; the projection is the same (eventlogtest checks
	// the chain and the rebuilt projection at cleanup).
	if res, err := l.CompactOutput(ctx, time.Now()); err != nil || res.Events != 1 {
		t.Errorf("CompactOutput up to now = %+v, %v; want only the late session's event", res, err)
	}
	if res, err := l.CompactOutput(ctx, time.Now()); err != nil || res.Events != 0 {
		t.Errorf("CompactOutput again = %+v, %v; want nothing", res, err)
	}
	rebuilt, err := projection.Rebuild(l)
	if err != nil || !reflect.DeepEqual(rebuilt.List(), live.List()) {
		t.Errorf("projection after compaction differs: %v", err)
	}
}

// outputBytes returns the bytes an output member holds.
func outputBytes(t *testing.T, text, encoding string) string {
	t.Helper()
	if encoding != eventlog.OutputBase64 {
		return text
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Cut keeps whole UTF-8 characters, and bytes where there are none.
func TestCut(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"aé", 2, "a"}, // é is 2 bytes: not split
		{"aé", 3, "aé"},
		{"a€b", 2, "a"}, // € is 3 bytes
		{"a€b", 3, "a"},
		{"a€b", 4, "a€"},
		{"a😀", 4, "a"},       // 4 bytes
		{"a\ufffdb", 2, "a"}, // a real U+FFFD is a whole character
		{"\xff\xfe ok\x80", 2, "\xff\xfe"},
		{"ab\xe2\x82", 3, "ab\xe2"}, // an incomplete character is bytes
		{"a\x80\x80\x80\x80", 3, "a\x80\x80"},
		{"é", 0, ""},
	} {
		got, cut := eventlog.Cut(c.in, c.n)
		if got != c.want || cut != (len(c.in) > c.n) {
			t.Errorf("Cut(%q, %d) = %q, %v; want %q", c.in, c.n, got, cut, c.want)
		}
		if b, _ := eventlog.Cut([]byte(c.in), c.n); string(b) != c.want {
			t.Errorf("Cut([]byte(%q), %d) = %q; want %q", c.in, c.n, b, c.want)
		}
		if utf8.ValidString(c.in) && !utf8.ValidString(got) {
			t.Errorf("Cut(%q, %d) = %q is not UTF-8", c.in, c.n, got)
		}
	}
}
