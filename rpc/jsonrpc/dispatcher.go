package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Request is one decoded call.
type Request struct {
	Method string
	// Params is the raw "params" member: an object, an array, or nil when
	// absent. Decode it with DecodeParams. A handler may set it to nil once
	// decoded, so that a long call does not keep a large one.
	Params json.RawMessage
	// ID is the raw "id" member as sent (a string, a number or null), or nil
	// for a notification.
	ID json.RawMessage
}

// IsNotification reports whether the request has no "id" member, in which
// case no response is sent.
func (r *Request) IsNotification() bool { return r.ID == nil }

// Handler runs one call and returns its result, which is encoded as JSON, or
// an error. An *Error (also when wrapped) is sent as is; any other error is
// sent as -32603 Internal error and reported to Dispatcher.OnInternalError.
type Handler interface {
	ServeRPC(ctx context.Context, req *Request) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// ServeRPC calls f(ctx, req).
func (f HandlerFunc) ServeRPC(ctx context.Context, req *Request) (any, error) { return f(ctx, req) }

// Admitter is a handler whose calls begin with a step that must keep the
// order in which a connection's frames arrived (queueing work, say), and
// end with one that need not (waiting for that work). Admit does the first
// step and returns the second, or an error, which is the call's result.
// Admit must not block for long: a transport admits one frame after
// another. The dispatcher calls Admit, never ServeRPC, on an Admitter.
type Admitter interface {
	Handler
	Admit(ctx context.Context, req *Request) (finish func() (any, error), err error)
}

// Dispatcher routes calls to handlers by method name. The zero value is ready
// to use. Register every method before the first Handle; after that Handle
// may be called from any number of goroutines.
type Dispatcher struct {
	// MaxBatch is the most requests a batch may hold; 0 means 100. A longer
	// batch is refused as a whole with one Invalid Request.
	MaxBatch int
	// BatchConcurrency is the most elements of one batch that run at once;
	// 0 means 16.
	BatchConcurrency int
	// OnInternalError receives what clients are not shown: errors that are not
	// *Error, recovered panics (with their stack) and encoding failures. It
	// may be called concurrently. When nil, the standard logger is used.
	OnInternalError func(ctx context.Context, req *Request, err error)
	// MaxReplyBytes caps a reply frame; 0 means no cap. A response over it
	// is replaced by the error ReplyTooLarge returns, and so are the batch
	// elements that would take a batch's reply over it (elements are
	// measured as they finish: those that finish first are kept).
	MaxReplyBytes int
	// WithRequest, when set, derives each call's context from the frame's
	// (a logger naming the request, say) before the call is admitted.
	WithRequest func(ctx context.Context, req *Request) context.Context
	// ReplyTooLarge is that error, given the size refused; nil means
	// -32603 Internal error.
	ReplyTooLarge func(size int) *Error

	methods map[string]Handler
}

// Register routes method to h. It panics on an empty name, a nil handler, a
// duplicate, or a name starting with "rpc." (reserved by the specification).
func (d *Dispatcher) Register(method string, h Handler) {
	switch {
	case method == "" || h == nil:
		panic("jsonrpc: Register needs a method name and a handler")
	case strings.HasPrefix(method, "rpc."):
		panic("jsonrpc: method names starting with \"rpc.\" are reserved: " + method)
	case d.methods[method] != nil:
		panic("jsonrpc: method registered twice: " + method)
	}
	if d.methods == nil {
		d.methods = make(map[string]Handler)
	}
	d.methods[method] = h
}

// Handle takes one frame (a message or a batch) and returns the reply frame,
// or nil when nothing must be sent: a notification, or a batch of only
// notifications. It returns once every handler the frame started has
// returned. The caller bounds the frame size.
func (d *Dispatcher) Handle(ctx context.Context, frame []byte) []byte {
	return d.Admit(ctx, frame)()
}

// Admit takes one frame and admits its calls (Admitter), in order, before
// it returns; the returned function runs the rest of every call and
// returns the reply frame, as Handle does. A transport that keeps a
// connection's frames in order calls Admit for each frame in the order they
// arrived and may run the returned functions concurrently. Admit keeps no
// reference to frame.
func (d *Dispatcher) Admit(ctx context.Context, frame []byte) (reply func() []byte) {
	frame = bytes.TrimLeft(frame, " \t\r\n")
	// JSON between systems must be UTF-8 (RFC 8259), and ids are echoed into
	// a WebSocket text frame, which must be UTF-8 too.
	if !utf8.Valid(frame) || !json.Valid(frame) {
		return d.refuse(ctx, &Request{}, errParse)
	}
	if frame[0] != '[' {
		req, err := parse(frame)
		if err != nil {
			return d.refuse(ctx, req, err)
		}
		c := d.admit(ctx, req)
		return func() []byte { return d.finish(ctx, c) }
	}

	limit := orDefault(d.MaxBatch, 100)
	var elems [][]byte
	n := 0
	elements(frame, func(elem []byte) {
		if n++; n <= limit {
			elems = append(elems, elem)
		}
	})
	switch {
	case n == 0:
		return d.refuse(ctx, &Request{}, invalidRequest("empty batch"))
	case n > limit:
		return d.refuse(ctx, &Request{}, invalidRequest(
			fmt.Sprintf("batch of %d requests exceeds the limit of %d", n, limit)))
	}
	// The elements are admitted in order (a batch keeps its place among
	// the frames, and the specification lets its elements run in any
	// order), then finished concurrently.
	calls := make([]*admitted, len(elems))
	for i, elem := range elems {
		elems[i] = nil // only the decoded request is kept
		req, err := parse(elem)
		if err != nil { // answered even without an id: it is no notification
			calls[i] = &admitted{req: req, reply: d.reply(ctx, req, nil, err)}
			continue
		}
		calls[i] = d.admit(ctx, req)
	}
	return func() []byte { return d.finishBatch(ctx, calls) }
}

// finishBatch finishes a batch's calls, at most BatchConcurrency at once.
// Each reply is measured as soon as it is made, so that the replies kept
// for the batch never pass MaxReplyBytes: the elements that finish first
// are kept, the ones that would take the batch over the cap get
// ReplyTooLarge.
func (d *Dispatcher) finishBatch(ctx context.Context, calls []*admitted) []byte {
	replies := make([][]byte, len(calls))
	var (
		mu    sync.Mutex
		total int
	)
	keep := func(i int, req *Request, r []byte) {
		if r == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if d.MaxReplyBytes > 0 && total+len(r)+1 > d.MaxReplyBytes {
			r = d.tooLarge(req, len(r))
		}
		total += len(r) + 1
		replies[i] = r
	}
	sem := make(chan struct{}, orDefault(d.BatchConcurrency, 16))
	var wg sync.WaitGroup
	for i, c := range calls {
		calls[i] = nil
		if c.finish == nil { // decided already
			keep(i, c.req, d.finish(ctx, c))
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			keep(i, c.req, d.finish(ctx, c))
		})
	}
	wg.Wait()

	replies = slices.DeleteFunc(replies, func(r []byte) bool { return r == nil })
	if len(replies) == 0 {
		return nil
	}
	out := append([]byte{'['}, bytes.Join(replies, []byte{','})...)
	return append(out, ']')
}

