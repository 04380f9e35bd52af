package jsonrpc

import "fmt"

// Error codes defined by JSON-RPC 2.0. Servers define their own in
// -32000..-32099.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// Error is a JSON-RPC error object. A handler that returns one (possibly
// wrapped) has it sent to the client as is, so Data must be safe to show.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("jsonrpc %d: %s", e.Code, e.Message) }

// NewError returns an error object; data may be nil.
func NewError(code int, message string, data any) *Error {
	return &Error{Code: code, Message: message, Data: data}
}

// InvalidParams returns a -32602 error whose message is "invalid params: "
// followed by the formatted text.
func InvalidParams(format string, args ...any) *Error {
	return NewError(CodeInvalidParams, "invalid params: "+fmt.Sprintf(format, args...), nil)
}

func invalidRequest(why string) *Error { return NewError(CodeInvalidRequest, "Invalid Request", why) }

var (
	errParse = &Error{Code: CodeParseError, Message: "Parse error"}
	// errInternal is what clients see for any failure that is not an *Error.
	errInternal = &Error{Code: CodeInternalError, Message: "Internal error"}
)
