// Package migrations owns the versions of CodeBeaker's data file: the bbolt
// bucket layout and the schema of event payloads.
//
// The layout version lives in the "meta" bucket. Run applies, in one
// transaction, every migration above the file's version, in order; a file
// written by a newer CodeBeaker is refused rather than guessed at.
//
// Event payloads carry their own schema version. Stored events are never
// rewritten: Upcast turns an old payload into the current shape when it is
// read, one registered step at a time.
//
// Every migration and upcaster must have a test case; TestEveryStepIsTested
// fails when one is added without one.
package migrations
