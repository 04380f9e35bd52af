package docker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/errdefs"
	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/sandbox"
)

// LabelPool marks a container made for the warm pool; its value is the
// image the pool is for. A claimed container keeps it (labels are fixed):
// whether it became a session is the event log's to say.
const LabelPool = "io.codebeaker.pool"

// The warm pool: for each language's image, and for up to maxCustomPools
// dockerImages sessions used most recently, Size started containers made
// with the default limits, each for a session id chosen in advance and
// with that session's workspace folder made. One goroutine refills, one
// container at a time, so refills take at most one of the engine's
// creates from the sessions' own.
const (
	maxCustomPools = 4
	poolRetryMin   = time.Second
	poolRetryMax   = time.Minute
)

// NewPool starts a warm pool on the runtime.
func (r *Runtime) NewPool(cfg sandbox.PoolConfig) sandbox.Pool {
	p := &pool{r: r, cfg: cfg, log: cfg.Logger.With().Str("component", "pool").Logger(),
		images: map[string]*imagePool{}, held: map[string]bool{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	for _, l := range sandbox.Languages(sandbox.KindDocker) {
		p.images[l.Image] = &imagePool{image: l.Image, language: l, checked: true}
	}
	// The client settles its API version on its first call, racing with
	// other first calls: settle it before the refills and the reconciler
	// both start calling.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	r.api.NegotiateAPIVersion(ctx)
	cancel()
	go p.run()
	return p
}

// PoolMade reports whether the container id carries LabelPool.
func (r *Runtime) PoolMade(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	info, err := r.api.ContainerInspect(ctx, id)
	if errdefs.IsNotFound(err) {
		return false, nil
	} else if err != nil {
		return false, unavailable("inspect container "+shortID(id), err)
	}
	return info.Config != nil && info.Config.Labels[LabelPool] != "", nil
}

type pool struct {
	r   *Runtime
	cfg sandbox.PoolConfig
	log zerolog.Logger

	mu     sync.Mutex
	images map[string]*imagePool // by image as sessions name it
	held   map[string]bool       // session ids of warm containers and of ones being made
	closed bool

	wake chan struct{} // a claim or a new image: look again
	done chan struct{} // closed when run has returned
}

type imagePool struct {
	image    string
	language sandbox.Language
	custom   bool // a session's dockerImage, not a language's own
	checked  bool // a container of it was made: the image is usable
	ready    []warm
	making   int
	lastUsed time.Time
	retryAt  time.Time
	failures int
	full     bool // "full" is logged once per filling
}

type warm struct {
	id  string // the session id it was made for
	box *Container
	dir string // its workspace folder
}

// run refills until Close.
func (p *pool) run() {
	defer close(p.done)
	for {
		ip, id, wait := p.next()
		if ip != nil {
			p.fill(ip, id)
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-p.wake:
		case <-timer.C:
		}
		timer.Stop()
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
	}
}

// next picks an image whose pool is short and may be tried now, and
// reserves a session id for its new container; with none, it says how
// long until one may be tried again.
func (p *pool) next() (ip *imagePool, id string, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	wait = time.Hour
	if p.closed {
		return nil, "", wait
	}
	now := time.Now()
	// Languages' own images first, then the custom ones, in a fixed order.
	names := slices.Collect(maps.Keys(p.images))
	slices.SortFunc(names, func(a, b string) int {
		if ca, cb := p.images[a].custom, p.images[b].custom; ca != cb {
			if cb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		c := p.images[name]
		if len(c.ready)+c.making >= p.cfg.Size {
			continue
		}
		if d := c.retryAt.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		c.making++
		id = p.cfg.NewID()
		p.held[id] = true
		return c, id, 0
	}
	return nil, "", wait
}

// fill makes one warm container for ip, for session id.
func (p *pool) fill(ip *imagePool, id string) {
	spec := p.cfg.Limits
	spec.SessionID, spec.Language, spec.Image, spec.Workspace, spec.Permissions = id, ip.language, ip.image, p.cfg.Workspace(id), nil
	// Not cancelled by Close, which waits for it: a create cut short could
	// leave a container the engine made.
	ctx := context.Background()
	start := time.Now()
	var box *Container
	ws, err := sandbox.OpenWorkspace(spec.Workspace, sandbox.UID, sandbox.GID)
	if err == nil {
		ws.Close()
		if box, err = p.r.create(ctx, spec, map[string]string{LabelPool: ip.image}); err != nil {
			sandbox.RemoveTree(spec.Workspace)
		}
	}
	p.mu.Lock()
	ip.making--
	if err != nil {
		delete(p.held, id)
		ip.failures++
		retry := min(poolRetryMin<<min(ip.failures-1, 10), poolRetryMax)
		ip.retryAt = time.Now().Add(retry)
		drop := ip.custom && (errors.Is(err, sandbox.ErrImageNotFound) || errors.Is(err, sandbox.ErrImageNotAllowed))
		if drop && p.images[ip.image] == ip {
			delete(p.images, ip.image)
		}
		first := ip.failures == 1
		p.mu.Unlock()
		ev := p.log.Debug()
		if first || drop {
			ev = p.log.Warn()
		}
		ev.Err(err).Str("image", ip.image).Bool("dropped", drop).Dur("retryIn", retry).Msg("cannot make a warm sandbox")
		return
	}
	if p.closed || p.images[ip.image] != ip { // closed or evicted meanwhile
		delete(p.held, id)
		p.mu.Unlock()
		p.discard(warm{id: id, box: box, dir: spec.Workspace})
		return
	}
	ip.ready = append(ip.ready, warm{id: id, box: box, dir: spec.Workspace})
	ip.failures, ip.retryAt = 0, time.Time{}
	if ip.custom && !ip.checked {
		ip.checked = true
		p.evictCustom(ip)
	}
	ready, full := len(ip.ready), len(ip.ready) >= p.cfg.Size && !ip.full
	if full {
		ip.full = true
	}
	p.mu.Unlock()
	p.log.Debug().Str("image", ip.image).Str("session", id).Dur("took", time.Since(start)).Msg("warm sandbox made")
	if full {
		p.log.Info().Str("image", ip.image).Int("ready", ready).Int("size", p.cfg.Size).Msg("warm pool full")
	}
}

// evictCustom keeps maxCustomPools usable custom images, dropping the
// least recently used other than keep; p.mu is held.
func (p *pool) evictCustom(keep *imagePool) {
	var customs []*imagePool
	for _, c := range p.images {
		if c.custom && c.checked {
			customs = append(customs, c)
		}
	}
	slices.SortFunc(customs, func(a, b *imagePool) int { return a.lastUsed.Compare(b.lastUsed) })
	for _, c := range customs {
		if len(customs) <= maxCustomPools {
			break
		}
		if c == keep {
			continue
		}
		p.dropLocked(c)
		customs = slices.DeleteFunc(customs, func(x *imagePool) bool { return x == c })
	}
}

// dropLocked forgets an image's pool and removes its warm containers in
// the background; p.mu is held.
func (p *pool) dropLocked(c *imagePool) {
	delete(p.images, c.image)
	ready := c.ready
	c.ready = nil
	for _, w := range ready {
		delete(p.held, w.id)
	}
	p.log.Info().Str("image", c.image).Int("removed", len(ready)).Msg("warm pool dropped: other custom images were used more recently")
	go func() {
		for _, w := range ready {
			p.discard(w)
		}
	}()
}

// discard removes a warm container and its folder.
func (p *pool) discard(w warm) error {
	err := w.box.Close(context.Background())
	if rerr := sandbox.RemoveTree(w.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove workspace of %s: %w", w.id, rerr))
	}
	if err != nil {
		p.log.Warn().Err(err).Str("session", w.id).Msg("cannot remove a warm sandbox")
	}
	return err
}

func (p *pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Claim takes the oldest warm container of spec.Image. A miss on an image
// that has no pool starts one for it, if it is a custom image.
func (p *pool) Claim(ctx context.Context, spec sandbox.Spec) (string, sandbox.Sandbox, bool, error) {
	p.mu.Lock()
	ip := p.images[spec.Image]
	if ip == nil {
		if !p.closed {
			p.addCustom(spec)
		}
		p.mu.Unlock()
		p.poke()
		return "", nil, false, nil
	}
	ip.lastUsed = time.Now()
	if len(ip.ready) == 0 {
		making := ip.making
		p.mu.Unlock()
		p.log.Info().Str("image", spec.Image).Int("making", making).Msg("warm pool empty: the sandbox is made cold")
		return "", nil, false, nil
	}
	w := ip.ready[0]
	ip.ready = ip.ready[1:]
	ip.full = false
	delete(p.held, w.id)
	p.mu.Unlock()
	p.poke()
	lim := p.cfg.Limits
	if spec.MemoryLimitMB != lim.MemoryLimitMB || spec.CPUShares != lim.CPUShares || spec.PidsLimit != lim.PidsLimit {
		if err := p.r.update(ctx, w.box, spec); err != nil {
			p.discard(w)
			return "", nil, false, err
		}
	}
	return w.id, w.box, true, nil
}

// addCustom starts a pool for a session's dockerImage; p.mu is held. It
// counts against maxCustomPools once a container of it was made: until
// then, custom images compete only with one another, so that images that
// do not work push out no pool that does.
func (p *pool) addCustom(spec sandbox.Spec) {
	var pending []*imagePool
	for _, c := range p.images {
		if c.custom && !c.checked {
			pending = append(pending, c)
		}
	}
	slices.SortFunc(pending, func(a, b *imagePool) int { return a.lastUsed.Compare(b.lastUsed) })
	for len(pending) >= maxCustomPools {
		p.dropLocked(pending[0])
		pending = pending[1:]
	}
	p.images[spec.Image] = &imagePool{image: spec.Image, language: spec.Language, custom: true, lastUsed: time.Now()}
}

// update applies spec's limits to a running container.
func (r *Runtime) update(ctx context.Context, c *Container, spec sandbox.Spec) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	mem := int64(spec.MemoryLimitMB) << 20
	pids := int64(spec.PidsLimit)
	_, err := r.api.ContainerUpdate(ctx, c.id, container.UpdateConfig{Resources: container.Resources{
		Memory: mem, MemorySwap: mem, CPUShares: int64(spec.CPUShares), PidsLimit: &pids}})
	if err != nil {
		return unavailable("apply the session's limits to a warm container", err)
	}
	return nil
}

// Holds reports whether the container made for sessionID is warm or being
// made.
func (p *pool) Holds(sessionID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[sessionID]
}

// Status says how full each image's pool is.
func (p *pool) Status() map[string]sandbox.PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]sandbox.PoolStatus, len(p.images))
	for name, c := range p.images {
		out[name] = sandbox.PoolStatus{Language: c.language.Name, Ready: len(c.ready), Size: p.cfg.Size}
	}
	return out
}

// Close stops refilling, waits for a container being made (until ctx
// ends: then that one is removed once made, or by the next start), and
// removes every warm container and its folder.
func (p *pool) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.poke()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.log.Warn().Msg("a warm sandbox is still being made: it is removed once made, or by the next start")
	}
	p.mu.Lock()
	var all []warm
	for _, c := range p.images {
		all = append(all, c.ready...)
		c.ready = nil
	}
	clear(p.held)
	p.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, w := range all {
		wg.Go(func() { errs[i] = p.discard(w) })
	}
	wg.Wait()
	err := errors.Join(errs...)
	p.log.Info().Int("removed", len(all)).AnErr("error", err).Msg("warm pool closed: its sandboxes are removed")
	return err
}
