package eventlog_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
	"github.com/codebeaker/codebeaker/migrations"
)

func rec(session string, typ eventlog.Type, data any) eventlog.Record {
	return eventlog.Record{SessionID: session, Type: typ, Data: data}
}

func appendOne(t testing.TB, l *eventlog.Log, r eventlog.Record) eventlog.Event {
	t.Helper()
	events, err := l.Append(context.Background(), r)
	if err != nil {
		t.Fatalf("append %s to %s: %v", r.Type, r.SessionID, err)
	}
	if len(events) != 1 {
		t.Fatalf("append of one record returned %d events", len(events))
	}
	return events[0]
}

func scanAll(t testing.TB, l *eventlog.Log) []eventlog.Event {
	t.Helper()
	var out []eventlog.Event
	if err := l.Scan(0, func(e eventlog.Event) error { out = append(out, e); return nil }); err != nil {
		t.Fatalf("scan: %v", err)
	}
	return out
}

func seqs(events []eventlog.Event) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.Seq
	}
	return out
}

func TestAppendReadRoundTrip(t *testing.T) {
	l := eventlogtest.Open(t)
	exit := 3
	payload := eventlog.CommandCompletedData{
		CommandID: "01J0000000000000000000000", Type: "execute", Success: false, Error: "exit status 3",
		ExitCode: &exit, DurationMs: 42, StdoutBytes: 5, StderrBytes: 7, Stdout: "héllo", Stderr: "<oops>\n",
		StdoutTruncated: true, StoredCut: true, TimedOut: true, OOMKilled: true,
	}
	before := time.Now()
	got := appendOne(t, l, rec("sess-1", eventlog.CommandCompleted, payload))
	after := time.Now()

	if got.Seq != 1 {
		t.Errorf("first event has seq %d, want 1", got.Seq)
	}
	if got.ID.IsZero() {
		t.Error("event has a zero ULID")
	}
	if ms := got.ID.Time(); ms < uint64(before.UnixMilli()) || ms > uint64(after.UnixMilli()) {
		t.Errorf("ULID time %d ms is outside the append [%d, %d]", ms, before.UnixMilli(), after.UnixMilli())
	}
	if got.SessionID != "sess-1" || got.Type != eventlog.CommandCompleted || got.Version != migrations.PayloadVersion {
		t.Errorf("event = %q %q v%d, want sess-1 CommandCompleted v%d", got.SessionID, got.Type, got.Version, migrations.PayloadVersion)
	}
	if got.Time.Before(before) || got.Time.After(after) || got.Time.Location() != time.UTC {
		t.Errorf("event time %v is not a UTC time within the append [%v, %v]", got.Time, before, after)
	}
	var decoded eventlog.CommandCompletedData
	if err := got.Decode(&decoded); err != nil || !reflect.DeepEqual(decoded, payload) {
		t.Errorf("returned payload decodes to %+v, %v; want %+v", decoded, err, payload)
	}

	stored := scanAll(t, l)
	if len(stored) != 1 || !reflect.DeepEqual(stored[0], got) {
		t.Fatalf("Scan gives %+v, want [%+v]", stored, got)
	}
	bySession, err := l.SessionEvents("sess-1", 0, 0)
	if err != nil || len(bySession) != 1 || !reflect.DeepEqual(bySession[0], got) {
		t.Fatalf("SessionEvents gives %+v, %v; want [%+v]", bySession, err, got)
	}
	decoded = eventlog.CommandCompletedData{}
	if err := stored[0].Decode(&decoded); err != nil || !reflect.DeepEqual(decoded, payload) {
		t.Errorf("stored payload decodes to %+v, %v; want %+v", decoded, err, payload)
	}
	if last, err := l.LastSeq(); last != 1 || err != nil {
		t.Errorf("LastSeq = %d, %v; want 1", last, err)
	}
}

