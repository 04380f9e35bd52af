package rpc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/projection"
	"github.com/codebeaker/codebeaker/sandbox"
)

// Limits bound everything a client can make large.
type Limits struct {
	MaxSessions         int           // open sessions at once
	MaxQueuedCommands   int           // commands waiting in one session
	DefaultTimeout      time.Duration // execute_shell/execute_code without timeoutMs
	MaxTimeout          time.Duration // the most timeoutMs may ask for
	OutputLimit         int           // bytes kept of each of stdout and stderr
	MaxFileBytes        int64         // largest file written or read in one command
	StoredOutputBytes   int           // output kept in the event log per stream
	MaxListEntries      int           // entries list_directory returns
	MaxMemoryMB         int           // the most memoryLimitMB may ask for
	MaxIdleMinutes      float64
	MaxLifetimeMinutes  float64
	DefaultIdleMinutes  float64
	DefaultLifetimeMins float64
	DefaultMemoryMB     int
	DefaultCPUShares    int
	PidsLimit           int
	MaxProcesses        int // background processes running at once in one session
	MaxPTYs             int // of them, processes on a terminal
	ProcessOutputBytes  int // newest bytes of each stream a process's sandbox retains
}

// DefaultLimits are the limits of a service started with no flags.
func DefaultLimits() Limits {
	return Limits{
		MaxSessions:         64,
		MaxQueuedCommands:   32,
		DefaultTimeout:      30 * time.Second,
		MaxTimeout:          10 * time.Minute,
		OutputLimit:         1 << 20,
		MaxFileBytes:        8 << 20,
		StoredOutputBytes:   64 << 10,
		MaxListEntries:      10000,
		MaxMemoryMB:         8192,
		MaxIdleMinutes:      24 * 60,
		MaxLifetimeMinutes:  7 * 24 * 60,
		DefaultIdleMinutes:  30,
		DefaultLifetimeMins: 120,
		DefaultMemoryMB:     512,
		DefaultCPUShares:    1024,
		PidsLimit:           256,
		MaxProcesses:        16,
		MaxPTYs:             4,
		ProcessOutputBytes:  1 << 20,
	}
}

// DefaultReconcileInterval is Config.ReconcileInterval when unset.
const DefaultReconcileInterval = 10 * time.Second

// Config configures a Service.
type Config struct {
	DataDir  string
	Runtimes map[string]sandbox.Runtime // by kind: sandbox.KindDocker, ...
	Limits   Limits
	Logger   zerolog.Logger
	// ReapInterval is how often idle and lifetime deadlines are checked.
	ReapInterval time.Duration
	// ReconcileInterval is how often sandboxes are matched against the open
	// sessions: detached ones taken back, unowned ones removed.
	ReconcileInterval time.Duration
	// PoolSize is how many warm sandboxes are kept per image, in runtimes
	// that keep them (see pool.go); 0 keeps none.
	PoolSize int
}

// Service runs sessions: it turns requests into sandbox work and records
// every step in the event log, from which its view of the sessions is
// projected.
type Service struct {
	cfg   Config
	log   *eventlog.Log
	view  *projection.Sessions
	start time.Time

	mu       sync.Mutex
	live     map[string]*liveSession // sessions with a sandbox in this process
	tearing  map[string]bool         // closed sessions whose teardown removes their sandbox: true once it has
	creating int                     // creates under way, counted against MaxSessions
	claims   int                     // pool claims whose session may not be in the log yet
	stopping bool

	historySlots chan struct{}           // session.history calls building a page
	pools        map[string]sandbox.Pool // warm pools, by runtime kind; set by Open

	ctx    context.Context // ends when the service stops
	cancel context.CancelFunc
	wg     sync.WaitGroup // reaper and closers
}

// liveSession is what this process holds for an open session: handles, not
// state (state is in the projection).
type liveSession struct {
	id       string
	lang     sandbox.Language
	runtime  sandbox.Runtime
	spec     sandbox.Spec // what its sandbox is made from, again after a restart
	ws       *sandbox.Workspace
	queue    chan *job
	log      *zerolog.Logger // the service's, with the session's id; also in ctx
	ctx      context.Context // cancelled when the session closes or the service stops
	cancel   context.CancelFunc
	done     chan struct{} // closed when the worker has ended
	closing  bool          // guarded by Service.mu
	closedCh chan struct{} // closed when close has finished

	boxMu sync.Mutex
	box   sandbox.Sandbox // nil until attached (after a restart) and while gone

	// recMu is held while an event of the session's work is recorded, and
	// while its close is: once sealed (SessionClosed is recorded), a
	// worker that outlived the close records nothing more.
	recMu  sync.Mutex
	sealed bool

	// procMu is held while a process is started (its count checked) and
	// while its end is recorded, so that each is recorded once.
	procMu sync.Mutex
}

