// Package projection folds the event log into the views the service and
// its clients read: each session's state, activity times and execution
// count, as session.list shows them (Sessions), and one session's history
// as an auditor reads it, closed sessions included (Timeline).
//
// A projection holds nothing that is not computed from events: applying the
// same events in the same order always gives the same view, which is how the
// service rebuilds it after a restart, how tests check it against the live
// one, and how `codebeaker audit replay` shows the service at a past point.
package projection
