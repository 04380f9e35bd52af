package rpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
	"github.com/codebeaker/codebeaker/sandbox"
)

// Restart tolerance. After a crash or a restart the log says which sessions
// are open; the sandboxes may say otherwise. recover settles every open
// session before anything is served; sandboxes are then taken back lazily
// (the first command that needs one) or by the reconciler, whichever comes
// first, so a server with many sessions serves at once. Every decision about
// a session goes through its liveSession: closeSession for its end, attach
// (under boxMu) for its sandbox.

// recover settles what the previous run left unfinished.
func (s *Service) recover(ctx context.Context) error {
	for _, sess := range s.view.List() {
		if err := s.recoverSession(ctx, sess); err != nil {
			return fmt.Errorf("recover session %s: %w", sess.ID, err)
		}
	}
	s.removeOrphanWorkspaces()
	return nil
}

func (s *Service) recoverSession(ctx context.Context, sess projection.Session) error {
	logger := s.sessionLogger(sess.ID)
	if sess.Running {
		// It has no result and will not get one: whatever it left running
		// is killed when the sandbox is taken back.
		if _, err := s.log.Append(ctx, eventlog.Record{SessionID: sess.ID, Type: eventlog.CommandInterrupted,
			Data: eventlog.CommandInterruptedData{CommandID: sess.RunningCommand}}); err != nil {
			return err
		}
		logger.Warn().Str("command", sess.RunningCommand).Msg("command interrupted by the server's stop")
	}
	lang, err := sandbox.LookupLanguage(sess.Language)
	if err != nil {
		return err
	}
	perms, err := permissions(sess.Config.Permissions)
	if err != nil {
		return err
	}
	spec := s.spec(sess.ID, lang, sess.Config, perms)
	runtime := s.cfg.Runtimes[sess.Runtime]

	if sess.State == projection.Creating {
		// The client never got its session: undo what was made. A container
		// already made is unowned now; the reconciler removes it.
		sandbox.RemoveTree(spec.Workspace)
		if r, ok := runtime.(sandbox.Discarder); ok {
			r.Discard(ctx, spec)
		}
		_, err := s.log.Append(ctx, eventlog.Record{SessionID: sess.ID, Type: eventlog.SessionCreateFailed,
			Data: eventlog.SessionCreateFailedData{Error: "the server stopped while the session was being created"}})
		return err
	}
	now := time.Now()
	reason := ""
	switch {
	case sess.State == projection.Closing:
		reason = sess.CloseReason
	case now.After(sess.LifetimeDeadline()):
		reason = eventlog.ReasonMaxLifetime
	case now.After(sess.IdleDeadline()):
		reason = eventlog.ReasonIdleTimeout
	}
	if _, err := os.Stat(spec.Workspace); err != nil && reason == "" {
		reason = eventlog.ReasonWorkspaceLost
	}
	ws, err := sandbox.OpenWorkspace(spec.Workspace, sandbox.UID, sandbox.GID)
	if err != nil {
		return err
	}
	s.serve(s.newLive(sess.ID, logger, lang, runtime, spec, ws, nil))
	if reason != "" {
		logger.Info().Str("reason", reason).Msg("closing a session whose end came while the server was down")
		return s.closeSession(ctx, sess.ID, reason)
	}
	return nil
}

// removeOrphanWorkspaces deletes workspace folders no open session owns.
func (s *Service) removeOrphanWorkspaces() {
	entries, _ := os.ReadDir(filepath.Join(s.cfg.DataDir, "workspaces"))
	for _, e := range entries {
		id, _, _ := strings.Cut(e.Name(), ".") // <id>.deno-cache is session <id>'s too
		if _, open := s.view.Get(id); !open {
			if err := sandbox.RemoveTree(filepath.Join(s.cfg.DataDir, "workspaces", e.Name())); err != nil {
				s.cfg.Logger.Warn().Err(err).Str("session", e.Name()).Msg("cannot remove a workspace no session owns")
			}
		}
	}
}

// attach returns the session's sandbox, taking it back from the runtime if
// this process does not hold it yet, or any more.
func (s *Service) attach(ctx context.Context, l *liveSession) (sandbox.Sandbox, error) {
	l.boxMu.Lock()
	defer l.boxMu.Unlock()
	if l.box != nil {
		return l.box, nil
	}
	if l.ctx.Err() != nil {
		return nil, fmt.Errorf("%w: session %s is closing", ErrSessionClosed, l.id)
	}
	if l.runtime == nil {
		return nil, fmt.Errorf("%w: the %s runtime is not configured on this server", sandbox.ErrUnavailable, l.lang.Kind)
	}
	view, _ := s.view.Get(l.id)
	var (
		box      sandbox.Sandbox
		restored bool
		err      error
	)
	if r, ok := l.runtime.(sandbox.Reattacher); ok {
		box, restored, err = r.Reattach(ctx, l.spec, view.ContainerID)
	} else {
		box, err = l.runtime.Create(ctx, l.spec)
	}
	if err != nil {
		return nil, err
	}
	if err := s.appendOpen(context.WithoutCancel(ctx), l, eventlog.Record{SessionID: l.id, Type: eventlog.SessionRecovered,
		Data: eventlog.SessionRecoveredData{ContainerID: box.ID(), Restored: restored}}); err != nil {
		box.Close(ctx) // a session closed meanwhile: nobody else would remove it
		return nil, err
	}
	l.log.Info().Str("container", box.ID()).Bool("restored", restored).Msg("session recovered")
	l.box = box
	s.adopt(ctx, l, box, restored)
	return box, nil
}

