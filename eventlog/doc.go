// Package eventlog is CodeBeaker's source of truth: an append-only log of
// session events in a bbolt file.
//
// # On-disk layout
//
// The file holds three top-level buckets (created by package migrations,
// which also records the layout version in "meta"):
//
//	meta            "layout" -> uint64 big-endian layout version
//	events          seq (uint64 big-endian) -> JSON envelope of one Event
//	session_events  sessionID || seq (uint64 big-endian) -> empty
//
// Sequence numbers are global, start at 1 and have no gaps: every append
// takes the next value of the events bucket's sequence inside the same
// transaction that stores the event. session_events is an index that lets a
// session's history be read without scanning the whole log; it is written in
// the same transaction, so it can never disagree with events.
//
// # The envelope
//
// Each value in events is the JSON encoding of Event: seq, a ULID, the
// session id, the time (RFC 3339, UTC, nanoseconds), the type, the payload's
// schema version ("v") and the payload itself ("data"). Payloads are read
// through migrations.Upcast, so consumers always see the current shape.
// The writer gives the seq, ULID and time when it commits, so ULIDs are
// strictly increasing in seq order, across restarts too.
//
// # Durability
//
// Append returns only after the transaction holding its events has been
// committed and fsynced (bbolt's default; the log never sets NoSync). A
// single writer goroutine commits every append waiting at that moment in
// one transaction (group commit), so concurrent sessions share fsyncs
// without adding latency to a lone writer. Subscribers registered with
// Options.OnCommit see committed events in sequence order, exactly once.
package eventlog
