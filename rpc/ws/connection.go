package ws

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// connection is one client's WebSocket: a reader that admits frames in the
// order they arrive, handlers that finish them concurrently (at most
// MaxInFlightPerConn), one writer at a time, a pinger, and an idle timer.
type connection struct {
	srv    *Server
	conn   *websocket.Conn
	logger zerolog.Logger

	writeMu sync.Mutex
	idle    *idleCloser
	pace    controlPace // only the reader calls it
}

func newConnection(srv *Server, conn *websocket.Conn, logger zerolog.Logger) *connection {
	c := &connection{srv: srv, conn: conn, logger: logger, pace: controlPace{interval: controlFrameInterval}}
	timeout := srv.opts.IdleTimeout
	c.idle = newIdleCloser(timeout, func() {
		logger.Debug().Dur("idleTimeout", timeout).Msg("closing an idle connection")
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure,
			"no request for "+timeout.String()), time.Now().Add(time.Second))
		conn.Close()
	})
	return c
}

// serve runs the connection until the peer goes, it idles out or a write
// fails; it returns after every handler it started has returned.
func (c *connection) serve(ctx context.Context) {
	defer c.idle.stop()
	opts := c.srv.opts
	// Frames a little over the limit are read and answered with an error;
	// far over it, the connection is closed (1009) rather than read on.
	c.conn.SetReadLimit(2 * opts.MaxMessageBytes)
	// A peer that answers no ping for PongTimeout is gone (a dropped
	// network, a killed client): its connection is closed rather than kept.
	c.conn.SetReadDeadline(time.Now().Add(opts.PongTimeout))
	c.conn.SetPongHandler(func(string) error {
		c.pace.wait()
		return c.conn.SetReadDeadline(time.Now().Add(opts.PongTimeout))
	})
	c.conn.SetPingHandler(func(data string) error {
		c.pace.wait()
		// Waits for a reply being written as long as that may take.
		return c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(opts.WriteTimeout))
	})
	stopPings := make(chan struct{})
	defer close(stopPings)
	go c.ping(stopPings)
	c.read(ctx)
}

// read admits each frame in the order it arrived, so that a client's
// commands queue in its order, and finishes it in a handler of its own.
func (c *connection) read(ctx context.Context) {
	opts := c.srv.opts
	inFlight := make(chan struct{}, opts.MaxInFlightPerConn)
	var handlers sync.WaitGroup
	defer handlers.Wait()
	for {
		// From now: the wait for a free handler slot may have outlasted
		// PongTimeout with no pong read, the peer being there all along.
		c.conn.SetReadDeadline(time.Now().Add(opts.PongTimeout))
		_, rd, err := c.conn.NextReader()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) && !errors.Is(err, io.EOF) {
				c.logger.Debug().Err(err).Msg("connection ended")
			}
			return
		}
		c.conn.SetReadDeadline(time.Now().Add(opts.PongTimeout)) // any frame shows the peer is there
		c.idle.begin()
		frame, h, err := readFrame(rd, opts.MaxMessageBytes, c.srv.budget)
		switch {
		case errors.Is(err, errFrameTooLarge):
			c.write(tooLarge(opts.MaxMessageBytes))
			c.idle.end()
			continue
		case errors.Is(err, errOverBudget):
			c.write(overBudget(opts.MaxRequestBytesInFlight))
			c.idle.end()
			continue
		case err != nil:
			c.idle.end()
			return
		}
		inFlight <- struct{}{}
		finish := c.srv.rpc.Admit(ctx, frame)
		// Decoded: what is kept of the frame now is at most its size, until
		// its calls are finished.
		h.keep(int64(len(frame)))
		frame = nil
		handlers.Go(func() {
			defer func() { <-inFlight }()
			defer c.idle.end()
			defer h.release()
			if reply := finish(); reply != nil {
				c.write(reply)
			}
		})
	}
}

// write sends one frame. A peer that does not take its replies gets no
// more work done: a failed write closes the connection.
func (c *connection) write(frame []byte) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.logger.Debug().Err(err).Msg("cannot write a reply")
		c.conn.Close()
	}
}

// ping pings the peer every third of PongTimeout until stop is closed.
func (c *connection) ping(stop <-chan struct{}) {
	opts := c.srv.opts
	tick := time.NewTicker(opts.PongTimeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			c.writeMu.Lock()
			err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(opts.WriteTimeout))
			c.writeMu.Unlock()
			if err != nil {
				c.conn.Close()
				return
			}
		}
	}
}
