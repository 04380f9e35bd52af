package jsonrpc

import (
	"encoding/json"
	"maps"
	"testing"
)

// members reads an object as encoding/json does, without copying values.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a" : [1, {"b": "}]\\"{"}] , "a":null, "c":-1.5e3}`,
		`{"jsonrpc":"2.0","method":"m","params":{"x":"\u00e9\"\\"},"id":"7"}`, `{"\u0061":true,"b":false}`,
		"{\n\t\"p\"\r:\n[ ]\n}", `[1]`, `"s"`, `{"a":{"b":{"c":[[],{}]}},"d":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		var want map[string]json.RawMessage
		wantOK := first(raw) == '{' && json.Unmarshal(raw, &want) == nil
		got, ok := members(raw)
		if ok != wantOK || !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
			t.Fatalf("members(%q) = %q %v, want %q %v", raw, got, ok, want, wantOK)
		}
	})
}