// appendOpen records an event of the session's work unless the session's
// close is already recorded; then it records nothing and says so.
func (s *Service) appendOpen(ctx context.Context, l *liveSession, rec eventlog.Record) error {
	l.recMu.Lock()
	defer l.recMu.Unlock()
	if l.sealed {
		return fmt.Errorf("%w: session %s was closed", ErrSessionClosed, l.id)
	}
	_, err := s.log.Append(ctx, rec)
	return err
}

// Open opens the event log in cfg.DataDir, rebuilds the projection from it,
// settles what a previous run left unfinished and starts serving the
// sessions that are still open; their sandboxes are taken back in the
// background (see recover.go).
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = time.Second
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %q: %w", cfg.DataDir, err)
	}
	cfg.DataDir = dataDir // sandboxes bind-mount workspaces by absolute path
	if err := sandbox.PrivateDirs(cfg.DataDir, filepath.Join(cfg.DataDir, "workspaces")); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Service{cfg: cfg, view: projection.NewSessions(), live: map[string]*liveSession{}, tearing: map[string]bool{}, start: time.Now()}
	s.historySlots = make(chan struct{}, historyConcurrency)
	log, err := eventlog.Open(filepath.Join(cfg.DataDir, eventlog.FileName), eventlog.Options{OnCommit: s.applyCommitted})
	if err != nil {
		return nil, err
	}
	s.log = log
	if err := log.Scan(0, s.view.Apply); err != nil {
		log.Close()
		return nil, fmt.Errorf("replay %s: %w", log.Path(), err)
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := s.recover(ctx); err != nil {
		log.Close()
		return nil, err
	}
	s.startPools()
	s.wg.Add(2)
	go s.reaper()
	go s.reconciler()
	return s, nil
}

func (s *Service) applyCommitted(events []eventlog.Event) {
	for _, e := range events {
		if err := s.view.Apply(e); err != nil {
			s.cfg.Logger.Error().Err(err).Uint64("seq", e.Seq).Msg("projection cannot apply a committed event")
		}
	}
}

// Log returns the service's event log.
func (s *Service) Log() *eventlog.Log { return s.log }

// View returns the projection of the sessions.
func (s *Service) View() *projection.Sessions { return s.view }

// relToData is a path as events record it: relative to the data dir, so
// that history shows clients no host path and a moved data dir stays valid.
func (s *Service) relToData(path string) string {
	if rel, err := filepath.Rel(s.cfg.DataDir, path); err == nil {
		return rel
	}
	return filepath.Base(path)
}

func (s *Service) workspaceDir(id string) string {
	return filepath.Join(s.cfg.DataDir, "workspaces", id)
}

// Close stops taking work, lets running and queued commands finish until
// ctx ends (then kills them, recording how they ended), and closes the log.
// Sessions stay open, their sandboxes running: the next start takes them
// back.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	for ctx.Err() == nil && s.busy() {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.cancel() // ends the reaper, the reconciler and every session's worker
	s.wg.Wait()
	s.closePools(ctx)
	s.mu.Lock()
	for _, l := range s.live {
		l.ws.Close()
	}
	s.mu.Unlock()
	return s.log.Close()
}

