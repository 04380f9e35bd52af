// Package ws serves a service's JSON-RPC methods over WebSocket: one
// message or batch per text frame, replies on the same connection.
//
// Each connection has one reader, which reads a frame (within the frame
// size limit and the server-wide budget of request bytes, budget.go) and
// admits it through the dispatcher before reading the next, so that a
// client's commands queue in the order it sent them; the rest of each frame
// (running or waiting for its calls, writing the reply) happens in a
// handler of its own, at most MaxInFlightPerConn at once. Writes are one at
// a time, with a deadline: a peer that does not take its replies loses the
// connection. Pings find dead peers; a connection with no request for
// IdleTimeout is closed (conncare.go).
package ws
