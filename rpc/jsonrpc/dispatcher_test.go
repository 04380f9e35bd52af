package jsonrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// reported collects what the dispatcher hides from clients.
type reported struct {
	mu   sync.Mutex
	errs []error
}

func (r *reported) hook(_ context.Context, _ *jsonrpc.Request, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func newDispatcher(t *testing.T, methods map[string]jsonrpc.HandlerFunc) (*jsonrpc.Dispatcher, *reported) {
	t.Helper()
	r := &reported{}
	d := &jsonrpc.Dispatcher{OnInternalError: r.hook}
	for name, f := range methods {
		d.Register(name, f)
	}
	return d, r
}

func handle(d *jsonrpc.Dispatcher, frame string) []byte {
	return d.Handle(context.Background(), []byte(frame))
}

// response is a reply decoded with its members kept raw.
func response(t *testing.T, reply []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(reply, &m); err != nil {
		t.Fatalf("reply %q is not a JSON object: %v", reply, err)
	}
	return m
}

func echo(_ context.Context, req *jsonrpc.Request) (any, error) { return req.Params, nil }

func TestIDsAreEchoedVerbatim(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{"echo": echo})
	for _, id := range []string{`1`, `0`, `-3`, `1.5`, `1e3`, `-0.25E+2`, `12345678901234567890123`,
		`"abc"`, `""`, `"\u00e9\n"`, `"é"`, `null`} {
		for _, frame := range []string{
			`{"jsonrpc":"2.0","method":"echo","params":[],"id":` + id + `}`,
			`{"jsonrpc":"2.0","method":"missing","id":` + id + `}`,
			`{"jsonrpc":"1.0","method":"echo","id":` + id + `}`, // invalid, but the id was readable
		} {
			if got := response(t, handle(d, frame))["id"]; string(got) != id {
				t.Errorf("%s: id %s, want %s", frame, got, id)
			}
		}
	}
}

func TestInvalidRequests(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{"echo": echo})
	for _, tc := range []struct{ frame, id, data string }{
		{`"hello"`, `null`, `"request must be an object"`},
		{`null`, `null`, `"request must be an object"`},
		{`{"method":"echo","id":1}`, `1`, `"\"jsonrpc\" must be \"2.0\""`},
		{`{"jsonrpc":"2.0 ","method":"echo","id":1}`, `1`, `"\"jsonrpc\" must be \"2.0\""`},
		{`{"jsonrpc":2.0,"method":"echo","id":1}`, `1`, `"\"jsonrpc\" must be \"2.0\""`},
		{`{"jsonrpc":null,"method":"echo","id":1}`, `1`, `"\"jsonrpc\" must be \"2.0\""`},
		{`{"jsonrpc":"2.0","id":"a"}`, `"a"`, `"\"method\" must be a string"`},
		{`{"jsonrpc":"2.0","method":null,"id":"a"}`, `"a"`, `"\"method\" must be a string"`},
		{`{"jsonrpc":"2.0","method":["echo"],"id":"a"}`, `"a"`, `"\"method\" must be a string"`},
		{`{"jsonrpc":"2.0","method":"echo","params":null,"id":2}`, `2`, `"\"params\" must be an object or an array"`},
		{`{"jsonrpc":"2.0","method":"echo","params":"x","id":2}`, `2`, `"\"params\" must be an object or an array"`},
		{`{"jsonrpc":"2.0","method":"echo","params":3}`, `null`, `"\"params\" must be an object or an array"`},
		{`{"jsonrpc":"2.0","method":"echo","id":{"a":1}}`, `null`, `"\"id\" must be a string, a number or null"`},
		{`{"jsonrpc":"2.0","method":"echo","id":[1]}`, `null`, `"\"id\" must be a string, a number or null"`},
		{`{"jsonrpc":"2.0","method":"echo","id":true}`, `null`, `"\"id\" must be a string, a number or null"`},
		{`{"JSONRPC":"2.0","Method":"echo","ID":1}`, `null`, `"\"jsonrpc\" must be \"2.0\""`},
	} {
		m := response(t, handle(d, tc.frame))
		var e jsonrpc.Error
		if err := json.Unmarshal(m["error"], &e); err != nil || e.Code != jsonrpc.CodeInvalidRequest ||
			e.Message != "Invalid Request" {
			t.Errorf("%s: error %s, want Invalid Request", tc.frame, m["error"])
		}
		if data, _ := json.Marshal(e.Data); string(data) != tc.data {
			t.Errorf("%s: data %s, want %s", tc.frame, data, tc.data)
		}
		if string(m["id"]) != tc.id {
			t.Errorf("%s: id %s, want %s", tc.frame, m["id"], tc.id)
		}
	}
}