// refuse is the reply to a frame none of whose calls runs.
func (d *Dispatcher) refuse(ctx context.Context, req *Request, err *Error) func() []byte {
	reply := d.reply(ctx, req, nil, err)
	return func() []byte { return reply }
}

// parse checks one message, valid JSON, against the specification's Request
// object. On error the returned request still carries the id if a valid one
// was read, so that the Invalid Request reply can echo it. The request keeps
// copies, not the frame.
func parse(raw []byte) (*Request, *Error) {
	req := &Request{}
	if first(raw) != '{' {
		return req, invalidRequest("request must be an object")
	}
	var id, version, method, params []byte // nil: absent; the last of equal names wins
	members(raw, func(name, value []byte) {
		switch string(name) {
		case "id":
			id = value
		case "jsonrpc":
			version = value
		case "method":
			method = value
		case "params":
			params = value
		}
	})
	if id != nil {
		switch c := first(id); {
		case c == '"' || c == 'n' || c == '-' || '0' <= c && c <= '9':
			req.ID = bytes.Clone(id)
		default:
			return req, invalidRequest(`"id" must be a string, a number or null`)
		}
	}
	var v string
	if json.Unmarshal(version, &v) != nil || v != "2.0" {
		return req, invalidRequest(`"jsonrpc" must be "2.0"`)
	}
	if first(method) != '"' || json.Unmarshal(method, &req.Method) != nil {
		return req, invalidRequest(`"method" must be a string`)
	}
	if params != nil {
		if c := first(params); c != '{' && c != '[' {
			return req, invalidRequest(`"params" must be an object or an array`)
		}
		req.Params = bytes.Clone(params)
	}
	return req, nil
}

