package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// DecodeParams decodes params into v, a non-nil pointer. Missing or null
// params decode as {} (v is left as it is). Unknown fields are ignored,
// because clients send extra ones. Any mismatch is a -32602 error naming the
// field and the expected JSON type, such as
//
//	invalid params: field "memoryLimitMB" must be a number
//
// Positional (array) params fit only a slice or array target; otherwise the
// error is "invalid params: params must be an object".
func DecodeParams(params json.RawMessage, v any) *Error {
	if p := bytes.TrimSpace(params); len(p) == 0 || string(p) == "null" {
		return nil
	}
	err := json.Unmarshal(params, v)
	var typeErr *json.UnmarshalTypeError
	var misuse *json.InvalidUnmarshalError
	var rpcErr *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &misuse):
		panic("jsonrpc: DecodeParams: " + err.Error()) // a programming error, not the client's
	case errors.As(err, &rpcErr) && rpcErr != nil:
		return rpcErr // an UnmarshalJSON method that speaks JSON-RPC
	case !errors.As(err, &typeErr):
		return InvalidParams("%v", err) // bad syntax, or an UnmarshalJSON method's own words
	}

	declared, path := resolve(reflect.TypeOf(v), typeErr.Field)
	name := "params"
	if path != "" {
		name = fmt.Sprintf("field %q", path)
	}
	article, noun := jsonType(typeErr.Type, strings.HasPrefix(typeErr.Value, "number"))
	// encoding/json names the field, but the mismatch may be in one of its
	// elements: {"args": ["a", 1]} reports field "args" and type string.
	if k := kind(declared); (k == reflect.Slice || k == reflect.Array || k == reflect.Map) && declared != deref(typeErr.Type) {
		return InvalidParams("%s must contain only %ss", name, noun)
	}
	return InvalidParams("%s must be %s %s", name, article, noun)
}

// jsonType names the JSON type that a Go type expects. gotNumber says the
// client did send a number, so an integer type rejected its fraction, sign or
// size.
func jsonType(t reflect.Type, gotNumber bool) (article, noun string) {
	switch deref(t).Kind() {
	case reflect.String:
		return "a", "string"
	case reflect.Bool:
		return "a", "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if gotNumber {
			return "an", "integer"
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if gotNumber {
			return "a", "non-negative integer"
		}
	case reflect.Slice, reflect.Array:
		return "an", "array"
	case reflect.Map, reflect.Struct:
		return "an", "object"
	}
	return "a", "number"
}

// resolve follows a field path as encoding/json reports it (struct fields
// only, through pointers, slices and maps). It returns the declared type
// there, nil if the path cannot be followed, and the path as the client
// knows it: without the Go names of embedded structs.
func resolve(t reflect.Type, path string) (reflect.Type, string) {
	t = deref(t)
	if path == "" {
		return t, ""
	}
	var names []string
	for name := range strings.SplitSeq(path, ".") {
		for k := kind(t); k == reflect.Slice || k == reflect.Array || k == reflect.Map; k = kind(t) {
			t = deref(t.Elem())
		}
		if kind(t) != reflect.Struct {
			return nil, path
		}
		f, tagged, ok := jsonField(t, name)
		if !ok {
			return nil, path
		}
		if !f.Anonymous || tagged {
			names = append(names, name)
		}
		t = deref(f.Type)
	}
	return t, strings.Join(names, ".")
}

// jsonField finds the field encoding/json decodes name into, or the embedded
// struct of that Go name; tagged says the json tag names it.
func jsonField(t reflect.Type, name string) (f reflect.StructField, tagged, ok bool) {
	for _, f := range reflect.VisibleFields(t) {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		key := tag
		if key == "" {
			key = f.Name
		}
		if (f.IsExported() || f.Anonymous) && tag != "-" && strings.EqualFold(key, name) {
			return f, tag != "", true
		}
	}
	return reflect.StructField{}, false, false
}

func kind(t reflect.Type) reflect.Kind {
	if t == nil {
		return reflect.Invalid
	}
	return t.Kind()
}

func deref(t reflect.Type) reflect.Type {
	for kind(t) == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