func TestParseErrors(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{"echo": echo})
	for _, frame := range []string{``, ` `, `{`, `{"jsonrpc":"2.0","method":"echo","id":1}x`, `[1,]`, `01`,
		"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":\"\xff\"}", strings.Repeat("[", 20000)} {
		assertReply(t, handle(d, frame), `{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}`)
	}
}

func TestResponseShape(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{
		"nil":  func(context.Context, *jsonrpc.Request) (any, error) { return nil, nil },
		"html": func(context.Context, *jsonrpc.Request) (any, error) { return "<a&b>", nil },
		"fail": func(context.Context, *jsonrpc.Request) (any, error) {
			return "ignored", jsonrpc.NewError(-32001, "Session not found", nil)
		},
	})
	for frame, want := range map[string]string{
		`{"jsonrpc":"2.0","method":"nil","id":1}`:                          `{"jsonrpc":"2.0","id":1,"result":null}`,
		`{"jsonrpc":"2.0","method":"html","id":1}`:                         `{"jsonrpc":"2.0","id":1,"result":"<a&b>"}`,
		`{"jsonrpc":"2.0","method":"fail","id":1}`:                         `{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"Session not found"}}`,
		`{"jsonrpc":"2.0","method":"nil","id":1,"trace":{"x":1},"Id":"x"}`: `{"jsonrpc":"2.0","id":1,"result":null}`,
		` [ {"jsonrpc":"2.0","method":"nil","id":1} ] `:                    `[{"jsonrpc":"2.0","id":1,"result":null}]`,
	} {
		if got := handle(d, frame); string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", frame, got, want)
		}
	}
}

func TestHandlerErrors(t *testing.T) {
	secret := errors.New("open /var/lib/codebeaker/x: permission denied")
	d, r := newDispatcher(t, map[string]jsonrpc.HandlerFunc{
		"plain": func(context.Context, *jsonrpc.Request) (any, error) { return nil, secret },
		"wrapped": func(context.Context, *jsonrpc.Request) (any, error) {
			return nil, fmt.Errorf("create: %w", jsonrpc.InvalidParams("no %s", "language"))
		},
		"typedNil": func(context.Context, *jsonrpc.Request) (any, error) {
			var e *jsonrpc.Error
			return "ok", e
		},
		"unencodable": func(context.Context, *jsonrpc.Request) (any, error) { return make(chan int), nil },
		"badData": func(context.Context, *jsonrpc.Request) (any, error) {
			return nil, jsonrpc.NewError(-32000, "x", func() {})
		},
		"panics": func(context.Context, *jsonrpc.Request) (any, error) { panic("boom in /home/builder/src/x.go") },
	})
	internal := `{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}}`
	for _, tc := range []struct{ method, want, reported string }{
		{"plain", internal, secret.Error()},
		{"wrapped", `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params: no language"}}`, ""},
		{"typedNil", `{"jsonrpc":"2.0","id":1,"result":"ok"}`, ""},
		{"unencodable", internal, "cannot encode the response"},
		{"badData", internal, "cannot encode the response"},
		{"panics", internal, "boom in /home/builder/src/x.go"},
	} {
		r.errs = nil
		got := handle(d, `{"jsonrpc":"2.0","method":"`+tc.method+`","id":1}`)
		if string(got) != tc.want {
			t.Errorf("%s: reply %s, want %s", tc.method, got, tc.want)
		}
		switch {
		case tc.reported == "" && len(r.errs) > 0:
			t.Errorf("%s: reported %v, want nothing", tc.method, r.errs)
		case tc.reported != "" && (len(r.errs) != 1 || !strings.Contains(r.errs[0].Error(), tc.reported)):
			t.Errorf("%s: reported %v, want one error containing %q", tc.method, r.errs, tc.reported)
		}
	}
	// The stack of a panic goes to the hook, and a failing notification is
	// reported although nothing is sent.
	r.errs = nil
	if got := handle(d, `{"jsonrpc":"2.0","method":"panics"}`); got != nil {
		t.Errorf("notification reply %s, want none", got)
	}
	if len(r.errs) != 1 || !strings.Contains(r.errs[0].Error(), "goroutine") {
		t.Errorf("reported %v, want the panic with its stack", r.errs)
	}
}

