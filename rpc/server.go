package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
	"github.com/codebeaker/codebeaker/sandbox"
)

// ServerOptions configure the HTTP and WebSocket side.
type ServerOptions struct {
	MaxMessageBytes    int64 // largest JSON-RPC frame accepted
	MaxReplyBytes      int   // largest reply frame sent; bigger replies become errors
	MaxInFlightPerConn int   // frames of one connection handled at once
	MaxConnections     int   // WebSocket connections open at once
	WriteTimeout       time.Duration
	PongTimeout        time.Duration // a peer silent this long, pings unanswered, is dropped
	IdleTimeout        time.Duration // a connection with no request for this long is closed
	// MaxRequestBytesInFlight bounds, across connections, the bytes of
	// frames being read and of the decoded commands that wait or run; a
	// frame that would pass it is dropped with -32004.
	MaxRequestBytesInFlight int64
}

// Server serves /health and the JSON-RPC WebSocket endpoint.
type Server struct {
	svc      *Service
	opts     ServerOptions
	rpc      *jsonrpc.Dispatcher
	upgrader websocket.Upgrader
	logger   zerolog.Logger
	nextConn atomic.Uint64
	budget   *budget

	mu        sync.Mutex
	conns     map[*websocket.Conn]struct{}
	upgrading int
	wg        sync.WaitGroup
}

// NewServer serves svc.
func NewServer(svc *Service, opts ServerOptions) *Server {
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 16 << 20
	}
	if opts.MaxReplyBytes == 0 {
		opts.MaxReplyBytes = 32 << 20
	}
	if opts.MaxInFlightPerConn == 0 {
		opts.MaxInFlightPerConn = 16
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 256
	}
	if opts.MaxRequestBytesInFlight == 0 {
		opts.MaxRequestBytesInFlight = DefaultMaxRequestBytesInFlight
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.PongTimeout == 0 {
		opts.PongTimeout = time.Minute
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	s := &Server{
		svc:    svc,
		opts:   opts,
		logger: svc.cfg.Logger,
		conns:  map[*websocket.Conn]struct{}{},
		budget: newBudget(opts.MaxRequestBytesInFlight, budgetWait),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  32 << 10,
			WriteBufferSize: 32 << 10,
			// Browser playgrounds on other origins are clients too; access
			// control belongs to API keys, not to the Origin header.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	s.rpc = &jsonrpc.Dispatcher{
		// Each element may hold a large reply until the batch is sent.
		BatchConcurrency: 4,
		MaxReplyBytes:    opts.MaxReplyBytes,
		ReplyTooLarge: func(size int) *jsonrpc.Error {
			return jsonrpc.NewError(CodeMessageTooLarge, "reply too large", map[string]int{"bytes": size, "maxBytes": opts.MaxReplyBytes})
		},
		OnInternalError: func(ctx context.Context, req *jsonrpc.Request, err error) {
			zerolog.Ctx(ctx).Error().Err(err).Str("method", req.Method).Msg("internal error")
		},
	}
	svc.register(s.rpc, opts.MaxReplyBytes)
	return s
}

// DefaultMaxRequestBytesInFlight is ServerOptions.MaxRequestBytesInFlight
// when unset: sixteen commands of the default largest frame size.
const DefaultMaxRequestBytesInFlight = 256 << 20

// budgetWait is how long a frame being read waits for room in the request
// budget before it is refused.
const budgetWait = time.Second

// Register adds a method beside the session methods.
func (s *Server) Register(method string, h jsonrpc.Handler) { s.rpc.Register(method, h) }

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.serveHealth)
	mux.HandleFunc("GET /ws/jsonrpc", s.serveWS)
	return mux
}

// CloseConnections ends every WebSocket connection after the replies in
// flight have been written.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	for c := range s.conns {
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Health is the body of GET /health.
type Health struct {
	Status   string                    `json:"status"` // ok, degraded (some runtime down) or unavailable
	EventLog eventLogHealth            `json:"eventLog"`
	Runtimes map[string]sandbox.Health `json:"runtimes"`
	Sessions int                       `json:"sessions"`
	Uptime   float64                   `json:"uptimeSeconds"`
}

type eventLogHealth struct {
	Writable bool   `json:"writable"`
	LastSeq  uint64 `json:"lastSeq"`
	Error    string `json:"error,omitempty"`
}

