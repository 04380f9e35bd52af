package rpc_test

import (
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
)

// TestCloseTeardownIsTheReconcilersToLeave: session.close answers before
// its container is removed, and the reconciler, passing every few
// milliseconds meanwhile, leaves that removal to the teardown: nothing is
// recorded after SessionClosed, and the containers go.
func TestCloseTeardownIsTheReconcilersToLeave(t *testing.T) {
	ts := newTestServer(t, func(cfg *rpc.Config, _ *ws.Options) { cfg.ReconcileInterval = 5 * time.Millisecond })
	c := ts.dial()
	var ids []string
	for range 4 {
		sid := c.create(map[string]any{"language": "python"})
		start := time.Now()
		c.ok("session.close", map[string]any{"sessionId": sid}, nil)
		t.Logf("session.close answered after %v", time.Since(start).Round(time.Millisecond))
		ids = append(ids, sid)
	}
	for _, sid := range ids {
		eventually(t, "the container removed after close", func() bool { return len(containersOf(t, sid)) == 0 })
		events, err := ts.svc.Log().SessionEvents(sid, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if last := events[len(events)-1]; last.Type != eventlog.SessionClosed {
			t.Errorf("session %s: %s recorded after its close", sid, last.Type)
		}
	}
}
