package rpc

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/codebeaker/codebeaker/sandbox"
)

// Health is the body of GET /health.
type Health struct {
	Status   string                    `json:"status"` // ok, degraded (some runtime down) or unavailable
	EventLog eventLogHealth            `json:"eventLog"`
	Runtimes map[string]sandbox.Health `json:"runtimes"`
	// Pools says how full each image's warm pool is; absent with no pool.
	Pools    map[string]sandbox.PoolStatus `json:"pools,omitempty"`
	Sessions int                           `json:"sessions"`
	Uptime   float64                       `json:"uptimeSeconds"`
}

type eventLogHealth struct {
	Writable bool   `json:"writable"`
	LastSeq  uint64 `json:"lastSeq"`
	Error    string `json:"error,omitempty"`
}

// Health checks the log and every runtime.
func (s *Service) Health(ctx context.Context) Health {
	h := Health{Status: "ok", Runtimes: map[string]sandbox.Health{}, Sessions: len(s.view.List()), Uptime: time.Since(s.start).Seconds()}
	seq, err := s.log.LastSeq()
	h.EventLog = eventLogHealth{Writable: err == nil, LastSeq: seq}
	if err != nil {
		h.EventLog.Error = "event log cannot be read"
	}
	h.Pools = s.poolStatus()
	usable := 0
	for kind, rt := range s.cfg.Runtimes {
		rh := sandbox.Health{Available: true}
		if r, ok := rt.(sandbox.HealthReporter); ok {
			rh = r.Health(ctx)
		}
		h.Runtimes[kind] = rh
		if rh.Available {
			usable++
		}
	}
	switch {
	case !h.EventLog.Writable || usable == 0:
		h.Status = "unavailable"
	case usable < len(s.cfg.Runtimes):
		h.Status = "degraded"
	}
	return h
}

// HealthHandler serves GET /health: the service's Health as JSON, with
// status 503 when it cannot serve.
func HealthHandler(svc *Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		h := svc.Health(ctx)
		w.Header().Set("Content-Type", "application/json")
		if h.Status == "unavailable" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
}

// healthTimeout bounds a health check: runtimes are asked in turn.
const healthTimeout = 10 * time.Second