// TestBatchRunsConcurrently fails when batch elements run one after another:
// each call waits until all three have started.
func TestBatchRunsConcurrently(t *testing.T) {
	var started sync.WaitGroup
	started.Add(3)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{
		"meet": func(_ context.Context, req *jsonrpc.Request) (any, error) {
			started.Done()
			select {
			case <-all:
				return string(req.ID), nil
			case <-time.After(5 * time.Second):
				return nil, jsonrpc.NewError(-32000, "the other calls never started", nil)
			}
		},
	})
	reply := make(chan []byte, 1)
	go func() {
		reply <- handle(d, `[{"jsonrpc":"2.0","method":"meet","id":1},
			{"jsonrpc":"2.0","method":"meet","id":2},{"jsonrpc":"2.0","method":"meet","id":3}]`)
	}()
	select {
	case got := <-reply:
		assertReply(t, got, `[{"jsonrpc":"2.0","id":1,"result":"1"},{"jsonrpc":"2.0","id":2,"result":"2"},
			{"jsonrpc":"2.0","id":3,"result":"3"}]`)
	case <-time.After(10 * time.Second):
		t.Fatal("batch did not complete")
	}
}

func TestBatchConcurrencyIsBoundedAndOrderKept(t *testing.T) {
	var running, peak atomic.Int32
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{
		"work": func(_ context.Context, req *jsonrpc.Request) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			var ms int
			_ = json.Unmarshal(req.ID, &ms)
			time.Sleep(time.Duration(ms) * time.Millisecond) // later requests finish first
			return ms, nil
		},
	})
	d.BatchConcurrency = 3
	var reqs, want []string
	for i := 10; i > 0; i-- {
		reqs = append(reqs, fmt.Sprintf(`{"jsonrpc":"2.0","method":"work","id":%d}`, i*5))
		want = append(want, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":%d}`, i*5, i*5))
	}
	got := handle(d, "["+strings.Join(reqs, ",")+"]")
	if string(got) != "["+strings.Join(want, ",")+"]" {
		t.Errorf("reply %s, want responses in request order", got)
	}
	if p := peak.Load(); p > 3 || p < 2 { // 3 in practice; 2 leaves room for a loaded machine
		t.Errorf("peak concurrency %d, want 3", p)
	}
}

func TestBatchLimit(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{"echo": echo})
	batch := func(n int) string {
		return "[" + strings.Join(slices.Repeat([]string{`{"jsonrpc":"2.0","method":"echo","id":1}`}, n), ",") + "]"
	}
	var replies []json.RawMessage
	if err := json.Unmarshal(handle(d, batch(100)), &replies); err != nil || len(replies) != 100 {
		t.Errorf("batch of 100 (the default limit): %d replies, %v", len(replies), err)
	}
	assertReply(t, handle(d, batch(101)), `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request",
		"data":"batch of 101 requests exceeds the limit of 100"}}`)
	d.MaxBatch = 2
	assertReply(t, handle(d, batch(3)), `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request",
		"data":"batch of 3 requests exceeds the limit of 2"}}`)
}

