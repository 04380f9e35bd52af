// Package jsonrpc is a transport-independent JSON-RPC 2.0 server: it decodes
// one frame (a single message or a batch), dispatches each call to a
// registered Handler and encodes the reply frame, as specified at
// https://www.jsonrpc.org/specification. The WebSocket layer only moves
// frames; this package is the only one that knows JSON-RPC error codes.
//
// What it promises:
//
//   - Every frame that is not valid UTF-8 JSON gets a -32700 Parse error with
//     id null. A message that is not a well-formed request gets -32600 Invalid
//     Request, echoing its id when a valid one could be read, null otherwise.
//   - Ids are echoed byte for byte: 1e3 stays 1e3, "7" stays a string.
//   - A notification (no "id" member) never gets a response, not even when its
//     method does not exist or fails; a batch of only notifications gets no
//     reply frame at all.
//   - Batch elements run concurrently, at most Dispatcher.BatchConcurrency at
//     a time, and the reply array keeps the order of the requests.
//   - A response has exactly "jsonrpc", "id" and one of "result" or "error".
//   - Handler errors other than *Error, handler panics and unencodable
//     results become -32603 Internal error without data; the detail (which
//     may hold host paths or a stack trace) goes to Dispatcher.OnInternalError.
//   - A handler that is an Admitter is called in two steps: Admit does the
//     part that must keep the order of a connection's frames, before
//     Dispatcher.Admit returns; the rest runs when the transport finishes
//     the frame, concurrently with later frames. Handle does both at once.
//   - No input makes Handle panic.
//   - What a frame costs to decode grows with its bytes, not with its nesting
//     or the number of members or elements in it: a batch over the limit is
//     refused and unknown members are skipped without a copy of each.
//
// Two choices the specification leaves open:
//
//   - "params": null is an Invalid Request. The specification says params, if
//     present, must be a structured value (object or array); null is not one,
//     and a client that means "no params" can leave the member out.
//   - Unknown top-level members of a request are ignored, so that clients may
//     send extensions (tracing ids and the like) to a server that does not
//     know them. Members are matched by their exact, case-sensitive names.
package jsonrpc
