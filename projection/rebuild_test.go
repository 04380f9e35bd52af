package projection_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
	"github.com/codebeaker/codebeaker/projection"
)

// lifecycle appends one random session's events, a few records per Append
// at times, and stops at a random point: some sessions stay open in each
// state, others fail to be created or close.
func lifecycle(ctx context.Context, l *eventlog.Log, rng *rand.Rand, id string) (int, error) {
	var n int
	add := func(recs ...eventlog.Record) error {
		for i := range recs {
			recs[i].SessionID = id
		}
		_, err := l.Append(ctx, recs...)
		n += len(recs)
		return err
	}
	cfg := eventlog.SessionConfig{IdleTimeoutMinutes: float64(1 + rng.IntN(30)), MaxLifetimeMinutes: float64(30 + rng.IntN(90)), MemoryLimitMB: 128 << rng.IntN(3)}
	if err := add(eventlog.Record{Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{Language: []string{"python", "go", "deno"}[rng.IntN(3)], Runtime: "docker", Config: cfg}}); err != nil {
		return n, err
	}
	switch rng.IntN(8) {
	case 0:
		return n, nil // still creating
	case 1:
		return n, add(eventlog.Record{Type: eventlog.SessionCreateFailed, Data: eventlog.SessionCreateFailedData{Error: "no such image"}})
	}
	if err := add(eventlog.Record{Type: eventlog.SessionCreated, Data: eventlog.SessionCreatedData{ContainerID: "c-" + id, Workspace: "/ws/" + id}}); err != nil {
		return n, err
	}
	for c := range rng.IntN(5) {
		cmd := fmt.Sprintf("%s-%d", id, c)
		started := eventlog.Record{Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: cmd, Type: "execute"}}
		completed := eventlog.Record{Type: eventlog.CommandCompleted, Data: eventlog.CommandCompletedData{CommandID: cmd, Success: rng.IntN(2) == 0, DurationMs: rng.Int64N(1000)}}
		var err error
		switch rng.IntN(4) {
		case 0:
			err = add(started, completed)
		case 1:
			return n, add(started) // left running
		default:
			if err = add(started); err == nil {
				err = add(completed)
			}
		}
		if err != nil {
			return n, err
		}
	}
	closing := eventlog.Record{Type: eventlog.SessionClosing, Data: eventlog.SessionClosingData{Reason: eventlog.ReasonClient}}
	closed := eventlog.Record{Type: eventlog.SessionClosed, Data: eventlog.SessionClosedData{Reason: eventlog.ReasonClient}}
	switch rng.IntN(4) {
	case 0:
		return n, nil // open, idle or active
	case 1:
		return n, add(closing) // left closing
	case 2:
		return n, add(closing, closed)
	default:
		if err := add(closing); err != nil {
			return n, err
		}
		return n, add(closed)
	}
}

func TestRebuildEqualsLive(t *testing.T) {
	l, live := eventlogtest.OpenLive(t)
	const writers, sessionsEach = 6, 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for s := range sessionsEach {
				// Ids where one is a prefix of another: w1-s1, w1-s10, w1-s11.
				n, err := lifecycle(context.Background(), l, rng, fmt.Sprintf("w%d-s%d", w, s))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	rebuilt, err := projection.Rebuild(l)
	if err != nil {
		t.Fatal(err)
	}
	got, want := rebuilt.List(), live.List()
	if !reflect.DeepEqual(got, want) {
		for i := range min(len(got), len(want)) {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("projection rebuilt from the log differs from the live one at session %d of %d:\nrebuilt %+v\nlive    %+v", i, len(want), got[i], want[i])
			}
		}
		t.Fatalf("projection rebuilt from the log has %d sessions, the live one %d", len(got), len(want))
	}
	if rebuilt.LastSeq() != uint64(total) || live.LastSeq() != uint64(total) {
		t.Errorf("LastSeq: rebuilt %d, live %d; %d events were appended", rebuilt.LastSeq(), live.LastSeq(), total)
	}
	// The comparison means something only if the view is not empty and has
	// sessions in several states.
	states := map[projection.State]int{}
	running := 0
	for _, s := range got {
		states[s.State]++
		if s.Running {
			running++
		}
	}
	t.Logf("%d events; %d open sessions by state %v, %d running", total, len(got), states, running)
	if total < 200 || len(states) < 3 || running == 0 {
		t.Errorf("the random lifecycles gave too thin a view to compare: %d events, states %v, %d running", total, states, running)
	}
}

// BenchmarkRebuild replays a log of 100,000 events of 1,000 sessions.
func BenchmarkRebuild(b *testing.B) {
	const writers, sessions, perSession = 4, 1000, 100 // events per session: 2 + 48 commands × 2 + 2
	l := eventlogtest.Open(b)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for s := w; s < sessions; s += writers {
				id := fmt.Sprintf("bench-%04d", s)
				recs := []eventlog.Record{
					{SessionID: id, Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{Language: "python", Runtime: "docker", Config: eventlog.SessionConfig{IdleTimeoutMinutes: 10, MaxLifetimeMinutes: 60}}},
					{SessionID: id, Type: eventlog.SessionCreated, Data: eventlog.SessionCreatedData{ContainerID: "c-" + id, Workspace: "/ws/" + id}},
				}
				for c := range (perSession - 4) / 2 {
					cmd := fmt.Sprintf("%s-%d", id, c)
					recs = append(recs,
						eventlog.Record{SessionID: id, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: cmd, Type: "execute"}},
						eventlog.Record{SessionID: id, Type: eventlog.CommandCompleted, Data: eventlog.CommandCompletedData{CommandID: cmd, Success: true, Stdout: "ok\n", StdoutBytes: 3}})
				}
				if s%10 == 0 { // a tenth stay open
					recs = append(recs,
						eventlog.Record{SessionID: id, Type: eventlog.CommandStarted, Data: eventlog.CommandStartedData{CommandID: id + "-last"}},
						eventlog.Record{SessionID: id, Type: eventlog.CommandCompleted, Data: eventlog.CommandCompletedData{CommandID: id + "-last"}})
				} else {
					recs = append(recs,
						eventlog.Record{SessionID: id, Type: eventlog.SessionClosing, Data: eventlog.SessionClosingData{Reason: eventlog.ReasonIdleTimeout}},
						eventlog.Record{SessionID: id, Type: eventlog.SessionClosed, Data: eventlog.SessionClosedData{Reason: eventlog.ReasonIdleTimeout}})
				}
				if _, err := l.Append(context.Background(), recs...); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	last, err := l.LastSeq()
	if err != nil || last != sessions*perSession {
		b.Fatalf("built a log of %d events (%v), want %d", last, err, sessions*perSession)
	}

	for b.Loop() {
		p, err := projection.Rebuild(l)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.List()) != sessions/10 {
			b.Fatalf("rebuilt %d open sessions, want %d", len(p.List()), sessions/10)
		}
	}
	b.ReportMetric(float64(last)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