func TestEmptyLog(t *testing.T) {
	l := eventlogtest.Open(t)
	if last, err := l.LastSeq(); last != 0 || err != nil {
		t.Errorf("LastSeq of a new log = %d, %v; want 0", last, err)
	}
	if events := scanAll(t, l); len(events) != 0 {
		t.Errorf("Scan of a new log gives %d events", len(events))
	}
	if ok, err := l.HasSession("nobody"); ok || err != nil {
		t.Errorf("HasSession on a new log = %v, %v", ok, err)
	}
}

func TestAppendOrder(t *testing.T) {
	l := eventlogtest.Open(t)
	const n = 300
	var returned []eventlog.Event
	for i := range n {
		returned = append(returned, appendOne(t, l, rec(fmt.Sprintf("s%d", i%7), eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprint(i)})))
	}
	stored := scanAll(t, l)
	if !reflect.DeepEqual(stored, returned) {
		t.Fatalf("Scan differs from what Append returned")
	}
	for i, e := range stored {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i+1, e.Seq)
		}
		var d eventlog.SessionClosingData
		if err := e.Decode(&d); err != nil || d.Reason != fmt.Sprint(i) {
			t.Fatalf("event %d carries %+v, %v; want reason %d", e.Seq, d, err, i)
		}
		if i > 0 && (e.ID.Compare(stored[i-1].ID) <= 0 || e.Time.Before(stored[i-1].Time)) {
			t.Fatalf("event %d (%s, %v) does not follow event %d (%s, %v)", e.Seq, e.ID, e.Time, e.Seq-1, stored[i-1].ID, stored[i-1].Time)
		}
	}
}

func TestConcurrentAppends(t *testing.T) {
	l := eventlogtest.Open(t)
	const writers, each = 32, 50
	got := make([][]uint64, writers) // seqs each writer was given, in its order
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				events, err := l.Append(context.Background(),
					rec(fmt.Sprintf("w%d", w), eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprintf("%d/%d", w, i)}))
				if err != nil {
					t.Errorf("writer %d append %d: %v", w, i, err)
					return
				}
				got[w] = append(got[w], events[0].Seq)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	var all []uint64
	for w, ws := range got {
		if !slices.IsSorted(ws) {
			t.Errorf("writer %d got seqs out of order: %v", w, ws)
		}
		all = append(all, ws...)
	}
	slices.Sort(all)
	for i, seq := range all {
		if seq != uint64(i+1) {
			t.Fatalf("seqs given out are not 1..%d without gaps or duplicates: position %d holds %d", writers*each, i+1, seq)
		}
	}

	stored := scanAll(t, l)
	if len(stored) != writers*each {
		t.Fatalf("log holds %d events, want %d", len(stored), writers*each)
	}
	for w, ws := range got {
		for i, seq := range ws {
			// The seq a caller was given holds the caller's event.
			e := stored[seq-1]
			var d eventlog.SessionClosingData
			if err := e.Decode(&d); err != nil || e.Seq != seq || e.SessionID != fmt.Sprintf("w%d", w) || d.Reason != fmt.Sprintf("%d/%d", w, i) {
				t.Errorf("writer %d append %d was given seq %d, which holds %s %+v", w, i, seq, e.SessionID, d)
			}
		}
	}
}

func TestAppendManyIsConsecutive(t *testing.T) {
	l := eventlogtest.Open(t)
	const writers, calls, batch = 8, 10, 5
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for c := range calls {
				recs := make([]eventlog.Record, batch)
				for i := range recs {
					recs[i] = rec(fmt.Sprintf("w%d", w), eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprintf("%d/%d/%d", w, c, i)})
				}
				events, err := l.Append(context.Background(), recs...)
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				if len(events) != batch {
					t.Errorf("append of %d records returned %d events", batch, len(events))
					return
				}
				for i, e := range events {
					if e.Seq != events[0].Seq+uint64(i) || e.SessionID != recs[i].SessionID {
						t.Errorf("writer %d call %d: seqs %v are not consecutive", w, c, seqs(events))
					}
				}
			}
		})
	}
	wg.Wait()
	if last, _ := l.LastSeq(); last != writers*calls*batch {
		t.Errorf("LastSeq = %d, want %d", last, writers*calls*batch)
	}
}

