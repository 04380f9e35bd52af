package projection_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/migrations"
	"github.com/codebeaker/codebeaker/projection"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// feed makes events in sequence order and applies them.
type feed struct {
	t   *testing.T
	p   *projection.Sessions
	seq uint64
}

func newFeed(t *testing.T) *feed { return &feed{t: t, p: projection.NewSessions()} }

func event(seq uint64, session string, typ eventlog.Type, at time.Time, data any) eventlog.Event {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return eventlog.Event{Seq: seq, SessionID: session, Time: at, Type: typ, Version: migrations.PayloadVersion, Data: raw}
}

func (f *feed) apply(session string, typ eventlog.Type, at time.Time, data any) eventlog.Event {
	f.t.Helper()
	f.seq++
	e := event(f.seq, session, typ, at, data)
	if err := f.p.Apply(e); err != nil {
		f.t.Fatalf("apply %s of %s: %v", typ, session, err)
	}
	return e
}

func (f *feed) get(id string) projection.Session {
	f.t.Helper()
	s, ok := f.p.Get(id)
	if !ok {
		f.t.Fatalf("session %s is not in the projection", id)
	}
	return s
}

func minutes(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }

func TestLifecycle(t *testing.T) {
	f := newFeed(t)
	cfg := eventlog.SessionConfig{IdleTimeoutMinutes: 5, MaxLifetimeMinutes: 60, MemoryLimitMB: 256, CPUShares: 512, PidsLimit: 64, Image: "python:3.12",
		Permissions: &eventlog.Permissions{AllowNet: json.RawMessage(`["example.com"]`)}}
	f.apply("s", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{Language: "python", Runtime: "docker", Config: cfg})
	s := f.get("s")
	want := projection.Session{ID: "s", Language: "python", Runtime: "docker", Config: cfg, CreatedAt: t0, LastActivity: t0, State: projection.Creating, LastSeq: 1}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("after SessionCreating:\n got %+v\nwant %+v", s, want)
	}

	created := t0.Add(2 * time.Second)
	f.apply("s", eventlog.SessionCreated, created, eventlog.SessionCreatedData{ContainerID: "c0ffee", Workspace: "/data/ws/s"})
	s = f.get("s")
	if s.State != projection.Active || s.ContainerID != "c0ffee" || s.Workspace != "/data/ws/s" || !s.LastActivity.Equal(created) || s.Running || s.LastSeq != 2 {
		t.Fatalf("after SessionCreated: %+v", s)
	}
	if got := s.IdleMinutes(created.Add(90 * time.Second)); got != 1.5 {
		t.Errorf("IdleMinutes 90s after creation = %v, want 1.5", got)
	}

	started := t0.Add(time.Minute)
	f.apply("s", eventlog.CommandStarted, started, eventlog.CommandStartedData{CommandID: "c1", Type: "execute"})
	s = f.get("s")
	if s.State != projection.Active || !s.Running || !s.LastActivity.Equal(started) || s.ExecutionCount != 0 {
		t.Fatalf("after CommandStarted: %+v", s)
	}
	// A running command is not idleness, however long it runs.
	if got := s.IdleMinutes(started.Add(time.Hour)); got != 0 {
		t.Errorf("IdleMinutes while running = %v, want 0", got)
	}
	if got := s.LifetimeMinutes(t0.Add(3 * time.Minute)); got != 3 {
		t.Errorf("LifetimeMinutes = %v, want 3", got)
	}

	done := t0.Add(4 * time.Minute)
	f.apply("s", eventlog.CommandCompleted, done, eventlog.CommandCompletedData{CommandID: "c1", Type: "execute", Success: true})
	s = f.get("s")
	if s.State != projection.Idle || s.Running || s.ExecutionCount != 1 || !s.LastActivity.Equal(done) {
		t.Fatalf("after CommandCompleted: %+v", s)
	}
	if got := s.IdleMinutes(done.Add(150 * time.Second)); got != 2.5 {
		t.Errorf("IdleMinutes = %v, want 2.5", got)
	}
	if got, want := s.IdleDeadline(), done.Add(5*time.Minute); !got.Equal(want) {
		t.Errorf("IdleDeadline = %v, want %v", got, want)
	}
	if got, want := s.LifetimeDeadline(), t0.Add(time.Hour); !got.Equal(want) {
		t.Errorf("LifetimeDeadline = %v, want %v", got, want)
	}
	// Times before the session's are not negative.
	if s.IdleMinutes(t0) != 0 || s.LifetimeMinutes(t0.Add(-time.Minute)) != 0 {
		t.Errorf("minutes at a time before the session's: idle %v, lifetime %v", s.IdleMinutes(t0), s.LifetimeMinutes(t0.Add(-time.Minute)))
	}

	// Idle -> Active -> Idle again; a failed command counts too.
	f.apply("s", eventlog.CommandStarted, t0.Add(5*time.Minute), eventlog.CommandStartedData{CommandID: "c2"})
	if s = f.get("s"); s.State != projection.Active || !s.Running {
		t.Fatalf("second CommandStarted: %+v", s)
	}
	f.apply("s", eventlog.CommandCompleted, t0.Add(6*time.Minute), eventlog.CommandCompletedData{CommandID: "c2", Success: false, Error: "boom"})
	if s = f.get("s"); s.State != projection.Idle || s.ExecutionCount != 2 {
		t.Fatalf("second CommandCompleted: %+v", s)
	}

	f.apply("s", eventlog.SessionClosing, t0.Add(7*time.Minute), eventlog.SessionClosingData{Reason: eventlog.ReasonIdleTimeout})
	s = f.get("s")
	if s.State != projection.Closing || s.CloseReason != eventlog.ReasonIdleTimeout || s.ExecutionCount != 2 {
		t.Fatalf("after SessionClosing: %+v", s)
	}
	f.apply("s", eventlog.SessionClosed, t0.Add(8*time.Minute), eventlog.SessionClosedData{Reason: eventlog.ReasonIdleTimeout})
	if _, ok := f.p.Get("s"); ok {
		t.Error("a closed session is still in the projection")
	}
	if l := f.p.List(); len(l) != 0 {
		t.Errorf("List after close = %+v", l)
	}
	if f.p.LastSeq() != 8 {
		t.Errorf("LastSeq = %d, want 8", f.p.LastSeq())
	}
}

