// Package projection folds the event log into the views the service and
// its clients read: each session's state, activity times and execution
// count, as session.list shows them.
//
// A projection holds nothing that is not computed from events: applying the
// same events in the same order always gives the same view, which is how the
// service rebuilds it after a restart and how tests check it against the
// live one.
package projection