// detach forgets a sandbox found gone, so the next attach takes it back.
func (l *liveSession) detach(gone sandbox.Sandbox) {
	l.boxMu.Lock()
	defer l.boxMu.Unlock()
	if l.box == gone {
		l.box = nil
	}
}

// exec runs a process in the session's sandbox. A sandbox found gone (the
// command never started) is taken back and the command tried once more.
func (s *Service) exec(ctx context.Context, l *liveSession, p sandbox.Process) (sandbox.Result, error) {
	for attempt := 0; ; attempt++ {
		box, err := s.attach(ctx, l)
		if err != nil {
			return sandbox.Result{}, err
		}
		res, err := box.Exec(ctx, p)
		if !errors.Is(err, sandbox.ErrGone) || attempt > 0 {
			return res, err
		}
		l.log.Warn().Err(err).Msg("sandbox gone; taking it back")
		l.detach(box)
	}
}

// removeSandbox removes the session's sandbox, attached or not;
// containerID is the one the log names.
func (s *Service) removeSandbox(ctx context.Context, l *liveSession, containerID string) error {
	l.boxMu.Lock()
	defer l.boxMu.Unlock()
	box := l.box
	l.box = nil
	if box != nil {
		return box.Close(ctx)
	}
	if r, ok := l.runtime.(sandbox.Reattacher); ok && containerID != "" {
		return r.Remove(ctx, containerID)
	}
	if r, ok := l.runtime.(sandbox.Discarder); ok {
		return r.Discard(ctx, l.spec)
	}
	return nil
}

// reconciler takes detached sandboxes back and removes unowned ones, at
// start and then every ReconcileInterval, so a session whose engine was down
// comes back without waiting for a command, and nothing a crash left behind
// lingers.
func (s *Service) reconciler() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		s.reconcile(s.ctx)
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Service) reconcile(ctx context.Context) {
	s.mu.Lock()
	var detached []*liveSession
	for _, l := range s.live {
		if !l.closing && l.detached() {
			detached = append(detached, l)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	slots := make(chan struct{}, 4)
	for _, l := range detached {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if _, err := s.attach(ctx, l); err != nil && ctx.Err() == nil {
				l.log.Debug().Err(err).Msg("cannot take the sandbox back yet")
			}
		})
	}
	wg.Wait()
	for _, rt := range s.cfg.Runtimes {
		if r, ok := rt.(sandbox.Reattacher); ok {
			s.removeUnowned(ctx, r)
		}
	}
}

func (l *liveSession) detached() bool {
	l.boxMu.Lock()
	defer l.boxMu.Unlock()
	return l.box == nil
}

// removeUnowned removes sandboxes that belong to no open session, or that an
// open session no longer uses.
func (s *Service) removeUnowned(ctx context.Context, r sandbox.Reattacher) {
	owned, err := r.Owned(ctx)
	if err != nil {
		return // the runtime is down; the next pass tries again
	}
	s.forgetTornDown(owned)
	for id, sessionID := range owned {
		// In this order: a claimed sandbox leaves its pool before its
		// session is in the log, and a claim is under way until it is.
		if s.poolHeld(sessionID) || s.claiming() || s.ownedBy(sessionID, id) || s.tearingDown(sessionID) {
			continue
		}
		leftover := s.leftoverOfPool(ctx, r, id, sessionID)
		if err := r.Remove(ctx, id); err != nil {
			s.cfg.Logger.Warn().Err(err).Str("container", id).Msg("cannot remove an unowned sandbox")
			continue
		}
		if leftover {
			s.cfg.Logger.Info().Str("container", id).Str("session", sessionID).Msg("removed a warm sandbox no pool holds (an earlier run's)")
			continue
		}
		s.log.Append(context.WithoutCancel(ctx), eventlog.Record{SessionID: sessionID, Type: eventlog.ContainerRemoved,
			Data: eventlog.ContainerRemovedData{ContainerID: id, Reason: "no open session owns it"}})
		s.cfg.Logger.Info().Str("container", id).Str("session", sessionID).Msg("removed an unowned sandbox")
	}
}

// tearingDown reports whether a closed session's teardown is removing its
// sandbox, or has: the reconciler leaves it that (a listing taken before
// the removal still shows it), and records nothing after the session's
// close.
func (s *Service) tearingDown(sessionID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tearing[sessionID]
	return ok
}

// forgetTornDown forgets the teardowns that are done and whose sandbox a
// listing taken since (owned) no longer shows.
func (s *Service) forgetTornDown(owned map[string]string) {
	listed := make(map[string]bool, len(owned))
	for _, sessionID := range owned {
		listed[sessionID] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, done := range s.tearing {
		if done && !listed[id] {
			delete(s.tearing, id)
		}
	}
}

// ownedBy reports whether an open session uses (or is about to use) the
// sandbox id. A session that is busy with its sandbox right now keeps it.
func (s *Service) ownedBy(sessionID, id string) bool {
	view, open := s.view.Get(sessionID)
	if !open {
		return false
	}
	if view.State == projection.Creating {
		return true
	}
	s.mu.Lock()
	l := s.live[sessionID]
	s.mu.Unlock()
	if l == nil {
		return view.ContainerID == id
	}
	if !l.boxMu.TryLock() {
		return true
	}
	defer l.boxMu.Unlock()
	if l.box != nil {
		return l.box.ID() == id
	}
	return view.ContainerID == id
}
