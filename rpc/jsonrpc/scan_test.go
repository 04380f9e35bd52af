package jsonrpc

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"unicode/utf8"
)

// The scanners see what encoding/json sees: the same members (the last of
// equal names wins, as in a map) and the same elements, byte for byte.
func FuzzScan(f *testing.F) {
	for _, seed := range []string{
		`{}`, `[]`, ` { "a" : 1 , "b":[1,{"c":"]}"}] } `, `{"a":1,"a":2}`, `{"\u0069d":1,"\"":"\\"}`,
		`[1,"x",{"y":[null,true,false]},-1.5e3,[]]`, `{"jsonrpc":"2.0","method":"m","params":{"k":[[[]]]},"id":"i"}`,
		`{"` + string(bytes.Repeat([]byte("k"), 80)) + `":0}`, `[[[[[[]]]]]]`, "{\"\\u00e9\":\"\u00e9\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = bytes.TrimLeft(b, " \t\r\n")
		if !json.Valid(b) || !utf8.Valid(b) || len(b) == 0 { // Handle refuses the others first
			return
		}
		switch b[0] {
		case '{':
			var want map[string]json.RawMessage
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			got := map[string]json.RawMessage{}
			members(b, func(name, value []byte) { got[string(name)] = value })
			for name, value := range want {
				// Names longer than 64 bytes as written are reported as "".
				if short := len(name) <= 10; short && name != "" && !bytes.Equal(got[name], value) {
					t.Fatalf("%s: member %q is %s, encoding/json says %s", b, name, got[name], value)
				}
			}
			for name := range got {
				if _, ok := want[name]; !ok && name != "" {
					t.Fatalf("%s: member %q found, encoding/json has none", b, name)
				}
			}
		case '[':
			var want []json.RawMessage
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			var got []json.RawMessage
			elements(b, func(value []byte) { got = append(got, value) })
			if !slices.EqualFunc(got, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
				t.Fatalf("%s: elements %q, encoding/json says %q", b, got, want)
			}
		}
	})
}