// Health checks the log and every runtime.
func (s *Service) Health(ctx context.Context) Health {
	h := Health{Status: "ok", Runtimes: map[string]sandbox.Health{}, Sessions: len(s.view.List()), Uptime: time.Since(s.start).Seconds()}
	seq, err := s.log.LastSeq()
	h.EventLog = eventLogHealth{Writable: err == nil, LastSeq: seq}
	if err != nil {
		h.EventLog.Error = "event log cannot be read"
	}
	usable := 0
	for kind, rt := range s.cfg.Runtimes {
		rh := sandbox.Health{Available: true}
		if r, ok := rt.(sandbox.HealthReporter); ok {
			rh = r.Health(ctx)
		}
		h.Runtimes[kind] = rh
		if rh.Available {
			usable++
		}
	}
	switch {
	case !h.EventLog.Writable || usable == 0:
		h.Status = "unavailable"
	case usable < len(s.cfg.Runtimes):
		h.Status = "degraded"
	}
	return h
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	h := s.svc.Health(ctx)
	w.Header().Set("Content-Type", "application/json")
	if h.Status == "unavailable" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(h)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	full := len(s.conns)+s.upgrading >= s.opts.MaxConnections
	if !full {
		s.upgrading++
	}
	s.mu.Unlock()
	if full {
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	s.mu.Lock()
	s.upgrading--
	if err == nil {
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if err != nil {
		return // the upgrader has answered the client
	}
	connID := s.nextConn.Add(1)
	logger := s.logger.With().Uint64("conn", connID).Str("remote", r.RemoteAddr).Logger()
	ctx := logger.WithContext(context.WithoutCancel(r.Context()))
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
		s.wg.Done()
	}()
	logger.Debug().Msg("connection opened")

	// Frames a little over the limit are read and answered with an error;
	// far over it, the connection is closed (1009) rather than read on.
	conn.SetReadLimit(2 * s.opts.MaxMessageBytes)
	var writeMu sync.Mutex
	write := func(frame []byte) {
		writeMu.Lock()
		defer writeMu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
			logger.Debug().Err(err).Msg("cannot write a reply")
			// A peer that does not take its replies gets no more work done.
			conn.Close()
		}
	}
	// A peer that answers no ping for PongTimeout is gone (a dropped
	// network, a killed client): its connection is closed rather than kept.
	conn.SetReadDeadline(time.Now().Add(s.opts.PongTimeout))
	pace := controlPace{interval: controlFrameInterval}
	conn.SetPongHandler(func(string) error {
		pace.wait()
		return conn.SetReadDeadline(time.Now().Add(s.opts.PongTimeout))
	})
	conn.SetPingHandler(func(data string) error {
		pace.wait()
		// Waits for a reply being written as long as that may take.
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(s.opts.WriteTimeout))
	})
	idle := newIdleCloser(s.opts.IdleTimeout, func() {
		logger.Debug().Dur("idleTimeout", s.opts.IdleTimeout).Msg("closing an idle connection")
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure,
			"no request for "+s.opts.IdleTimeout.String()), time.Now().Add(time.Second))
		conn.Close()
	})
	defer idle.stop()
	stopPings := make(chan struct{})
	defer close(stopPings)
	go func() {
		tick := time.NewTicker(s.opts.PongTimeout / 3)
		defer tick.Stop()
		for {
			select {
			case <-stopPings:
				return
			case <-tick.C:
				writeMu.Lock()
				err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.opts.WriteTimeout))
				writeMu.Unlock()
				if err != nil {
					conn.Close()
					return
				}
			}
		}
	}()
	inFlight := make(chan struct{}, s.opts.MaxInFlightPerConn)
	var last *turn
	var handlers sync.WaitGroup
	defer handlers.Wait()
	for {
		_, rd, err := conn.NextReader()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) && !errors.Is(err, io.EOF) {
				logger.Debug().Err(err).Msg("connection ended")
			}
			return
		}
		conn.SetReadDeadline(time.Now().Add(s.opts.PongTimeout)) // any frame shows the peer is there
		idle.begin()
		frame, h, err := readFrame(rd, s.opts.MaxMessageBytes, s.budget)
		switch {
		case errors.Is(err, errFrameTooLarge):
			write(tooLarge(s.opts.MaxMessageBytes))
			idle.end()
			continue
		case errors.Is(err, errOverBudget):
			write(overBudget(s.opts.MaxRequestBytesInFlight))
			idle.end()
			continue
		case err != nil:
			return
		}
		inFlight <- struct{}{}
		t := nextTurn(last)
		last = t
		in := &incoming{frame: frame, hold: h, turn: t}
		handlers.Go(func() {
			defer func() { <-inFlight }()
			defer idle.end()
			if reply := s.handle(ctx, in); reply != nil {
				write(reply)
			}
		})
	}
}

// incoming is a frame read and waiting for its handler.
type incoming struct {
	frame []byte // taken by handle
	hold  *hold
	turn  *turn
}

// handle runs one frame. Only the dispatcher refers to the frame, so that it
// can be collected once decoded, while its command waits in a queue; until
// the handler returns, the frame's hold counts what is kept of it.
func (s *Server) handle(ctx context.Context, in *incoming) []byte {
	frame, t := in.frame, in.turn
	in.frame = nil
	defer in.hold.release()
	defer t.admitted()
	hctx := withTurn(ctx, t)
	if isBatch(frame) {
		// A batch's elements may run in any order among themselves
		// (the specification allows it), but as a whole it keeps its
		// place: it starts after the frames before it are admitted,
		// and the frames after it wait for all of it.
		t.wait()
		hctx = ctx
	} else {
		hctx = withHold(hctx, in.hold)
	}
	return s.rpc.Handle(hctx, frame)
}

func isBatch(frame []byte) bool {
	trimmed := bytes.TrimLeft(frame, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '['
}

func tooLarge(limit int64) []byte {
	return refusal(jsonrpc.NewError(CodeMessageTooLarge, "message too large", map[string]int64{"maxBytes": limit}))
}

func overBudget(limit int64) []byte {
	return refusal(jsonrpc.NewError(CodeCapacityExhausted, ErrCapacity.Error(), fmt.Sprintf(
		"the server holds requests in flight up to its limit of %d bytes (--max-request-bytes-in-flight); this message was dropped unread: send it again when earlier commands have finished", limit)))
}

// refusal is the reply to a frame dropped unread: its id is not known.
func refusal(e *jsonrpc.Error) []byte {
	reply, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": e})
	return reply
}
