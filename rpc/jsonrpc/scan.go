package jsonrpc

import (
	"bytes"
	"encoding/json"
)

// Walking the top level of a frame that json.Valid has accepted. Decoding a
// request into a map, or a batch into a slice, costs memory and time per
// member or element, a number the client chooses: an 11 MB request of a
// million members took 233 MB and 4.7 s to decode into a map, a 16 MB batch
// of eight million elements 1 GB and 5 s to refuse. These walk the bytes once
// and allocate nothing; nesting costs a counter, not a stack.

// members calls fn with each member of obj, a valid JSON object: the key as
// its name (see memberName) and the raw value.
func members(obj []byte, fn func(name, value []byte)) {
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] != '}' {
		keyEnd := stringEnd(obj, i)
		start := skipSpace(obj, skipSpace(obj, keyEnd)+1) // past the colon
		end := valueEnd(obj, start)
		fn(memberName(obj[i:keyEnd]), obj[start:end])
		i = skipSpace(obj, end)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
}

// elements calls fn with each element of arr, a valid JSON array.
func elements(arr []byte, fn func(value []byte)) {
	i := skipSpace(arr, 1)
	for i < len(arr) && arr[i] != ']' {
		end := valueEnd(arr, i)
		fn(arr[i:end])
		i = skipSpace(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = skipSpace(arr, i+1)
		}
	}
}

// memberName decodes a quoted key. Keys longer than any member name a
// request has, even written with escapes, are not decoded: they are "".
func memberName(key []byte) []byte {
	inner := key[1 : len(key)-1]
	switch {
	case len(inner) > 64:
		return nil
	case bytes.IndexByte(inner, '\\') < 0:
		return inner
	}
	var name string
	json.Unmarshal(key, &name) // valid: json.Valid accepted the frame
	return []byte(name)
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
		i++ // a number, true, false or null
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