func TestBatchMixesRepliesAndNotifications(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{"echo": echo})
	assertReply(t, handle(d, `[{"jsonrpc":"2.0","method":"echo"},[],{"jsonrpc":"2.0","method":"nope"},
		{"jsonrpc":"2.0","method":"echo","params":{"a":1},"id":"x"}]`),
		`[{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}},
		  {"jsonrpc":"2.0","id":"x","result":{"a":1}}]`)
}

func TestRegisterRefuses(t *testing.T) {
	for _, name := range []string{"", "rpc.discover", "echo"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", name)
				}
			}()
			d := &jsonrpc.Dispatcher{}
			d.Register("echo", jsonrpc.HandlerFunc(echo))
			d.Register(name, jsonrpc.HandlerFunc(echo))
		}()
	}
}

func TestErrorText(t *testing.T) {
	if got := jsonrpc.InvalidParams("field %q is required", "language").Error(); got != `jsonrpc -32602: invalid params: field "language" is required` {
		t.Errorf("Error() = %s", got)
	}
}

type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("marshal boom") }

func TestPanicWhileEncoding(t *testing.T) {
	d, r := newDispatcher(t, map[string]jsonrpc.HandlerFunc{
		"result": func(context.Context, *jsonrpc.Request) (any, error) { return panicky{}, nil },
		"data": func(context.Context, *jsonrpc.Request) (any, error) {
			return nil, jsonrpc.NewError(-32000, "x", panicky{})
		},
	})
	got := handle(d, `[{"jsonrpc":"2.0","method":"result","id":1},{"jsonrpc":"2.0","method":"data","id":2}]`)
	assertReply(t, got, `[{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}},
		{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"Internal error"}}]`)
	if len(r.errs) != 2 || !strings.Contains(r.errs[0].Error(), "marshal boom") {
		t.Errorf("reported %v, want both panics", r.errs)
	}
}

func TestMaxReplyBytes(t *testing.T) {
	// One at a time, batch elements finish in order.
	d := &jsonrpc.Dispatcher{MaxReplyBytes: 100, BatchConcurrency: 1, ReplyTooLarge: func(size int) *jsonrpc.Error {
		return jsonrpc.NewError(-32005, "reply too large", size)
	}}
	d.Register("echo", jsonrpc.HandlerFunc(func(_ context.Context, req *jsonrpc.Request) (any, error) {
		var n []int
		json.Unmarshal(req.Params, &n)
		return strings.Repeat("x", n[0]), nil
	}))
	ctx := context.Background()
	if got := string(d.Handle(ctx, []byte(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[10]}`))); !strings.Contains(got, `"result":"xxxxxxxxxx"`) {
		t.Errorf("small reply: %s", got)
	}
	if got := string(d.Handle(ctx, []byte(`{"jsonrpc":"2.0","id":2,"method":"echo","params":[200]}`))); !strings.Contains(got, `"code":-32005`) || !strings.Contains(got, `"id":2`) {
		t.Errorf("large reply: %s", got)
	}
	// In a batch, the elements that would take the reply over the cap are
	// refused; the ones that finished before them are kept.
	got := d.Handle(ctx, []byte(`[{"jsonrpc":"2.0","id":1,"method":"echo","params":[30]},{"jsonrpc":"2.0","id":2,"method":"echo","params":[30]},{"jsonrpc":"2.0","id":3,"method":"echo","params":[1]}]`))
	var replies []map[string]any
	if err := json.Unmarshal(got, &replies); err != nil || len(replies) != 3 {
		t.Fatalf("batch reply %s", got)
	}
	if replies[0]["result"] == nil || replies[1]["error"] == nil {
		t.Errorf("batch over the cap: %s", got)
	}
	if len(got) > 100+len(`{"jsonrpc":"2.0","id":2,"error":{"code":-32005,"message":"reply too large","data":70}}`)*2 {
		t.Errorf("batch reply of %d bytes", len(got))
	}
}

// A batch's replies are measured as they are made: the elements past the
// cap are not all held until the batch ends.
func TestBatchRepliesAreMeasuredAsTheyAreMade(t *testing.T) {
	const elements, replyBytes, maxReply = 40, 1 << 20, 4 << 20
	var (
		peak uint64
		base uint64
	)
	d := &jsonrpc.Dispatcher{MaxReplyBytes: maxReply, BatchConcurrency: 1}
	d.Register("big", jsonrpc.HandlerFunc(func(context.Context, *jsonrpc.Request) (any, error) {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
		return strings.Repeat("x", replyBytes), nil
	}))
	var batch []string
	for i := range elements {
		batch = append(batch, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"big"}`, i))
	}
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	base = m.HeapAlloc
	reply := d.Handle(context.Background(), []byte("["+strings.Join(batch, ",")+"]"))
	grew := int64(peak) - int64(base)
	t.Logf("heap grew by %.1f MiB while the batch ran (%d replies of %d MiB, cap %d MiB)", float64(grew)/(1<<20), elements, replyBytes>>20, maxReply>>20)
	if grew > 2*maxReply {
		t.Errorf("heap grew by %.1f MiB while a batch with a %d MiB reply cap ran", float64(grew)/(1<<20), maxReply>>20)
	}
	if len(reply) > maxReply+elements*100 {
		t.Errorf("batch reply of %d bytes", len(reply))
	}
}

