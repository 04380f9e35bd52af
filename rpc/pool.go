package rpc

import (
	"context"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/codebeaker/codebeaker/sandbox"
)

// The warm pool (Config.PoolSize). Each runtime that can (sandbox.Pooler)
// keeps started sandboxes, each made for a session id chosen in advance,
// its workspace folder made. session.create with the default limits takes
// one; other limits are applied on claim. Warm sandboxes are no sessions:
// they leave nothing in the log until claimed, do not count against
// MaxSessions, and the reconciler leaves them alone. At Close they are
// removed; those a crashed run left are removed by the next run's
// reconciler, recording nothing (their folders went with the other
// orphans at recover).

// newSessionID makes a session's id.
func newSessionID() string { return strings.ToLower(ulid.Make().String()) }

// startPools starts the pools of the runtimes that keep them.
func (s *Service) startPools() {
	s.pools = map[string]sandbox.Pool{}
	if s.cfg.PoolSize <= 0 {
		return
	}
	lim := s.cfg.Limits
	for kind, rt := range s.cfg.Runtimes {
		if p, ok := rt.(sandbox.Pooler); ok {
			s.pools[kind] = p.NewPool(sandbox.PoolConfig{
				Size:      s.cfg.PoolSize,
				Limits:    sandbox.Spec{MemoryLimitMB: lim.DefaultMemoryMB, CPUShares: lim.DefaultCPUShares, PidsLimit: lim.PidsLimit},
				NewID:     newSessionID,
				Workspace: s.workspaceDir,
				Logger:    s.cfg.Logger,
			})
		}
	}
}

// closePools removes the warm sandboxes: they hold nothing of anyone's.
func (s *Service) closePools(ctx context.Context) {
	for kind, p := range s.pools {
		if err := p.Close(ctx); err != nil {
			s.cfg.Logger.Warn().Err(err).Str("runtime", kind).Msg("cannot remove every warm sandbox; the next start removes the rest")
		}
	}
}

// claim takes a warm sandbox for spec from its runtime's pool. done must be
// called once the session's SessionCreating is in the log, or the claim
// given up: until then the reconciler removes no sandbox of a session it
// does not know (see removeUnowned).
func (s *Service) claim(ctx context.Context, kind string, spec sandbox.Spec) (id string, box sandbox.Sandbox, done func()) {
	p := s.pools[kind]
	if p == nil || spec.Permissions != nil {
		return "", nil, func() {}
	}
	s.mu.Lock()
	s.claims++
	s.mu.Unlock()
	done = func() {
		s.mu.Lock()
		s.claims--
		s.mu.Unlock()
	}
	id, box, ok, err := p.Claim(ctx, spec)
	if err != nil {
		s.cfg.Logger.Info().Err(err).Str("image", spec.Image).Msg("warm sandbox not usable: the sandbox is made cold")
	}
	if !ok || err != nil {
		done()
		return "", nil, func() {}
	}
	return id, box, done
}

// poolHeld reports whether a pool holds the sandbox made for sessionID.
func (s *Service) poolHeld(sessionID string) bool {
	for _, p := range s.pools {
		if p.Holds(sessionID) {
			return true
		}
	}
	return false
}

// claiming reports whether a claim's session may not be in the log yet.
func (s *Service) claiming() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims > 0
}

// poolStatus is what /health says of the pools, by image.
func (s *Service) poolStatus() map[string]sandbox.PoolStatus {
	if len(s.pools) == 0 {
		return nil
	}
	out := map[string]sandbox.PoolStatus{}
	for _, p := range s.pools {
		for image, st := range p.Status() {
			out[image] = st
		}
	}
	return out
}

// leftoverOfPool reports whether the sandbox id of sessionID was made for
// a pool and never became a session: its removal is nobody's event.
func (s *Service) leftoverOfPool(ctx context.Context, r sandbox.Reattacher, id, sessionID string) bool {
	p, ok := r.(sandbox.Pooler)
	if !ok {
		return false
	}
	if known, err := s.log.HasSession(sessionID); err != nil || known {
		return false
	}
	made, err := p.PoolMade(ctx, id)
	return err == nil && made
}
