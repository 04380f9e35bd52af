// Package chain is the hash chain of the event log: the canonical encoding
// of a stored event and the SHA-256 hash that links it to the event before.
//
// It depends on nothing else in CodeBeaker, so the layout migration that
// adds the chain to old files (package migrations) and the log that extends
// it (package eventlog) compute it the same way. The encoding is documented
// for auditors in eventlog/doc.go; this package is its reference
// implementation.
package chain