// queue is an Admitter: admission appends to an order, finishing waits for
// a release.
type queue struct {
	mu      sync.Mutex
	order   []string
	release chan struct{}
}

func (q *queue) Admit(_ context.Context, req *jsonrpc.Request) (func() (any, error), error) {
	var p []string
	if err := jsonrpc.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	if p[0] == "panic" {
		panic("admission failed")
	}
	q.mu.Lock()
	q.order = append(q.order, p[0])
	q.mu.Unlock()
	return func() (any, error) { <-q.release; return p[0], nil }, nil
}

func (q *queue) ServeRPC(context.Context, *jsonrpc.Request) (any, error) {
	panic("ServeRPC is not called on an Admitter")
}

// Admit admits every call of a frame before it returns, in the frame's
// order, and leaves the rest to the function it returns; a panic in an
// admission is an internal error of that call alone.
func TestAdmitKeepsOrderAndDefersTheRest(t *testing.T) {
	q := &queue{release: make(chan struct{})}
	var hidden reported
	d := &jsonrpc.Dispatcher{OnInternalError: hidden.hook}
	d.Register("q", q)
	ctx := context.Background()
	first := d.Admit(ctx, []byte(`{"jsonrpc":"2.0","id":1,"method":"q","params":["a"]}`))
	batch := d.Admit(ctx, []byte(`[{"jsonrpc":"2.0","id":2,"method":"q","params":["b"]},{"jsonrpc":"2.0","id":3,"method":"q","params":["panic"]},{"jsonrpc":"2.0","id":4,"method":"q","params":["c"]}]`))
	if got := strings.Join(q.order, ""); got != "abc" {
		t.Fatalf("admitted %q before any frame was finished; want abc", got)
	}
	close(q.release)
	var replies = make(chan string, 2)
	go func() { replies <- string(batch()) }()
	go func() { replies <- string(first()) }()
	got := []string{<-replies, <-replies}
	slices.Sort(got)
	want := []string{
		`[{"jsonrpc":"2.0","id":2,"result":"b"},{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"Internal error"}},{"jsonrpc":"2.0","id":4,"result":"c"}]`,
		`{"jsonrpc":"2.0","id":1,"result":"a"}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("replies\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(hidden.errs) != 1 || !strings.Contains(hidden.errs[0].Error(), "admission failed") {
		t.Errorf("reported %v; want the admission's panic", hidden.errs)
	}
}
