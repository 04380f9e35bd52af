package rpc_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

// Each runtime says what a session of its own may ask for. The replies
// are pinned whole, in the order the problems are found when a request
// has several: what a language's runtime does not take at all first, then
// each permission field in turn, its form before its entries.
func TestSessionSettingsErrors(t *testing.T) {
	ts := newTestServer(t, withDeno(t))
	c := ts.dial()
	many := make([]string, 65)
	for i := range many {
		many[i] = fmt.Sprintf("/tmp/%d", i)
	}
	cases := []struct {
		name   string
		params map[string]any
		want   string
	}{
		{"image for deno", map[string]any{"language": "deno", "dockerImage": "alpine:latest"},
			`"dockerImage" applies only to Docker languages, not deno`},
		{"image for deno, bad permissions too", map[string]any{"language": "deno", "dockerImage": "alpine:latest", "permissions": map[string]any{"allowRead": 5}},
			`"dockerImage" applies only to Docker languages, not deno`},
		{"permissions for python", map[string]any{"language": "python", "permissions": map[string]any{"allowNet": true}},
			`"permissions" applies only to deno sessions, not python`},
		{"no permissions for python", map[string]any{"language": "python", "permissions": map[string]any{}},
			`"permissions" applies only to deno sessions, not python`},
		{"bad permissions for python", map[string]any{"language": "py", "permissions": map[string]any{"allowRead": 5}},
			`"permissions" applies only to deno sessions, not python`},
		{"grant of wrong form", map[string]any{"language": "deno", "permissions": map[string]any{"allowEnv": "HOME"}},
			`permissions.allowEnv must be true, false or a list of strings`},
		{"too many entries", map[string]any{"language": "deno", "permissions": map[string]any{"allowRead": many}},
			`permissions.allowRead lists 65 entries; at most 64`},
		{"comma", map[string]any{"language": "deno", "permissions": map[string]any{"allowNet": []string{"a.com,b.com"}}},
			`permissions.allowNet has an empty or over-long entry, or one with a comma (Deno's list separator)`},
		{"empty entry", map[string]any{"language": "deno", "permissions": map[string]any{"allowWrite": []string{""}}},
			`permissions.allowWrite has an empty or over-long entry, or one with a comma (Deno's list separator)`},
		{"over-long entry", map[string]any{"language": "deno", "permissions": map[string]any{"allowRead": []string{"/" + strings.Repeat("a", 4096)}}},
			`permissions.allowRead has an empty or over-long entry, or one with a comma (Deno's list separator)`},
		{"NUL", map[string]any{"language": "deno", "permissions": map[string]any{"allowEnv": []string{"A\x00B"}}},
			`permissions.allowEnv has an empty or over-long entry, or one with a comma (Deno's list separator)`},
		{"comma, then wrong form", map[string]any{"language": "deno", "permissions": map[string]any{"allowRead": []string{"a,b"}, "allowWrite": 5}},
			`permissions.allowRead has an empty or over-long entry, or one with a comma (Deno's list separator)`},
		{"wrong form, then comma", map[string]any{"language": "deno", "permissions": map[string]any{"allowRead": 5, "allowWrite": []string{"a,b"}}},
			`permissions.allowRead must be true, false or a list of strings`},
		{"memory before permissions", map[string]any{"language": "python", "memoryLimitMB": 1, "permissions": map[string]any{}},
			`"memoryLimitMB" must be between 16 and 8192`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := c.rpcErr("session.create", tc.params, jsonrpc.CodeInvalidParams)
			if want := "invalid params: " + tc.want; e.Message != want || len(e.Data) != 0 {
				t.Errorf("error %s; want message %q and no data", e, want)
			}
		})
	}
	// Nothing was made, nor logged, for any of them.
	if seq, err := ts.svc.Log().LastSeq(); err != nil || seq != 0 {
		t.Errorf("the log holds %d events after refused creates (%v)", seq, err)
	}

	// A setting the runtime takes but cannot serve is the runtime's
	// unavailability: what failed in the message, why in the data.
	e := c.rpcErr("session.create", map[string]any{"language": "python", "dockerImage": "codebeaker-nosuch:latest"}, rpc.CodeRuntimeUnavailable)
	const why = `"image \"codebeaker-nosuch:latest\" is not on this host (build it with scripts/build-runtime-images.sh, or docker build/load it)"`
	if e.Message != "image not found" || string(e.Data) != why {
		t.Errorf("error %s; want message %q and data %s", e, "image not found", why)
	}
}
