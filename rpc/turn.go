package rpc

import (
	"context"
	"sync"
)

// turn keeps one connection's commands in the order their frames arrived.
// Frames are handled concurrently, but each waits for the frame before it
// to be admitted (its command queued, or known to need no queue) before
// queueing its own; the wait is short because admission never waits for a
// command to run.
type turn struct {
	prev <-chan struct{}
	mine chan struct{}
	once sync.Once
}

type turnKey struct{}

// nextTurn returns the turn of the frame after prev (nil for the first).
func nextTurn(prev *turn) *turn {
	t := &turn{mine: make(chan struct{})}
	if prev != nil {
		t.prev = prev.mine
	}
	return t
}

func withTurn(ctx context.Context, t *turn) context.Context {
	return context.WithValue(ctx, turnKey{}, t)
}

func turnOf(ctx context.Context) *turn {
	t, _ := ctx.Value(turnKey{}).(*turn)
	return t
}

// wait blocks until the frames before this one have been admitted.
func (t *turn) wait() {
	if t != nil && t.prev != nil {
		<-t.prev
	}
}

// admitted lets the next frame go; calling it again does nothing.
func (t *turn) admitted() {
	if t != nil {
		t.once.Do(func() { close(t.mine) })
	}
}
