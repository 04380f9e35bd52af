package jsonrpc_test

import (
	"context"
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// What a frame costs to decode does not grow with the number of members or
// elements the client packs into it: a batch over the limit is refused, and
// unknown members are skipped, without a copy or an allocation for each.
func TestFrameCostDoesNotGrowWithWidth(t *testing.T) {
	d, _ := newDispatcher(t, map[string]jsonrpc.HandlerFunc{"echo": echo})
	var wide strings.Builder
	wide.WriteString(`{"jsonrpc":"2.0","id":1,"method":"echo","params":[]`)
	for i := range 1_000_000 {
		wide.WriteString(`,"k` + strconv.Itoa(i) + `":0`)
	}
	wide.WriteString("}")
	for _, tc := range []struct{ name, frame, want string }{
		// 16 MB: eight million one-byte elements.
		{"batch", "[" + strings.Repeat("0,", 8e6-1) + "0]", `"batch of 8000000 requests exceeds the limit of 100"`},
		{"batch of deep elements", "[" + strings.Repeat(strings.Repeat("[", 5000)+strings.Repeat("]", 5000)+",", 1000) + "0]",
			`"batch of 1001 requests exceeds the limit of 100"`},
		{"request of a million members", wide.String(), ""},
	} {
		frame := []byte(tc.frame)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		reply := d.Handle(context.Background(), frame)
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		allocated := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d bytes in %s, %d KB allocated", tc.name, len(tc.frame), took, allocated>>10)
		m := response(t, reply)
		if tc.want != "" {
			var e struct{ Data json.RawMessage }
			json.Unmarshal(m["error"], &e)
			if string(e.Data) != tc.want {
				t.Errorf("%s: reply %s, want data %s", tc.name, reply, tc.want)
			}
		} else if string(m["result"]) != "[]" {
			t.Errorf("%s: reply %.200s", tc.name, reply)
		}
		if allocated > 4<<20 {
			t.Errorf("%s: decoding %d bytes allocated %d MB", tc.name, len(tc.frame), allocated>>20)
		}
	}
}
