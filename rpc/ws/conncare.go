package ws

import (
	"sync"
	"time"
)

// idleCloser calls its close function once a connection has had no request
// for the timeout: no frame received and none still being handled. Pongs do
// not count: a client that only answers pings would hold a connection slot
// for ever. (Anything later that sends to a client unasked, a stream or a
// subscription, must count as a request in progress.)
type idleCloser struct {
	timeout time.Duration
	timer   *time.Timer

	mu   sync.Mutex
	busy int // frames received and not yet handled
}

func newIdleCloser(timeout time.Duration, close func()) *idleCloser {
	c := &idleCloser{timeout: timeout}
	c.timer = time.AfterFunc(timeout, func() {
		c.mu.Lock()
		busy := c.busy > 0
		c.mu.Unlock()
		if !busy { // else the frame's end starts the timer again
			close()
		}
	})
	return c
}

// begin marks a frame received; end marks it handled.
func (c *idleCloser) begin() {
	c.mu.Lock()
	c.busy++
	c.timer.Stop()
	c.mu.Unlock()
}

func (c *idleCloser) end() {
	c.mu.Lock()
	if c.busy--; c.busy == 0 {
		c.timer.Reset(c.timeout)
	}
	c.mu.Unlock()
}

func (c *idleCloser) stop() { c.timer.Stop() }

// controlFrameInterval is the pace of a peer's pings and pongs.
const controlFrameInterval = 100 * time.Millisecond

// controlPace spaces out the control frames (pings, pongs) a peer sends. A
// peer sends one every few seconds at most; past one per interval the
// connection's reader waits, so that a flood slows its own connection down
// rather than the server: 16 connections pinging as fast as they could
// (94,000 a second) made /health take half a second. Only the reader calls
// it.
type controlPace struct {
	interval time.Duration
	next     time.Time
}

func (p *controlPace) wait() {
	now := time.Now()
	if p.next.After(now) {
		time.Sleep(p.next.Sub(now))
		now = p.next
	}
	p.next = now.Add(p.interval)
}
