package rpc

import (
	"errors"
	"strings"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
	"github.com/codebeaker/codebeaker/sandbox"
)

// Server-defined JSON-RPC error codes. This table and toRPC are the only
// place that knows them.
const (
	CodeSessionNotFound     = -32001
	CodeSessionClosed       = -32002
	CodeRuntimeUnavailable  = -32003
	CodeCapacityExhausted   = -32004
	CodeMessageTooLarge     = -32005
	CodeServiceShuttingDown = -32006
	CodeProcessEnded        = -32008
)

// Errors of the session service, in the client's terms.
var (
	ErrSessionNotFound = errors.New("session not found")
	ErrSessionClosed   = errors.New("session is closed")
	ErrCapacity        = errors.New("capacity exhausted")
	ErrShuttingDown    = errors.New("service is shutting down")
)

// invalidParams is a request the client must change; its text is for the
// client. A runtime's *sandbox.SpecError is one too (-32602).
type invalidParams struct{ msg string }

func (e *invalidParams) Error() string { return e.msg }

var codes = []struct {
	err  error
	code int
}{
	{ErrSessionNotFound, CodeSessionNotFound},
	{ErrSessionClosed, CodeSessionClosed},
	{ErrCapacity, CodeCapacityExhausted},
	{ErrShuttingDown, CodeServiceShuttingDown},
	{ErrProcessNotFound, CodeSessionNotFound},
	{sandbox.ErrNoProcess, CodeSessionNotFound},
	{sandbox.ErrTooManyProcesses, CodeCapacityExhausted},
	{sandbox.ErrProcessEnded, CodeProcessEnded},
	{sandbox.ErrUnavailable, CodeRuntimeUnavailable},
	{sandbox.ErrImageNotFound, CodeRuntimeUnavailable},
	{sandbox.ErrImageNotAllowed, CodeRuntimeUnavailable},
}

// toRPC maps a service error to the JSON-RPC error the client sees. Errors
// not in the table stay as they are and become -32603, without their text.
func toRPC(err error) error {
	var rpcErr *jsonrpc.Error
	if err == nil || errors.As(err, &rpcErr) {
		return err
	}
	var bad *invalidParams
	var spec *sandbox.SpecError
	switch {
	case errors.As(err, &bad):
		return jsonrpc.InvalidParams("%s", bad.msg)
	case errors.As(err, &spec):
		return jsonrpc.InvalidParams("%s", spec.Error())
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			// The message is what failed, the data why: the text the
			// error wraps c.err with.
			detail := strings.TrimPrefix(err.Error(), c.err.Error()+": ")
			return jsonrpc.NewError(c.code, c.err.Error(), detail)
		}
	}
	return err
}