func TestAppendManyIsAtomic(t *testing.T) {
	l := eventlogtest.Open(t)
	appendOne(t, l, rec("s", eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python"}))

	// A payload that cannot be encoded fails the call before anything is
	// handed to the writer.
	_, err := l.Append(context.Background(),
		rec("s", eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "c1"}),
		rec("s", eventlog.CommandCompleted, func() {}))
	if err == nil {
		t.Fatal("append of an unencodable payload succeeded")
	}

	// A record bbolt refuses (an index key above its maximum key size) fails
	// the transaction: the records before it in the same call are not stored
	// either, and their seqs are not used up.
	_, err = l.Append(context.Background(),
		rec("s", eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "c2"}),
		rec("s", eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "c2"}),
		rec(strings.Repeat("x", bolt.MaxKeySize), eventlog.SessionClosing, eventlog.SessionClosingData{}))
	if err == nil {
		t.Fatal("append with a session id longer than bbolt's maximum key size succeeded")
	}
	if !strings.Contains(err.Error(), l.Path()) {
		t.Errorf("commit error %q does not name the file", err)
	}
	if last, _ := l.LastSeq(); last != 1 {
		t.Fatalf("after two failed appends LastSeq = %d, want 1", last)
	}

	events, err := l.Append(context.Background(),
		rec("s", eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: "c3"}),
		rec("s", eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: "c3"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(events); !reflect.DeepEqual(got, []uint64{2, 3}) {
		t.Errorf("append after the failed ones got seqs %v, want [2 3]", got)
	}
}

func TestSessionEvents(t *testing.T) {
	l := eventlogtest.Open(t)
	// "s1" is a prefix of "s10" and "s1-b"; their events must not leak
	// into each other's history.
	ids := []string{"s1", "s10", "s1-b", "s2"}
	want := map[string][]eventlog.Event{}
	for i := range 40 {
		id := ids[i%len(ids)]
		want[id] = append(want[id], appendOne(t, l, rec(id, eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprint(i)})))
	}
	for _, id := range ids {
		got, err := l.SessionEvents(id, 0, 0)
		if err != nil || !reflect.DeepEqual(got, want[id]) {
			t.Errorf("SessionEvents(%q) = seqs %v, %v; want %v", id, seqs(got), err, seqs(want[id]))
		}
	}

	s1 := want["s1"] // seqs 1, 5, 9, ..., 37
	for _, tc := range []struct {
		after uint64
		limit int
		want  []eventlog.Event
	}{
		{0, 3, s1[:3]},
		{1, 0, s1[1:]},
		{4, 2, s1[1:3]}, // afterSeq between two of the session's events
		{5, 2, s1[2:4]}, // afterSeq on one of them
		{37, 0, nil},    // after the last one
		{1000, 0, nil},  // after the end of the log
		{0, -1, s1},     // a negative limit means no limit
		{36, 1, s1[9:10]},
	} {
		got, err := l.SessionEvents("s1", tc.after, tc.limit)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SessionEvents(s1, after %d, limit %d) = seqs %v, %v; want %v", tc.after, tc.limit, seqs(got), err, seqs(tc.want))
		}
	}
	for _, id := range []string{"s", "s100", "", "s1-", "s3"} {
		if got, err := l.SessionEvents(id, 0, 0); len(got) != 0 || err != nil {
			t.Errorf("SessionEvents(%q) = seqs %v, %v; want none", id, seqs(got), err)
		}
	}
}

func TestHasSession(t *testing.T) {
	l := eventlogtest.Open(t)
	appendOne(t, l, rec("abc", eventlog.SessionCreating, eventlog.SessionCreatingData{}))
	appendOne(t, l, rec("abcd", eventlog.SessionCreating, eventlog.SessionCreatingData{}))
	for id, want := range map[string]bool{"abc": true, "abcd": true, "ab": false, "abcde": false, "": false, "x": false} {
		if got, err := l.HasSession(id); got != want || err != nil {
			t.Errorf("HasSession(%q) = %v, %v; want %v", id, got, err, want)
		}
	}
}