// first returns the first byte of a JSON value, or 0 when there is none.
func first(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// admitted is a call whose admission has happened: finish runs the rest,
// unless err (or a missing method) already decided the reply.
type admitted struct {
	ctx    context.Context // the call's, from WithRequest
	req    *Request
	finish func() (any, error)
	err    error
	reply  []byte // the reply to a request that is not valid
}

// admit routes a valid request and runs its admission.
func (d *Dispatcher) admit(ctx context.Context, req *Request) (c *admitted) {
	if d.WithRequest != nil {
		ctx = d.WithRequest(ctx, req)
	}
	c = &admitted{ctx: ctx, req: req}
	h := d.methods[req.Method]
	switch a, ok := h.(Admitter); {
	case h == nil:
		c.err = NewError(CodeMethodNotFound, "Method not found", nil)
	case ok:
		defer d.recoverInto(ctx, req, &c.err)
		c.finish, c.err = a.Admit(ctx, req)
	default:
		c.finish = func() (any, error) { return h.ServeRPC(ctx, req) }
	}
	return c
}

// finish runs the rest of an admitted call and returns its response, nil
// for a notification.
func (d *Dispatcher) finish(ctx context.Context, c *admitted) []byte {
	if c.reply != nil {
		return c.reply
	}
	if c.ctx != nil {
		ctx = c.ctx
	}
	req := c.req
	result, err := c.result(ctx, d)
	if e, ok := err.(*Error); ok && e == nil {
		err = nil // "return v, DecodeParams(...)" with no error yields a typed nil
	}
	var rpcErr *Error
	if err != nil && (!errors.As(err, &rpcErr) || rpcErr == nil) {
		d.internal(ctx, req, err)
		rpcErr = errInternal
	}
	if req.IsNotification() {
		return nil
	}
	// Encoding runs the result's MarshalJSON, which may panic too.
	var reply []byte
	func() {
		defer d.recoverInto(ctx, req, &err)
		reply = d.reply(ctx, req, result, rpcErr)
	}()
	if reply == nil {
		reply = d.reply(ctx, req, nil, errInternal)
	}
	return reply
}

// result runs the call's finish, if it has one, with panics recovered.
func (c *admitted) result(ctx context.Context, d *Dispatcher) (result any, err error) {
	if c.err != nil || c.finish == nil {
		return nil, c.err
	}
	defer d.recoverInto(ctx, c.req, &err)
	return c.finish()
}

// recoverInto turns a handler's panic into an internal error, reported
// with its stack.
func (d *Dispatcher) recoverInto(ctx context.Context, req *Request, err *error) {
	if p := recover(); p != nil {
		d.internal(ctx, req, fmt.Errorf("jsonrpc: method %q panicked: %v\n%s", req.Method, p, debug.Stack()))
		*err = errInternal
	}
}

// Two shapes because "result" must be present, even as null, exactly when
// "error" is absent.
type success struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"` // nil encodes as null
	Result  any             `json:"result"`
}

type failure struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   *Error          `json:"error"`
}

func (d *Dispatcher) reply(ctx context.Context, req *Request, result any, rpcErr *Error) []byte {
	var v any = success{"2.0", req.ID, result}
	if rpcErr != nil {
		v = failure{"2.0", req.ID, rpcErr}
	}
	b, err := encode(v)
	if err != nil {
		d.internal(ctx, req, fmt.Errorf("jsonrpc: cannot encode the response to %q: %w", req.Method, err))
		b, _ = encode(failure{"2.0", req.ID, errInternal}) // cannot fail: the id was valid JSON
	}
	if d.MaxReplyBytes > 0 && len(b) > d.MaxReplyBytes {
		return d.tooLarge(req, len(b))
	}
	return b
}

func (d *Dispatcher) tooLarge(req *Request, size int) []byte {
	e := errInternal
	if d.ReplyTooLarge != nil {
		e = d.ReplyTooLarge(size)
	}
	b, _ := encode(failure{"2.0", req.ID, e})
	return b
}

// encode is json.Marshal without HTML escaping: replies are not embedded in
// HTML, and program output full of \u003c is hard to read.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

func (d *Dispatcher) internal(ctx context.Context, req *Request, err error) {
	if d.OnInternalError != nil {
		d.OnInternalError(ctx, req, err)
		return
	}
	log.Printf("jsonrpc: %s: %v", req.Method, err)
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}
