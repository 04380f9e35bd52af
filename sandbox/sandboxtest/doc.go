// Package sandboxtest is the behaviour suite that every sandbox runtime
// passes, in the manner of nats-server's store tests: one Run, called from
// each runtime's own tests with a Harness that makes that runtime's
// sandboxes.
//
// The suite runs small programs in the harness's language, one per
// scenario (Echo, Cat, Spawn, Flood, ...). Each constant documents what its
// program must do with its arguments; a runtime's test supplies the
// programs (the Docker tests use Python, a Deno runtime would use
// TypeScript). A program is run the way execute_code runs code: stored in
// the workspace at Language.CodeFile, started with Language.CodeCommand,
// the scenario's arguments appended.
//
// What every runtime must do, case by case: output split into stdout and
// stderr with the exit code; stdin, environment and working directory
// delivered; files shared with the host workspace folder both ways; a
// timeout or a cancelled context kills the whole process tree, detached
// grandchildren included (a timeout is a Result with TimedOut that keeps the
// output printed before it, a cancel an error wrapping the context's);
// output capped while both streams are drained at once; the memory and pids
// limits contain what hits them, and the sandbox serves the next command
// after each of these; a program that cannot start is
// sandbox.ErrCannotStart; Close is idempotent and final.
package sandboxtest