// A command the worker had already taken when the session began to close
// is still recorded; the session stays Closing.
func TestClosingStaysClosing(t *testing.T) {
	f := newFeed(t)
	f.apply("s", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{})
	f.apply("s", eventlog.SessionCreated, t0, eventlog.SessionCreatedData{})
	f.apply("s", eventlog.SessionClosing, t0.Add(time.Second), eventlog.SessionClosingData{Reason: eventlog.ReasonClient})
	f.apply("s", eventlog.CommandStarted, t0.Add(2*time.Second), eventlog.CommandStartedData{CommandID: "late"})
	if s := f.get("s"); s.State != projection.Closing || !s.Running {
		t.Errorf("CommandStarted during Closing: state %s, running %v; want Closing, running", s.State, s.Running)
	}
	f.apply("s", eventlog.CommandCompleted, t0.Add(3*time.Second), eventlog.CommandCompletedData{CommandID: "late"})
	if s := f.get("s"); s.State != projection.Closing || s.Running || s.ExecutionCount != 1 {
		t.Errorf("CommandCompleted during Closing: %+v", s)
	}
}

func TestCreateFailedRemoves(t *testing.T) {
	f := newFeed(t)
	f.apply("ok", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{})
	f.apply("bad", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{})
	f.apply("bad", eventlog.SessionCreateFailed, t0.Add(time.Second), eventlog.SessionCreateFailedData{Error: "no image"})
	if _, ok := f.p.Get("bad"); ok {
		t.Error("a session whose create failed is still in the projection")
	}
	if l := f.p.List(); len(l) != 1 || l[0].ID != "ok" {
		t.Errorf("List = %+v, want only ok", l)
	}
	// Its closing events, if any come late, do not bring it back.
	f.apply("bad", eventlog.SessionClosed, t0.Add(2*time.Second), eventlog.SessionClosedData{Reason: eventlog.ReasonCreateFailed})
	if _, ok := f.p.Get("bad"); ok {
		t.Error("a late SessionClosed brought the session back")
	}
}