func TestScanStopsOnError(t *testing.T) {
	l := eventlogtest.Open(t)
	for i := range 10 {
		appendOne(t, l, rec("s", eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprint(i)}))
	}
	stop := errors.New("enough")
	var seen []uint64
	err := l.Scan(0, func(e eventlog.Event) error {
		seen = append(seen, e.Seq)
		if len(seen) == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("Scan returned %v, want the callback's error", err)
	}
	if !reflect.DeepEqual(seen, []uint64{1, 2, 3}) {
		t.Errorf("Scan went on after the callback's error: saw %v", seen)
	}

	seen = nil
	if err := l.Scan(7, func(e eventlog.Event) error { seen = append(seen, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seen, []uint64{8, 9, 10}) {
		t.Errorf("Scan after 7 saw %v, want [8 9 10]", seen)
	}
}

func TestOnCommit(t *testing.T) {
	var (
		mu        sync.Mutex
		committed []eventlog.Event
		calls     int
	)
	l := eventlogtest.OpenWith(t, "", eventlog.Options{OnCommit: func(events []eventlog.Event) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		committed = append(committed, events...)
	}})
	seen := func(seq uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		return seq <= uint64(len(committed)) && committed[seq-1].Seq == seq
	}

	const writers, each = 16, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := 1 + i%3
				recs := make([]eventlog.Record, n)
				for j := range recs {
					recs[j] = rec(fmt.Sprintf("w%d", w), eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprint(i)})
				}
				events, err := l.Append(context.Background(), recs...)
				if err != nil {
					t.Error(err)
					return
				}
				// Subscribers are told before the appender.
				for _, e := range events {
					if !seen(e.Seq) {
						t.Errorf("Append returned seq %d before OnCommit saw it", e.Seq)
					}
				}
			}
		})
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	stored := scanAll(t, l)
	if !reflect.DeepEqual(committed, stored) {
		t.Fatalf("OnCommit saw seqs %v, the log holds %v", seqs(committed), seqs(stored))
	}
	t.Logf("%d events in %d commits", len(committed), calls)
}

