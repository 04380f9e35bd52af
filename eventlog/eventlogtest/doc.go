// Package eventlogtest opens event logs for tests and checks, when each test
// ends, the invariants eventlog promises, the way bbolt's test helper checks
// its database:
//
//   - the file passes bbolt's own consistency check and has the current
//     layout version;
//   - sequence numbers run from 1 with no gap, the events bucket's sequence
//     is the last of them, and every stored event's seq equals its key;
//   - the ULIDs are strictly increasing in sequence order;
//   - eventlog.Verify passes: every hash is chained to the previous one, and
//     the head record names the last event;
//   - session_events holds exactly one entry per event, each pointing at an
//     event of that session;
//   - Scan, SessionEvents, HasSession and LastSeq read back the same events;
//   - projection.Rebuild succeeds, and, for a log opened with OpenLive,
//     equals the projection fed live by OnCommit.
//
// The checks run after the test's own cleanups registered later, so a test
// may close the log itself; closing again is harmless.
package eventlogtest
