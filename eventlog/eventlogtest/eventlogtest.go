package eventlogtest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/migrations"
	"github.com/codebeaker/codebeaker/projection"
)

// Open opens a new log in a temporary directory with default options. When
// the test ends the log is closed and checked.
func Open(t testing.TB) *eventlog.Log {
	t.Helper()
	return OpenWith(t, "", eventlog.Options{})
}

// OpenWith opens the log at path ("" for a new file in a temporary
// directory) with opts. When the test ends the log is closed and checked.
func OpenWith(t testing.TB, path string, opts eventlog.Options) *eventlog.Log {
	t.Helper()
	return open(t, path, opts, nil)
}

// OpenLive opens a new log in a temporary directory whose committed events
// also feed the returned projection. When the test ends the log is closed and
// checked, and a projection rebuilt from it must equal the live one.
func OpenLive(t testing.TB) (*eventlog.Log, *projection.Sessions) {
	t.Helper()
	live := &liveView{p: projection.NewSessions()}
	return open(t, "", eventlog.Options{}, live), live.p
}

type liveView struct {
	p    *projection.Sessions
	mu   sync.Mutex
	errs []error // Apply failures, reported at cleanup: OnCommit runs on the writer goroutine
}

func (v *liveView) apply(events []eventlog.Event) {
	for _, e := range events {
		if err := v.p.Apply(e); err != nil {
			v.mu.Lock()
			v.errs = append(v.errs, err)
			v.mu.Unlock()
		}
	}
}

func open(t testing.TB, path string, opts eventlog.Options, live *liveView) *eventlog.Log {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), eventlog.FileName)
	}
	if live != nil {
		opts.OnCommit = live.apply
	}
	l, err := eventlog.Open(path, opts)
	if err != nil {
		t.Fatalf("open event log: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close event log %s: %v", path, err)
		}
		checkAPI(t, path, live)
		Check(t, path)
	})
	return l
}

// checkAPI reopens the closed log at path and checks that its read methods
// and a rebuilt projection agree with each other (and with live, if set).
func checkAPI(t testing.TB, path string, live *liveView) {
	t.Helper()
	l, err := eventlog.Open(path, eventlog.Options{LockTimeout: time.Second})
	if err != nil {
		t.Errorf("eventlogtest: reopen %s to check it: %v", path, err)
		return
	}
	defer l.Close()

	var n uint64
	bySession := map[string][]eventlog.Event{}
	if err := l.Scan(0, func(e eventlog.Event) error {
		n++
		if e.Seq != n {
			return fmt.Errorf("Scan gave seq %d at position %d", e.Seq, n)
		}
		bySession[e.SessionID] = append(bySession[e.SessionID], e)
		return nil
	}); err != nil {
		t.Errorf("eventlogtest: scan %s: %v", path, err)
		return
	}
	if last, err := l.LastSeq(); err != nil || last != n {
		t.Errorf("eventlogtest: LastSeq = %d, %v; Scan read %d events", last, err, n)
	}
	for id, want := range bySession {
		got, err := l.SessionEvents(id, 0, 0)
		if err != nil {
			t.Errorf("eventlogtest: SessionEvents(%q): %v", id, err)
		} else if !reflect.DeepEqual(got, want) {
			t.Errorf("eventlogtest: SessionEvents(%q) gives %d events that differ from the %d Scan gives", id, len(got), len(want))
		}
		if ok, err := l.HasSession(id); !ok || err != nil {
			t.Errorf("eventlogtest: HasSession(%q) = %v, %v; want true", id, ok, err)
		}
	}

	rebuilt, err := projection.Rebuild(l)
	if err != nil {
		t.Errorf("eventlogtest: rebuild projection from %s: %v", path, err)
		return
	}
	if live == nil {
		return
	}
	live.mu.Lock()
	for _, err := range live.errs {
		t.Errorf("eventlogtest: live projection: %v", err)
	}
	live.mu.Unlock()
	if got, want := rebuilt.List(), live.p.List(); !reflect.DeepEqual(got, want) {
		t.Errorf("eventlogtest: projection rebuilt from the log differs from the live one: %s", diffSessions(got, want))
	}
	if got, want := rebuilt.LastSeq(), live.p.LastSeq(); got != want {
		t.Errorf("eventlogtest: rebuilt projection is at seq %d, the live one at %d", got, want)
	}
}