func TestAppendAfterClose(t *testing.T) {
	l := eventlogtest.Open(t)
	appendOne(t, l, rec("s", eventlog.SessionCreating, eventlog.SessionCreatingData{}))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), rec("s", eventlog.SessionClosed, eventlog.SessionClosedData{})); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Append after Close returned %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseWhileAppending(t *testing.T) {
	// Appends racing with Close either succeed (and are stored) or fail with
	// ErrClosed; the cleanup checks that what is stored is consistent.
	l := eventlogtest.Open(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acked []uint64
	for w := range 8 {
		wg.Go(func() {
			for {
				events, err := l.Append(context.Background(), rec(fmt.Sprintf("w%d", w), eventlog.SessionClosing, eventlog.SessionClosingData{}))
				if errors.Is(err, eventlog.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, events[0].Seq)
				mu.Unlock()
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	l = eventlogtest.OpenWith(t, l.Path(), eventlog.Options{})
	last, err := l.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	if int(last) != len(acked) {
		t.Errorf("%d appends were acknowledged, the log holds %d events", len(acked), last)
	}
}

func TestReopen(t *testing.T) {
	l := eventlogtest.Open(t)
	path := l.Path()
	var before []eventlog.Event
	for i := range 5 {
		before = append(before, appendOne(t, l, rec(fmt.Sprintf("s%d", i%2), eventlog.SessionClosing, eventlog.SessionClosingData{Reason: fmt.Sprint(i)})))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = eventlogtest.OpenWith(t, path, eventlog.Options{})
	if got := scanAll(t, l); !reflect.DeepEqual(got, before) {
		t.Fatalf("after reopening the log holds seqs %v, want %v", seqs(got), seqs(before))
	}
	if last, err := l.LastSeq(); last != 5 || err != nil {
		t.Errorf("LastSeq after reopening = %d, %v; want 5", last, err)
	}
	// Appending right away (likely within the same millisecond as the last
	// event before Close) continues both the seqs and the ULIDs.
	e := appendOne(t, l, rec("s0", eventlog.SessionClosed, eventlog.SessionClosedData{}))
	if e.Seq != 6 {
		t.Errorf("first append after reopening got seq %d, want 6", e.Seq)
	}
	if e.ID.Compare(before[4].ID) <= 0 {
		t.Errorf("first ULID after reopening %s is not above the last one before %s", e.ID, before[4].ID)
	}
	if got, _ := l.SessionEvents("s0", 0, 0); !reflect.DeepEqual(seqs(got), []uint64{1, 3, 5, 6}) {
		t.Errorf("SessionEvents(s0) after reopening = %v, want [1 3 5 6]", seqs(got))
	}
}

func TestOpenLocked(t *testing.T) {
	l := eventlogtest.Open(t)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	other, err := eventlog.Open(l.Path(), eventlog.Options{LockTimeout: timeout})
	took := time.Since(start)
	if err == nil {
		other.Close()
		t.Fatal("a second Open of a log in use succeeded")
	}
	if !errors.Is(err, eventlog.ErrLocked) {
		t.Errorf("second Open returned %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), l.Path()) {
		t.Errorf("error %q does not name the file", err)
	}
	// bbolt retries every 50ms and gives up at the last retry before the
	// timeout.
	if took < timeout/2 || took > timeout+time.Second {
		t.Errorf("second Open gave up after %v, the lock timeout is %v", took, timeout)
	}
	// The first one still works.
	appendOne(t, l, rec("s", eventlog.SessionCreating, eventlog.SessionCreatingData{}))
}

// closedLogFile makes a log with a few events and returns its path, closed.
func closedLogFile(t *testing.T) string {
	t.Helper()
	l := eventlogtest.Open(t)
	for i := range 20 {
		appendOne(t, l, rec("s", eventlog.SessionClosing, eventlog.SessionClosingData{Reason: strings.Repeat("r", i*50)}))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return l.Path()
}

func copyFile(t *testing.T, from string) string {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), eventlog.FileName)
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return to
}

func TestOpenDamagedFile(t *testing.T) {
	path := copyFile(t, closedLogFile(t))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Both meta pages (pages 0 and 1 at the OS page size bbolt uses).
	garbage := bytes.Repeat([]byte("garbage!"), 2*os.Getpagesize()/8)
	if _, err := f.WriteAt(garbage, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	damaged, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	l, err := eventlog.Open(path, eventlog.Options{LockTimeout: time.Second})
	if err == nil {
		l.Close()
		t.Fatal("Open of a damaged file succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, damaged) {
		t.Errorf("Open changed the damaged file (%d bytes before, %d after)", len(damaged), len(after))
	}
}

func TestOpenNewerLayout(t *testing.T) {
	path := copyFile(t, closedLogFile(t))
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(migrations.LayoutVersion()+1))
		return tx.Bucket(migrations.BucketMeta).Put([]byte("layout"), v[:])
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	newer, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	l, err := eventlog.Open(path, eventlog.Options{LockTimeout: time.Second})
	if err == nil {
		l.Close()
		t.Fatal("Open of a file with a newer layout succeeded")
	}
	if !errors.Is(err, migrations.ErrNewerLayout) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open returned %q, want ErrNewerLayout naming the file", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, newer) {
		t.Error("Open changed a file it refused")
	}
	// Reading and verifying refuse it the same way.
	if l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: time.Second}); !errors.Is(err, migrations.ErrNewerLayout) {
		if err == nil {
			l.Close()
		}
		t.Errorf("read-only Open returned %v, want ErrNewerLayout", err)
	}
	if _, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{LockTimeout: time.Second}); !errors.Is(err, migrations.ErrNewerLayout) {
		t.Errorf("Verify returned %v, want ErrNewerLayout", err)
	}
}
