package rpc_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/codebeaker/codebeaker/rpc"
)

// A peer that answers pings keeps its connection however idle it is; one
// that does not is dropped after PongTimeout.
func TestDeadPeersAreDropped(t *testing.T) {
	ts := newTestServer(t, func(_ *rpc.Config, o *rpc.ServerOptions) { o.PongTimeout = 300 * time.Millisecond })
	alive := ts.dial() // reads all the time, so it answers pings
	silent, _, err := websocket.DefaultDialer.Dial(ts.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(1500 * time.Millisecond)

	alive.ok("session.list", map[string]any{}, nil)
	// Reading now answers the pings too late: the server has closed it.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = silent.ReadMessage()
	var netErr net.Error
	if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) {
		t.Errorf("the silent connection is still open: %v", err)
	}
}
