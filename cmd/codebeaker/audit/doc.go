// Package audit is `codebeaker audit`: verify, replay, export and compact
// read the event log the way an auditor needs it, from the data file alone
// (verify.go, replay.go, export.go, compact.go; source.go chooses where
// events come from, lock_*.go names the process holding the file).
//
// Reading through a running server (--server URL) is a Source that the
// caller injects as Command.DialServer, so this package needs neither the
// WebSocket client nor the service: it imports eventlog and projection
// only, and `go list -deps` shows it.
package audit
