package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// Options configure the WebSocket endpoint.
type Options struct {
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
	Logger                  zerolog.Logger
}

// DefaultOptions are the options of a server started with no flags.
func DefaultOptions() Options {
	return Options{
		MaxMessageBytes:         16 << 20,
		MaxReplyBytes:           32 << 20,
		MaxInFlightPerConn:      16,
		MaxConnections:          256,
		WriteTimeout:            30 * time.Second,
		PongTimeout:             time.Minute,
		IdleTimeout:             5 * time.Minute,
		MaxRequestBytesInFlight: 256 << 20, // sixteen commands of the largest frame size
		Logger:                  zerolog.Nop(),
	}
}

// Server serves the JSON-RPC methods of a service over WebSocket
// connections, one message or batch per text frame.
type Server struct {
	opts     Options
	rpc      *jsonrpc.Dispatcher
	upgrader websocket.Upgrader
	nextConn atomic.Uint64
	budget   *budget

	mu        sync.Mutex
	conns     map[*websocket.Conn]struct{}
	upgrading int
	wg        sync.WaitGroup // one per open connection
}

// NewServer serves svc's methods. Zero options take DefaultOptions' values.
func NewServer(svc *rpc.Service, opts Options) *Server {
	opts = withDefaults(opts)
	s := &Server{
		opts:   opts,
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
			return jsonrpc.NewError(rpc.CodeMessageTooLarge, "reply too large", map[string]int{"bytes": size, "maxBytes": opts.MaxReplyBytes})
		},
		WithRequest: func(ctx context.Context, req *jsonrpc.Request) context.Context {
			l := zerolog.Ctx(ctx).With().Str("method", req.Method)
			if !req.IsNotification() {
				l = loggedID(l, req.ID)
			}
			return l.Logger().WithContext(ctx)
		},
		OnInternalError: func(ctx context.Context, req *jsonrpc.Request, err error) {
			zerolog.Ctx(ctx).Error().Err(err).Msg("internal error") // the context names the method
		},
	}
	svc.Register(s.rpc)
	return s
}

// maxLoggedID is how much of a request id a log line carries: an id is
// the client's and may be as long as a frame.
const maxLoggedID = 64

// loggedID adds the request id to l, its first maxLoggedID bytes (as a
// string) when it is longer.
func loggedID(l zerolog.Context, id []byte) zerolog.Context {
	if len(id) <= maxLoggedID {
		return l.RawJSON("request", id)
	}
	return l.Str("request", string(id[:maxLoggedID])+"...").Int("requestIdBytes", len(id))
}

func withDefaults(o Options) Options {
	d := DefaultOptions()
	orDefault(&o.MaxMessageBytes, d.MaxMessageBytes)
	orDefault(&o.MaxReplyBytes, d.MaxReplyBytes)
	orDefault(&o.MaxInFlightPerConn, d.MaxInFlightPerConn)
	orDefault(&o.MaxConnections, d.MaxConnections)
	orDefault(&o.WriteTimeout, d.WriteTimeout)
	orDefault(&o.PongTimeout, d.PongTimeout)
	orDefault(&o.IdleTimeout, d.IdleTimeout)
	orDefault(&o.MaxRequestBytesInFlight, d.MaxRequestBytesInFlight)
	return o
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// budgetWait is how long a frame being read waits for room in the request
// budget before it is refused.
const budgetWait = time.Second

// Register adds a method beside the session methods.
func (s *Server) Register(method string, h jsonrpc.Handler) { s.rpc.Register(method, h) }

// RequestBytesInFlight is how many bytes of the request budget are held.
func (s *Server) RequestBytesInFlight() int64 { return s.budget.inUse() }

// ServeHTTP upgrades the request to a WebSocket connection and serves it
// until it ends; past MaxConnections it answers 503.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn := s.accept(w, r)
	if conn == nil {
		return
	}
	defer s.release(conn)
	id := s.nextConn.Add(1)
	logger := s.opts.Logger.With().Uint64("conn", id).Str("remote", r.RemoteAddr).Logger()
	logger.Debug().Msg("connection opened")
	newConnection(s, conn, logger).serve(logger.WithContext(context.WithoutCancel(r.Context())))
}

// accept upgrades within the connection cap; nil when it has answered the
// client itself.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) *websocket.Conn {
	s.mu.Lock()
	full := len(s.conns)+s.upgrading >= s.opts.MaxConnections
	if !full {
		s.upgrading++
	}
	s.mu.Unlock()
	if full {
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return nil
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upgrading--
	if err != nil {
		return nil // the upgrader has answered the client
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	return conn
}

func (s *Server) release(conn *websocket.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
	conn.Close()
	s.wg.Done()
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

func tooLarge(limit int64) []byte {
	return refusal(jsonrpc.NewError(rpc.CodeMessageTooLarge, "message too large", map[string]int64{"maxBytes": limit}))
}

func overBudget(limit int64) []byte {
	return refusal(jsonrpc.NewError(rpc.CodeCapacityExhausted, rpc.ErrCapacity.Error(), fmt.Sprintf(
		"the server holds requests in flight up to its limit of %d bytes (--max-request-bytes-in-flight); this message was dropped unread: send it again when earlier commands have finished", limit)))
}

// refusal is the reply to a frame dropped unread: its id is not known.
func refusal(e *jsonrpc.Error) []byte {
	reply, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": e})
	return reply
}