func TestDuplicateAndOldSeqIgnored(t *testing.T) {
	p := projection.NewSessions()
	apply := func(e eventlog.Event) {
		t.Helper()
		if err := p.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	apply(event(1, "s", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{}))
	apply(event(2, "s", eventlog.SessionCreated, t0, eventlog.SessionCreatedData{}))
	started := event(3, "s", eventlog.CommandStarted, t0, eventlog.CommandStartedData{})
	completed := event(4, "s", eventlog.CommandCompleted, t0, eventlog.CommandCompletedData{})
	apply(started)
	apply(completed)
	before, _ := p.Get("s")

	apply(completed)                                                                   // duplicate
	apply(started)                                                                     // older
	apply(event(2, "s", eventlog.SessionClosed, t0, eventlog.SessionClosedData{}))     // older, would remove it
	apply(event(4, "x", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{})) // same seq, other session
	after, ok := p.Get("s")
	if !ok || !reflect.DeepEqual(after, before) {
		t.Errorf("replayed events changed the session:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, ok := p.Get("x"); ok {
		t.Error("an event at an applied seq created a session")
	}
	if p.LastSeq() != 4 {
		t.Errorf("LastSeq = %d, want 4", p.LastSeq())
	}
	// A gap in seqs is not an error: the next event applies.
	apply(event(9, "s", eventlog.CommandStarted, t0, eventlog.CommandStartedData{}))
	if s, _ := p.Get("s"); !s.Running || s.LastSeq != 9 {
		t.Errorf("event after a gap not applied: %+v", s)
	}
}

func TestUnknownSessionIgnored(t *testing.T) {
	f := newFeed(t)
	f.apply("known", eventlog.SessionCreating, t0, eventlog.SessionCreatingData{})
	before := f.p.List()
	for _, typ := range []eventlog.Type{eventlog.SessionCreated, eventlog.CommandStarted, eventlog.CommandCompleted,
		eventlog.SessionClosing, eventlog.SessionClosed, eventlog.SessionCreateFailed, "SomethingNew"} {
		f.apply("ghost", typ, t0, map[string]any{})
	}
	if _, ok := f.p.Get("ghost"); ok {
		t.Error("events of an unknown session created it")
	}
	if after := f.p.List(); !reflect.DeepEqual(after, before) {
		t.Errorf("events of an unknown session changed the projection: %+v", after)
	}
	if f.p.LastSeq() != f.seq {
		t.Errorf("LastSeq = %d, want %d: ignored events still count as applied", f.p.LastSeq(), f.seq)
	}
	// An unknown type for a known session changes nothing but LastSeq.
	f.apply("known", "SomethingNew", t0.Add(time.Hour), map[string]any{})
	if s := f.get("known"); s.State != projection.Creating || !s.LastActivity.Equal(t0) {
		t.Errorf("an unknown event type changed the session: %+v", s)
	}
}

func TestUndecodablePayload(t *testing.T) {
	p := projection.NewSessions()
	e := eventlog.Event{Seq: 7, SessionID: "s", Type: eventlog.SessionCreating, Time: t0, Data: json.RawMessage(`{"language": 3}`)}
	err := p.Apply(e)
	if err == nil || !strings.Contains(err.Error(), "event 7") {
		t.Errorf("Apply of an undecodable payload = %v, want an error naming event 7", err)
	}
}

func TestListOrder(t *testing.T) {
	f := newFeed(t)
	// Oldest first, ties by id; seq order does not matter.
	for _, c := range []struct {
		id string
		at time.Duration
	}{{"b", 2 * time.Second}, {"c", time.Second}, {"a", time.Second}, {"d", 0}, {"e", 3 * time.Second}} {
		f.apply(c.id, eventlog.SessionCreating, t0.Add(c.at), eventlog.SessionCreatingData{})
	}
	f.apply("e", eventlog.SessionCreateFailed, t0.Add(4*time.Second), eventlog.SessionCreateFailedData{})
	var ids []string
	for _, s := range f.p.List() {
		ids = append(ids, s.ID)
	}
	if want := []string{"d", "a", "c", "b"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("List order = %v, want %v", ids, want)
	}

	// List and Get return copies.
	l := f.p.List()
	l[0].State = projection.Closed
	if s := f.get("d"); s.State != projection.Creating {
		t.Error("changing a listed session changed the projection")
	}
}

func TestMinutesConversion(t *testing.T) {
	s := projection.Session{CreatedAt: t0, LastActivity: t0, Config: eventlog.SessionConfig{IdleTimeoutMinutes: 0.5, MaxLifetimeMinutes: 1.25}}
	if got, want := s.IdleDeadline(), t0.Add(30*time.Second); !got.Equal(want) {
		t.Errorf("IdleDeadline = %v, want %v", got, want)
	}
	if got, want := s.LifetimeDeadline(), t0.Add(minutes(1.25)); !got.Equal(want) {
		t.Errorf("LifetimeDeadline = %v, want %v", got, want)
	}
}
