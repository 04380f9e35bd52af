// Package migrations owns the versions of CodeBeaker's data file: the bbolt
// bucket layout and the schema of event payloads. It is the one home of the
// file's schema: the bucket names, the head record, the stored envelope
// (StoredEvent), the layout checks (KnownVersion, CheckReadable) and the
// payload version; package eventlog reads and writes the file through them.
//
// The layout version lives in the "meta" bucket. Run applies, in one
// transaction, every migration above the file's version, in order; a file
// written by a newer CodeBeaker is refused rather than guessed at.
//
//	layout 1  the meta, events and session_events buckets
//	layout 2  every envelope carries "hash", chained over the events in seq
//	          order (eventlog/doc.go), and meta holds the "head" record; a
//	          layout-1 file is chained as it stands, or, if it is not intact
//	          (a gap, a misplaced or unreadable event), left unchanged
//
// Event payloads carry their own schema version. Upcast turns an old
// payload into the current shape when it is read, one registered step at a
// time; stored payloads are not rewritten to a new version (the hash chain
// covers them as stored). Members may be added within a version when a
// reader that ignores them still reads the rest right; a change in what a
// member holds takes a new version, which older binaries refuse.
//
//	payload 1  the first released payloads
//	payload 2  CommandCompleted holds output that is not UTF-8 as base64,
//	           flagged by "stdoutEncoding"/"stderrEncoding" (version 1
//	           put U+FFFD for such bytes); its upcaster flags version-1
//	           output holding U+FFFD as OutputLossy (testdata/payload1.jsonl
//	           is such a log, written by a version-1 server)
//
// The only rewrite of stored events is layout 2's adding of hashes, and
// retention's replacing of command output by its digest
// (eventlog.Log.CompactOutput), which leaves hashes as they were.
//
// Every migration and upcaster must have a test case; TestEveryStepIsTested
// fails when one is added without one. testdata/layout1.db is a file the
// first released layout wrote; TestLayout1File migrates and replays it.
package migrations
