package projection

import "time"

// SessionView is a session as session.list shows it. Auditors' replay shows
// the same shape for a point in the past.
type SessionView struct {
	SessionID       string    `json:"sessionId"`
	ContainerID     string    `json:"containerId"`
	Language        string    `json:"language"`
	CreatedAt       time.Time `json:"createdAt"`
	LastActivity    time.Time `json:"lastActivity"`
	State           State     `json:"state"`
	ExecutionCount  int       `json:"executionCount"`
	IdleMinutes     float64   `json:"idleMinutes"`
	LifetimeMinutes float64   `json:"lifetimeMinutes"`
}

// ViewOf is the session.list view of s at time at.
func ViewOf(s Session, at time.Time) SessionView {
	return SessionView{
		SessionID: s.ID, ContainerID: s.ContainerID, Language: s.Language,
		CreatedAt: s.CreatedAt.UTC(), LastActivity: s.LastActivity.UTC(), State: s.State,
		ExecutionCount: s.ExecutionCount, IdleMinutes: s.IdleMinutes(at), LifetimeMinutes: s.LifetimeMinutes(at),
	}
}