func (s *Service) busy() bool {
	for _, sess := range s.view.List() {
		if sess.Running {
			return true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.live {
		if len(l.queue) > 0 {
			return true
		}
	}
	return false
}

// CreateParams are the params of session.create.
type CreateParams struct {
	Language           string                `json:"language"`
	IdleTimeoutMinutes *float64              `json:"idleTimeoutMinutes"`
	MaxLifetimeMinutes *float64              `json:"maxLifetimeMinutes"`
	MemoryLimitMB      *int                  `json:"memoryLimitMB"`
	CPUShares          *int                  `json:"cpuShares"`
	DockerImage        string                `json:"dockerImage"`
	Permissions        *eventlog.Permissions `json:"permissions"`
}

// Create makes a session and its sandbox.
func (s *Service) Create(ctx context.Context, p CreateParams) (projection.Session, error) {
	lang, cfg, err := s.sessionConfig(p)
	if err != nil {
		return projection.Session{}, err
	}
	runtime := s.cfg.Runtimes[lang.Kind]
	if runtime == nil {
		return projection.Session{}, fmt.Errorf("%w: the %s runtime is not configured on this server", sandbox.ErrUnavailable, lang.Kind)
	}
	id := newSessionID()
	// The runtime judges what the fields before a malformed one ask for
	// first: problems are told in the order the settings come.
	perms, permErr := permissions(p.Permissions)
	spec := s.spec(id, lang, cfg, perms)
	if err := runtime.Validate(spec); err != nil {
		return projection.Session{}, err
	}
	if permErr != nil {
		return projection.Session{}, permErr
	}
	s.mu.Lock()
	switch {
	case s.stopping:
		s.mu.Unlock()
		return projection.Session{}, ErrShuttingDown
	case len(s.live)+s.creating >= s.cfg.Limits.MaxSessions:
		s.mu.Unlock()
		return projection.Session{}, fmt.Errorf("%w: %d sessions are open, the most this server allows; close one first", ErrCapacity, s.cfg.Limits.MaxSessions)
	}
	s.creating++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.creating--
		s.mu.Unlock()
	}()
	claimedID, box, claimed := s.claim(ctx, lang.Kind, spec)
	if box != nil {
		id = claimedID
		spec = s.spec(id, lang, cfg, perms)
	}

	logger := s.sessionLogger(id)
	// The request's logger (its connection and id) names the session too.
	ctx = zerolog.Ctx(ctx).With().Str("session", id).Logger().WithContext(ctx)
	_, err = s.log.Append(ctx, eventlog.Record{SessionID: id, Type: eventlog.SessionCreating, Data: eventlog.SessionCreatingData{
		Language: lang.Name, Runtime: lang.Kind, Config: cfg,
	}})
	claimed()
	if err != nil {
		if box != nil { // nobody else knows it: a claimed sandbox is ours to remove
			box.Close(context.WithoutCancel(ctx))
			sandbox.RemoveTree(spec.Workspace)
		}
		return projection.Session{}, err
	}
	ws, err := sandbox.OpenWorkspace(spec.Workspace, sandbox.UID, sandbox.GID)
	switch {
	case err != nil && box != nil:
		box.Close(context.WithoutCancel(ctx))
		sandbox.RemoveTree(spec.Workspace)
		box = nil
	case err == nil && box == nil:
		if box, err = runtime.Create(ctx, spec); err != nil {
			ws.Remove()
		}
	}
	if err != nil {
		logger.Warn().Err(err).Msg("session create failed")
		if _, lerr := s.log.Append(context.WithoutCancel(ctx), eventlog.Record{SessionID: id, Type: eventlog.SessionCreateFailed,
			Data: eventlog.SessionCreateFailedData{Error: err.Error()}}); lerr != nil {
			return projection.Session{}, errors.Join(err, lerr)
		}
		return projection.Session{}, err
	}
	if _, err := s.log.Append(context.WithoutCancel(ctx), eventlog.Record{SessionID: id, Type: eventlog.SessionCreated,
		Data: eventlog.SessionCreatedData{ContainerID: box.ID(), Workspace: s.relToData(ws.Dir())}}); err != nil {
		box.Close(ctx)
		ws.Remove()
		// Best effort: if the log takes nothing now, the next start settles
		// the session as one whose create did not finish.
		s.log.Append(context.WithoutCancel(ctx), eventlog.Record{SessionID: id, Type: eventlog.SessionCreateFailed,
			Data: eventlog.SessionCreateFailedData{Error: "could not record the session as created"}})
		return projection.Session{}, err
	}
	s.serve(s.newLive(id, logger, lang, runtime, spec, ws, box))
	logger.Info().Str("language", lang.Name).Str("container", box.ID()).Bool("warm", claimedID != "").Msg("session created")
	view, _ := s.view.Get(id)
	return view, nil
}

// spec is what a session's sandbox is made from.
func (s *Service) spec(id string, lang sandbox.Language, cfg eventlog.SessionConfig, perms *sandbox.Permissions) sandbox.Spec {
	return sandbox.Spec{
		SessionID: id, Language: lang, Image: cfg.Image, Workspace: s.workspaceDir(id),
		MemoryLimitMB: cfg.MemoryLimitMB, CPUShares: cfg.CPUShares, PidsLimit: cfg.PidsLimit, Permissions: perms,
	}
}

func (s *Service) newLive(id string, logger *zerolog.Logger, lang sandbox.Language, runtime sandbox.Runtime, spec sandbox.Spec, ws *sandbox.Workspace, box sandbox.Sandbox) *liveSession {
	l := &liveSession{id: id, log: logger, lang: lang, runtime: runtime, spec: spec, ws: ws, box: box,
		queue: make(chan *job, s.cfg.Limits.MaxQueuedCommands), done: make(chan struct{}), closedCh: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(logger.WithContext(s.ctx))
	return l
}

// sessionLogger is the logger of one session's work, made once for it.
func (s *Service) sessionLogger(id string) *zerolog.Logger {
	l := s.cfg.Logger.With().Str("session", id).Logger()
	return &l
}

// serve registers a live session and starts its worker.
func (s *Service) serve(l *liveSession) {
	s.mu.Lock()
	s.live[l.id] = l
	s.mu.Unlock()
	s.wg.Add(1)
	go s.worker(l)
}

func (s *Service) sessionConfig(p CreateParams) (sandbox.Language, eventlog.SessionConfig, error) {
	lim := s.cfg.Limits
	if strings.TrimSpace(p.Language) == "" {
		return sandbox.Language{}, eventlog.SessionConfig{}, &invalidParams{`"language" is required (python, javascript, go, csharp or deno)`}
	}
	lang, err := sandbox.LookupLanguage(p.Language)
	if err != nil {
		return lang, eventlog.SessionConfig{}, &invalidParams{err.Error()}
	}
	cfg := eventlog.SessionConfig{
		IdleTimeoutMinutes: lim.DefaultIdleMinutes,
		MaxLifetimeMinutes: lim.DefaultLifetimeMins,
		MemoryLimitMB:      lim.DefaultMemoryMB,
		CPUShares:          lim.DefaultCPUShares,
		PidsLimit:          lim.PidsLimit,
		Image:              lang.Image,
	}
	checks := []struct {
		name     string
		v        *float64
		min, max float64
		dst      *float64
	}{
		{"idleTimeoutMinutes", p.IdleTimeoutMinutes, 0, lim.MaxIdleMinutes, &cfg.IdleTimeoutMinutes},
		{"maxLifetimeMinutes", p.MaxLifetimeMinutes, 0, lim.MaxLifetimeMinutes, &cfg.MaxLifetimeMinutes},
	}
	for _, c := range checks {
		if c.v == nil {
			continue
		}
		if !(*c.v > c.min && *c.v <= c.max) {
			return lang, cfg, &invalidParams{fmt.Sprintf("%q must be more than %g and at most %g minutes", c.name, c.min, c.max)}
		}
		*c.dst = *c.v
	}
	if p.MemoryLimitMB != nil {
		if *p.MemoryLimitMB < 16 || *p.MemoryLimitMB > lim.MaxMemoryMB {
			return lang, cfg, &invalidParams{fmt.Sprintf(`"memoryLimitMB" must be between 16 and %d`, lim.MaxMemoryMB)}
		}
		cfg.MemoryLimitMB = *p.MemoryLimitMB
	}
	if p.CPUShares != nil {
		if *p.CPUShares < 2 || *p.CPUShares > 262144 {
			return lang, cfg, &invalidParams{`"cpuShares" must be between 2 and 262144`}
		}
		cfg.CPUShares = *p.CPUShares
	}
	// Whether the language's runtime takes these is its own to say
	// (Runtime.Validate).
	if p.DockerImage != "" {
		cfg.Image = p.DockerImage
	}
	cfg.Permissions = p.Permissions
	return lang, cfg, nil
}

// Close closes a session at the client's request.
func (s *Service) CloseSession(ctx context.Context, id string) error {
	if err := s.closeSession(ctx, id, eventlog.ReasonClient); err != nil {
		return err
	}
	return nil
}

// closeSession tears one session down: the first caller does the work,
// later ones wait for it.
func (s *Service) closeSession(ctx context.Context, id, reason string) error {
	s.mu.Lock()
	live := s.live[id]
	if live == nil {
		s.mu.Unlock()
		return s.missing(id)
	}
	if live.closing {
		s.mu.Unlock()
		<-live.closedCh
		return nil
	}
	live.closing = true
	s.mu.Unlock()
	defer close(live.closedCh)

	logger := live.log.With().Str("reason", reason).Logger()
	ctx = context.WithoutCancel(ctx)
	view, _ := s.view.Get(id)
	if view.State != projection.Closing { // a close a previous run began is finished, not begun again
		if _, err := s.log.Append(ctx, eventlog.Record{SessionID: id, Type: eventlog.SessionClosing, Data: eventlog.SessionClosingData{Reason: reason}}); err != nil {
			logger.Error().Err(err).Msg("cannot record session closing")
		}
	}
	live.cancel() // kills a running command and fails the queued ones

	// The sandbox and the workspace are removed in the background: the
	// close waits only for the session's worker to stop (its command is
	// being killed), so that nothing of the session runs on once it is
	// recorded closed. What the teardown cannot remove, it logs; the
	// reconciler removes the container, the next start the workspace.
	s.mu.Lock()
	s.tearing[id] = false // the reconciler leaves its sandbox to the teardown
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		removed := s.teardown(ctx, live, view.ContainerID, logger)
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, reconciled := live.runtime.(sandbox.Reattacher); removed && reconciled {
			s.tearing[id] = true // forgotten once the reconciler sees it gone
		} else {
			delete(s.tearing, id) // the reconciler's to remove now
		}
	}()
	var problems []string
	select {
	case <-live.done:
	case <-time.After(closeWait):
		logger.Warn().Msg("the running command has not ended yet: it ends with its sandbox, in the background")
		problems = []string{"command: had not ended when the session closed; it ends with its sandbox, removed in the background"}
	}
	s.mu.Lock()
	delete(s.live, id)
	s.mu.Unlock()

	live.recMu.Lock()
	defer live.recMu.Unlock()
	live.sealed = true
	s.recordClosedProcesses(ctx, live)
	if v, _ := s.view.Get(id); v.Running {
		// Its worker has not recorded the end and no longer may.
		if _, err := s.log.Append(ctx, eventlog.Record{SessionID: id, Type: eventlog.CommandInterrupted,
			Data: eventlog.CommandInterruptedData{CommandID: v.RunningCommand}}); err != nil {
			logger.Error().Err(err).Msg("cannot record the command interrupted")
		}
	}
	if _, err := s.log.Append(ctx, eventlog.Record{SessionID: id, Type: eventlog.SessionClosed,
		Data: eventlog.SessionClosedData{Reason: reason, Error: strings.Join(problems, "; ")}}); err != nil {
		logger.Error().Err(err).Msg("cannot record session closed")
		return err
	}
	logger.Info().Msg("session closed")
	return nil
}

// closeWait is how long a close waits for the session's running command
// to end (it is being killed) before it records the session closed;
// workerWait is how long the removal waits for it before it removes the
// sandbox under it.
const (
	closeWait  = 5 * time.Second
	workerWait = 2 * time.Second
)

// teardown removes a closing session's sandbox and workspace, logs what it
// could not remove, and says whether the sandbox is gone. containerID is
// the sandbox the log names.
func (s *Service) teardown(ctx context.Context, l *liveSession, containerID string, logger zerolog.Logger) (removed bool) {
	select {
	case <-l.done:
	case <-time.After(workerWait):
		logger.Warn().Msg("the running command has not ended yet: removing the sandbox under it")
	}
	err := s.removeSandbox(ctx, l, containerID)
	if err != nil {
		logger.Error().Err(err).Msg("cannot remove the sandbox: the reconciler removes it")
	}
	<-l.done // ends once its command's sandbox is gone
	if err := l.ws.Remove(); err != nil {
		logger.Error().Err(err).Msg("cannot delete the workspace: the next start deletes it")
	}
	return err == nil
}

// missing tells an unknown session from one that has closed.
func (s *Service) missing(id string) error {
	if ok, err := s.log.HasSession(id); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%w: session %s has closed", ErrSessionClosed, id)
	}
	return fmt.Errorf("%w: no session with id %q", ErrSessionNotFound, id)
}

// reaper closes sessions whose idle timeout or lifetime has passed.
func (s *Service) reaper() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.ReapInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tick.C:
			s.reap(now)
		}
	}
}

func (s *Service) reap(now time.Time) {
	for _, sess := range s.view.List() {
		reason := ""
		switch {
		case sess.State == projection.Creating || sess.State == projection.Closing:
			continue
		case now.After(sess.LifetimeDeadline()):
			reason = eventlog.ReasonMaxLifetime
		case !sess.Running && now.After(sess.IdleDeadline()):
			reason = eventlog.ReasonIdleTimeout
		default:
			continue
		}
		s.mu.Lock()
		live := s.live[sess.ID]
		busy := live == nil || live.closing || (reason == eventlog.ReasonIdleTimeout && len(live.queue) > 0)
		s.mu.Unlock()
		if busy {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.closeSession(s.ctx, sess.ID, reason)
		}()
	}
}