// Check checks the invariants of the closed log file at path by reading it
// with bbolt, read-only.
func Check(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("eventlogtest: open %s read-only (is the log still open?): %v", path, err)
		return
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("eventlogtest: bbolt check of %s: %v", path, err)
		}
		checkTx(t, tx)
		return nil
	}); err != nil {
		t.Errorf("eventlogtest: read %s: %v", path, err)
	}
	db.Close()
	if _, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{LockTimeout: time.Second}); err != nil {
		t.Errorf("eventlogtest: verify %s: %v", path, err)
	}
}

func checkTx(t testing.TB, tx *bolt.Tx) {
	t.Helper()
	if v := migrations.Version(tx); v != migrations.LayoutVersion() {
		t.Errorf("eventlogtest: layout version %d, want %d", v, migrations.LayoutVersion())
	}
	events := tx.Bucket(migrations.BucketEvents)
	index := tx.Bucket(migrations.BucketSessionEvents)
	if events == nil || index == nil {
		t.Errorf("eventlogtest: bucket missing: events %v, session_events %v", events != nil, index != nil)
		return
	}

	var (
		n        uint64
		lastID   ulid.ULID
		sessions = []string{""} // session of each seq; seq 0 unused
	)
	err := events.ForEach(func(k, v []byte) error {
		n++
		if len(k) != 8 {
			return fmt.Errorf("event key %x is not 8 bytes", k)
		}
		if seq := binary.BigEndian.Uint64(k); seq != n {
			return fmt.Errorf("event %d follows event %d: sequence has a gap or does not start at 1", seq, n-1)
		}
		var e eventlog.Event
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("event %d is unreadable: %w", n, err)
		}
		if e.Seq != n {
			return fmt.Errorf("event stored at key %d says seq %d", n, e.Seq)
		}
		if e.ID.Compare(lastID) <= 0 {
			return fmt.Errorf("event %d has ULID %s, not above event %d's %s", n, e.ID, n-1, lastID)
		}
		lastID = e.ID
		sessions = append(sessions, e.SessionID)
		return nil
	})
	if err != nil {
		t.Errorf("eventlogtest: %v", err)
		return
	}
	if seq := events.Sequence(); seq != n {
		t.Errorf("eventlogtest: events bucket sequence is %d, but it holds %d events", seq, n)
	}

	indexed := make([]bool, n+1)
	var entries uint64
	err = index.ForEach(func(k, v []byte) error {
		entries++
		if len(k) < 8 {
			return fmt.Errorf("session_events key %x is shorter than a seq", k)
		}
		id, seq := string(k[:len(k)-8]), binary.BigEndian.Uint64(k[len(k)-8:])
		switch {
		case seq == 0 || seq > n:
			return fmt.Errorf("session_events entry (%q, %d) points at no event (the log has %d)", id, seq, n)
		case sessions[seq] != id:
			return fmt.Errorf("session_events entry (%q, %d) points at an event of session %q", id, seq, sessions[seq])
		case indexed[seq]:
			return fmt.Errorf("event %d is indexed twice", seq)
		case len(v) != 0:
			return fmt.Errorf("session_events entry (%q, %d) has a value", id, seq)
		}
		indexed[seq] = true
		return nil
	})
	if err != nil {
		t.Errorf("eventlogtest: %v", err)
		return
	}
	if entries != n {
		t.Errorf("eventlogtest: session_events has %d entries for %d events", entries, n)
	}
}

// diffSessions describes the first difference between two session lists.
func diffSessions(rebuilt, live []projection.Session) string {
	for i := range min(len(rebuilt), len(live)) {
		if !reflect.DeepEqual(rebuilt[i], live[i]) {
			return fmt.Sprintf("session %d of %d:\nrebuilt %+v\nlive    %+v", i, len(live), rebuilt[i], live[i])
		}
	}
	return fmt.Sprintf("rebuilt has %d sessions, live %d", len(rebuilt), len(live))
}
