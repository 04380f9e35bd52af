// Package eventlog is CodeBeaker's source of truth: an append-only log of
// session events in a bbolt file, chained by SHA-256 hashes so that a
// changed, removed or reordered event is detected.
//
// # On-disk layout
//
// The file holds three top-level buckets (created by package migrations,
// which also records the layout version in "meta"; this is layout 2):
//
//	meta            "layout" -> uint64 big-endian layout version
//	                "head"   -> seq (uint64 big-endian) || hash (32 bytes) of the newest event
//	events          seq (uint64 big-endian) -> JSON envelope of one Event
//	session_events  sessionID || seq (uint64 big-endian) -> empty
//
// Sequence numbers are global, start at 1 and have no gaps: every append
// takes the next value of the events bucket's sequence inside the same
// transaction that stores the event. session_events is an index that lets a
// session's history be read without scanning the whole log; it is written in
// the same transaction, so it can never disagree with events. So is the head
// record: the seq and hash of the last event committed, from which a cut
// tail is detected. An empty log's head is seq 0 and 32 zero bytes.
//
// # The envelope
//
// Each value in events is the JSON encoding of Event, members in this
// order: seq, id (a ULID), sessionId, time (RFC 3339, UTC, nanoseconds), type,
// v (the payload's schema version), data (the payload) and hash. Payloads
// are read through migrations.Upcast, so consumers always see the current
// shape; the hash covers the payload as stored. The writer gives the seq,
// ULID, time and hash when it commits, so ULIDs are strictly increasing in
// seq order, across restarts too.
//
// # The hash chain
//
// An event's hash is
//
//	hash(n) = SHA-256( hash(n-1) || canonical(n) )
//
// where hash(0) is 32 zero bytes, || is concatenation of bytes, and the
// envelope stores hash(n) as 64 lower-case hex digits. canonical(n) is the
// JSON object below, with no whitespace between tokens and its members in
// this order (it is what encoding/json writes for chain.Event):
//
//	{"seq":S,"id":"I","sessionId":J,"time":"T","type":Y,"v":V,"data":D}
//
// where:
//
//   - S and V: the seq and payload version in decimal.
//   - I: the ULID in its 26-character upper-case Crockford base32 form.
//   - J and Y: the session id and type as JSON strings, written the way
//     encoding/json writes strings (<, >, & and U+2028, U+2029 as \u003c,
//     \u003e, \u0026, \u2028, \u2029; the ids and types CodeBeaker writes are
//     plain ASCII, so this is the string in quotes).
//   - T: the time as stored: RFC 3339 with the fraction of the second
//     trailing zeros removed (none if it is zero), in UTC with "Z", such as
//     2026-11-27T12:00:01.5Z (Go's time.RFC3339Nano).
//   - D: the payload as stored, with whitespace between tokens removed and
//     encoding/json's escaping of <, >, &, U+2028 and U+2029 inside strings
//     (the writer stores payloads in that form already, so D is the stored
//     payload byte for byte) -- except in CommandCompleted events, whose
//     command output retention may drop (see Retention). In those, D is the
//     payload object with its members in their stored order, each value as
//     stored, each member name written as a JSON string as above, and:
//     a member "stdout" is replaced, at its place, by a member
//     "stdoutSha256" whose value is the lower-case hex SHA-256 of the bytes
//     stdout holds: the UTF-8 bytes of the stdout string (its JSON escapes
//     decoded), or, if the payload has a member "stdoutEncoding" (which
//     must then be "base64"), the bytes that string decodes to as padded
//     standard base64 (RFC 4648); "stderr" likewise by "stderrSha256",
//     with "stderrEncoding"; the encoding members stay as they are; a
//     member "outputCompacted" is left out (but must be true, and present
//     exactly when a digest member is).
//
// So an event whose output was compacted has the same canonical form, and
// the same hash, as before. Example: the event
//
//	{"seq":2,"id":"01JFS0000000000000000000A2","sessionId":"01jfs","time":"2025-03-01T12:00:01.5Z","type":"CommandCompleted","v":1,
//	 "data":{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":98,"stdoutBytes":3,"stderrBytes":0,"stdout":"hi\n"}}
//
// has the canonical form
//
//	{"seq":2,"id":"01JFS0000000000000000000A2","sessionId":"01jfs","time":"2025-03-01T12:00:01.5Z","type":"CommandCompleted","v":1,"data":{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":98,"stdoutBytes":3,"stderrBytes":0,"stdoutSha256":"98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"}}
//
// and, after an event with hash 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b,
// the hash e0078082a8e20662ebd3b67aff80b2a3022ab87d19145fd24c74f6065652b41c
// (package chain's tests check this example).
//
// Verify walks the file read-only and reports the first event that breaks
// the chain: a seq missing (removed), an event stored under another seq
// (reordered), a hash that does not match (changed), fewer events than the
// head record names (tail cut), an index entry that disagrees. The chain
// and the head live in the file: someone who can write the file and
// recompute every hash from an event on, head included, is caught only by a
// hash kept elsewhere. `codebeaker audit verify` prints the head hash; keep
// it outside the data dir and pass it back as --anchor SEQ:HASH.
//
// # Command output
//
// A CommandCompleted event holds what the program wrote, up to the stored
// cap, in stdout and stderr: as text when the bytes are UTF-8, otherwise
// (from payload version 2) as their base64 with "stdoutEncoding":"base64"
// (or "stderrEncoding"). So the log, and the digests below, hold the bytes
// the program wrote, not the text with U+FFFD that the client is shown.
// Version-1 events held that text; read back, their output holding U+FFFD
// says "stdoutEncoding":"utf8-lossy" (migrations.OutputLossy).
//
// # Retention
//
// Log.CompactOutput replaces, in CommandCompleted events older than a given
// age of sessions that have closed, the members stdout and stderr by
// stdoutSha256 and stderrSha256 (at the same place in the object) and adds
// "outputCompacted":true. Nothing else of the event changes, and its hash
// does not: the chain verifies as before, and the digests still prove what
// the output was to whoever has a copy of it (of the bytes; of the text as
// stored, for events of version 1).
//
// # Durability
//
// Append returns only after the transaction holding its events has been
// committed and fsynced (bbolt's default; the log never sets NoSync). A
// single writer goroutine commits every append waiting at that moment in
// one transaction (group commit), so concurrent sessions share fsyncs
// without adding latency to a lone writer. Subscribers registered with
// Options.OnCommit see committed events in sequence order, exactly once.
// CompactOutput commits its rewrites in transactions of its own.
//
// A failed commit is not always a batch left out. bbolt fails a commit
// whose last fdatasync, after the meta page is written, fails; yet every
// later transaction sees that batch. So after any failed commit the writer
// reads the head record and the events bucket's sequence back. If they are
// where they were, the batch is not in the file. If they are at the batch's
// last event, it is: the chain goes on from it and OnCommit sees it, so
// what is in memory matches the file, but its appenders still get an
// error, because the events may not be on disk (a crash may lose them, and
// after a failed fsync the kernel may have dropped them), and Append
// promises durable events; a caller must take them as possibly stored,
// possibly lost. If the head is anywhere else, or the file cannot be read,
// the writer no longer knows where the chain ends: every later Append fails
// with an error wrapping ErrFailed until the server is restarted.
//
// A log opened with Options.ReadOnly shares the file with other readers
// (bbolt's shared lock); a writer, such as a running server, holds it
// alone.
package eventlog
