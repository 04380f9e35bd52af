package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/docker/client"

	"github.com/codebeaker/codebeaker/sandbox/docker"
)

// benchCommand is `codebeaker bench`: it starts servers of its own (this
// binary's serve, on loopback), drives them over WebSocket JSON-RPC, and
// prints each figure next to its floor measured in the same run
// (bench_floors.go). A benchmark, not a test: it never fails on timing.
type benchCommand struct {
	stdout, stderr io.Writer

	runs         int
	idleSessions int
	skipIdle     bool
	jsonOut      bool
	keep         bool

	exe        string
	noPoolFlag bool                    // serve said it has no --pool-size
	dir        string                  // the run's temp folder: data dirs, logs, the floors' workspace
	series     map[string][]float64    // by figure or floor id, in ms
	report     benchReport             //
	cleanups   []func(context.Context) // run last first, at the end or on an error
}

// benchWarmups untimed runs come before the timed ones of every figure.
const benchWarmups = 2

// benchFigures are the figures and their floors, with the goals of issue 10
// (ratio of p50s).
var benchFigures = []struct {
	id, name, floor string
	goal            float64
}{
	{"shell_true", "execute_shell true", "exec_true", 0.2},
	{"shell_python", "execute_shell python3 -c 'print(1)'", "python_start", 1.3},
	{"create_pool", "session.create python, from the pool", "create_start", 0.05},
	{"create_cold", "session.create python, pool off", "create_start", 1.2},
	{"oneshot", "create + execute_shell + close, pool on", "docker_run", 0.1},
	{"deno_code", "deno execute_code console.log(1)", "deno_eval", 1.2},
}

// benchFloorNames say what each floor is.
var benchFloorNames = map[string]string{
	"create_start": "raw Docker API create+start",
	"exec_true":    "raw Docker API exec true",
	"exec_python":  "raw Docker API exec python3 -c 'print(1)'",
	"python_start": "python's own start: exec python3 - exec true, paired",
	"docker_run":   "docker run --rm python3 -c 'print(1)'",
	"deno_eval":    "deno eval 'console.log(1)'",
}

// benchReport is what -json prints; the table shows the same.
type benchReport struct {
	Version string        `json:"version"`
	RunID   string        `json:"runId"` // the label value of the floors' containers
	Dir     string        `json:"dir"`   // the run's temp folder (removed unless -keep)
	Runs    int           `json:"runs"`
	Pool    bool          `json:"pool"` // the servers had a warm pool
	Figures []benchFigure `json:"figures"`
	Floors  []benchSeries `json:"floors"`
	Refill  *benchRefill  `json:"refill,omitempty"`
	Idle    *benchIdle    `json:"idle,omitempty"`
	Notes   []string      `json:"notes,omitempty"`
}

type benchFigure struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	P50Ms      float64 `json:"p50Ms"`
	P90Ms      float64 `json:"p90Ms"`
	Floor      string  `json:"floor"`
	FloorP50Ms float64 `json:"floorP50Ms"`
	FloorP90Ms float64 `json:"floorP90Ms"`
	Ratio      float64 `json:"ratio"` // P50Ms / FloorP50Ms
	Goal       float64 `json:"goal"`  // the ratio the issue asks for at most
}

type benchSeries struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	P50Ms float64 `json:"p50Ms"`
	P90Ms float64 `json:"p90Ms"`
}

// benchRefill is how fast a drained pool fills again.
type benchRefill struct {
	PoolSize          int     `json:"poolSize"`
	Rounds            int     `json:"rounds"`
	Seconds           float64 `json:"seconds"` // p50 of the rounds: from the first claim to full again
	SessionsPerSecond float64 `json:"sessionsPerSecond"`
}

// benchIdle is the server's memory with idle sessions open.
type benchIdle struct {
	Sessions          int     `json:"sessions"`
	BaselineRSSMB     float64 `json:"baselineRssMB"`
	RSSMB             float64 `json:"rssMB"`
	PerSessionKB      float64 `json:"perSessionKB"`
	CreateSeconds     float64 `json:"createSeconds"`
	ConcurrentClients int     `json:"concurrentClients"`
}

func (b *benchCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("codebeaker bench", flag.ContinueOnError)
	fs.SetOutput(b.stderr)
	fs.IntVar(&b.runs, "n", 20, "timed runs per figure and floor (after 2 untimed ones)")
	fs.IntVar(&b.idleSessions, "idle-sessions", 200, "idle python sessions held open for the server's RSS figure")
	fs.BoolVar(&b.skipIdle, "skip-idle", false, "skip the idle-sessions RSS figure (the slowest part)")
	fs.BoolVar(&b.jsonOut, "json", false, "print the results as JSON instead of a table")
	fs.BoolVar(&b.keep, "keep", false, "keep the run's temp folder (data dirs and server logs)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: codebeaker bench [flags]

Starts servers of its own on 127.0.0.1 (this binary's serve, in temp data dirs)
and prints, for each figure, p50 and p90 next to the same work done straight
through the Docker API, the docker CLI or a bare Deno in the same run, with the
ratio of p50s and its goal. Needs the Docker engine, the runtime images and Deno.
A benchmark: it never fails on timing.

`)
		fs.PrintDefaults()
	}
	return fs
}

// Run measures everything and prints it; whatever it started is stopped
// and removed before it returns, on an error or a signal too.
func (b *benchCommand) Run(ctx context.Context, args []string) (err error) {
	fs := b.flags()
	if err := envFlags(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench takes no arguments, got %q", fs.Args())
	}
	if b.runs < 1 || b.idleSessions < 1 {
		return errors.New("-n and -idle-sessions must be at least 1")
	}
	if b.exe, err = os.Executable(); err != nil {
		return fmt.Errorf("find this binary to start servers from: %w", err)
	}
	if b.dir, err = os.MkdirTemp("", "codebeaker-bench-"); err != nil {
		return err
	}
	b.series = map[string][]float64{}
	b.report = benchReport{Version: version, RunID: filepath.Base(b.dir), Dir: b.dir, Runs: b.runs}
	defer func() {
		cleanupCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, f := range slices.Backward(b.cleanups) {
			f(cleanupCtx)
		}
		if ctx.Err() != nil {
			// The error is what the signal cut short; say what it was.
			err = errors.New("interrupted: what the bench started is stopped and removed")
		}
		if b.keep {
			b.logf("kept %s", b.dir)
		} else if rmErr := os.RemoveAll(b.dir); rmErr != nil {
			b.logf("could not remove %s: %v", b.dir, rmErr)
		}
	}()
	b.logf("%d timed runs per figure; this takes about %s", b.runs, b.estimate())

	floors, err := newBenchFloors(ctx, b.report.RunID, filepath.Join(b.dir, "floor-workspace"))
	if err != nil {
		return err
	}
	b.onCleanup(func(context.Context) {
		if err := floors.sweep(); err != nil {
			b.logf("%v", err)
		}
		floors.Close()
	})
	if err := b.measureFloors(ctx, floors); err != nil {
		return err
	}
	if err := b.poolFigures(ctx); err != nil {
		return err
	}
	if err := b.coldFigures(ctx); err != nil {
		return err
	}
	if b.report.Pool {
		if err := b.refill(ctx); err != nil {
			return err
		}
	}
	if !b.skipIdle {
		if err := b.idle(ctx); err != nil {
			return err
		}
	}
	b.build()
	if b.jsonOut {
		enc := json.NewEncoder(b.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(b.report)
	}
	b.print()
	return nil
}

// estimate is a rough run time on a 2-core machine, for the first line.
func (b *benchCommand) estimate() time.Duration {
	// About 9 s per run of all figures and floors, plus servers and refill;
	// an idle session about 1.2 s to open and close, 4 at a time.
	d := time.Duration(b.runs+benchWarmups)*9*time.Second + 30*time.Second
	if !b.skipIdle {
		d += time.Duration(b.idleSessions) * 1200 * time.Millisecond
	}
	return d.Round(time.Minute/2) + time.Minute/2
}

func (b *benchCommand) onCleanup(f func(context.Context)) { b.cleanups = append(b.cleanups, f) }

func (b *benchCommand) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

func (b *benchCommand) note(s string) {
	b.logf("%s", s)
	b.report.Notes = append(b.report.Notes, s)
}

// poolFigures measures the figures of a server with its pool on.
func (b *benchCommand) poolFigures(ctx context.Context) error {
	s, pool, err := b.startPoolServer(ctx, "pool", 1)
	if err != nil {
		return err
	}
	defer s.stop(ctx)
	b.report.Pool = pool
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	claimable := func() error {
		if !pool {
			return nil
		}
		return s.waitPool(ctx)
	}

	b.logf("figures: execute_shell true and python3 in a python session")
	if err := claimable(); err != nil {
		return err
	}
	sid, err := c.create(ctx, "python")
	if err != nil {
		return err
	}
	// The claim's refill is done before timing: commands are timed on an
	// otherwise idle server.
	if err := claimable(); err != nil {
		return err
	}
	if b.series["shell_true"], err = measure(ctx, b.runs, timed(func() error { return c.shell(ctx, sid, "", "true") })); err != nil {
		return err
	}
	if b.series["shell_python"], err = measure(ctx, b.runs, timed(func() error { return c.shell(ctx, sid, "1\n", "python3", "-c", "print(1)") })); err != nil {
		return err
	}
	if err := c.closeSession(ctx, sid); err != nil {
		return err
	}

	// Each create waits, untimed, for a full pool, so that each is a claim.
	b.logf("figure: session.create python from the pool")
	if b.series["create_pool"], err = measure(ctx, b.runs, func() (time.Duration, error) {
		if err := claimable(); err != nil {
			return 0, err
		}
		start := time.Now()
		sid, err := c.create(ctx, "python")
		took := time.Since(start)
		if err != nil {
			return 0, err
		}
		return took, c.closeSession(ctx, sid)
	}); err != nil {
		return err
	}

	b.logf("figure: one-shot create + execute_shell python3 + close")
	if b.series["oneshot"], err = measure(ctx, b.runs, func() (time.Duration, error) {
		if err := claimable(); err != nil {
			return 0, err
		}
		start := time.Now()
		sid, err := c.create(ctx, "python")
		if err != nil {
			return 0, err
		}
		if err := c.shell(ctx, sid, "1\n", "python3", "-c", "print(1)"); err != nil {
			return 0, err
		}
		return time.Since(start), c.closeSession(ctx, sid)
	}); err != nil {
		return err
	}

	if _, ok := b.series["deno_eval"]; !ok {
		return nil // no Deno here; noted with the floors
	}
	b.logf("figure: execute_code in a Deno session")
	sid, err = c.create(ctx, "deno")
	if err != nil {
		return err
	}
	// The one-shots' refills are done first: Deno is timed on an idle server.
	if err := claimable(); err != nil {
		return err
	}
	if b.series["deno_code"], err = measure(ctx, b.runs, timed(func() error { return c.code(ctx, sid, "1\n", "console.log(1)") })); err != nil {
		return err
	}
	return c.closeSession(ctx, sid)
}

// coldFigures measures session.create on a server with its pool off.
func (b *benchCommand) coldFigures(ctx context.Context) error {
	s, _, err := b.startPoolServer(ctx, "nopool", 0)
	if err != nil {
		return err
	}
	defer s.stop(ctx)
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	b.logf("figure: session.create python with the pool off")
	b.series["create_cold"], err = measure(ctx, b.runs, func() (time.Duration, error) {
		start := time.Now()
		sid, err := c.create(ctx, "python")
		took := time.Since(start)
		if err != nil {
			return 0, err
		}
		return took, c.closeSession(ctx, sid)
	})
	return err
}

// refill drains a larger pool with back-to-back creates and times how long
// it takes to be full again.
func (b *benchCommand) refill(ctx context.Context) error {
	const size = 4
	s, pool, err := b.startPoolServer(ctx, "refill", size)
	if err != nil {
		return err
	}
	defer s.stop(ctx)
	if !pool {
		b.note("no pool refill figure: the refill server has no pool")
		return nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rounds := min(3, b.runs)
	b.logf("pool refill: %d rounds of %d back-to-back creates, pool size %d", rounds, size, size)
	var seconds []float64
	for range rounds {
		if err := s.waitPool(ctx); err != nil {
			return err
		}
		start := time.Now()
		var sids []string
		for range size {
			sid, err := c.create(ctx, "python")
			if err != nil {
				return err
			}
			sids = append(sids, sid)
		}
		if err := s.waitPool(ctx); err != nil {
			return err
		}
		seconds = append(seconds, time.Since(start).Seconds())
		for _, sid := range sids {
			if err := c.closeSession(ctx, sid); err != nil {
				return err
			}
		}
	}
	p50 := percentile(seconds, 0.5)
	b.report.Refill = &benchRefill{PoolSize: size, Rounds: rounds, Seconds: p50, SessionsPerSecond: size / p50}
	return nil
}

// idle opens idleSessions python sessions, a few clients at once, and reads
// the server's RSS before and after.
func (b *benchCommand) idle(ctx context.Context) error {
	const clients = 4
	k := b.idleSessions
	s, err := b.startServer(ctx, "idle", "--max-sessions", strconv.Itoa(k+16))
	if err != nil {
		return err
	}
	defer s.stop(ctx)
	base, err := vmRSSKB(s.cmd.Process.Pid)
	if err != nil {
		return err
	}
	b.logf("idle: creating %d python sessions with %d clients", k, clients)
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		sids       []string
	)
	start := time.Now()
	err = parallel(clients, func() error {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		for next.Add(1) <= int64(k) {
			sid, err := c.create(ctx, "python")
			if err != nil {
				return err
			}
			mu.Lock()
			sids = append(sids, sid)
			mu.Unlock()
			if n := done.Add(1); n%int64(max(1, k/10)) == 0 || n == int64(k) {
				b.logf("idle: %d/%d sessions open", n, k)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	created := time.Since(start)
	rss, err := vmRSSKB(s.cmd.Process.Pid)
	if err != nil {
		return err
	}
	b.report.Idle = &benchIdle{Sessions: k, BaselineRSSMB: float64(base) / 1024, RSSMB: float64(rss) / 1024,
		PerSessionKB: float64(rss-base) / float64(k), CreateSeconds: created.Seconds(), ConcurrentClients: clients}
	b.logf("idle: closing %d sessions", k)
	var closeNext atomic.Int64
	return parallel(clients, func() error {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := closeNext.Add(1) - 1; i < int64(len(sids)); i = closeNext.Add(1) - 1 {
			if err := c.closeSession(ctx, sids[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// parallel runs f in n goroutines and returns the first error.
func parallel(n int, f func() error) error {
	errs := make(chan error, n)
	for range n {
		go func() { errs <- f() }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// vmRSSKB reads VmRSS of a process from /proc, in kB.
func vmRSSKB(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the server's memory: %w", err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// measure runs f benchWarmups times untimed, then n times, and returns the
// n durations f reported, in ms.
func measure(ctx context.Context, n int, f func() (time.Duration, error)) ([]float64, error) {
	var out []float64
	for i := range benchWarmups + n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := f()
		if err != nil {
			return nil, err
		}
		if i >= benchWarmups {
			out = append(out, ms(d))
		}
	}
	return out, nil
}

// timed times all of f.
func timed(f func() error) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		start := time.Now()
		err := f()
		return time.Since(start), err
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile interpolates linearly between the closest ranks.
func percentile(samples []float64, p float64) float64 {
	if len(samples) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(samples))
	pos := p * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// build fills the report's figures and floors from the series.
func (b *benchCommand) build() {
	for _, f := range benchFigures {
		fig, floor := b.series[f.id], b.series[f.floor]
		if fig == nil || floor == nil {
			continue
		}
		p50, floorP50 := percentile(fig, 0.5), percentile(floor, 0.5)
		b.report.Figures = append(b.report.Figures, benchFigure{ID: f.id, Name: f.name,
			P50Ms: p50, P90Ms: percentile(fig, 0.9), Floor: benchFloorNames[f.floor],
			FloorP50Ms: floorP50, FloorP90Ms: percentile(floor, 0.9), Ratio: p50 / floorP50, Goal: f.goal})
	}
	for _, id := range []string{"create_start", "exec_true", "exec_python", "python_start", "docker_run", "deno_eval"} {
		if s := b.series[id]; s != nil {
			b.report.Floors = append(b.report.Floors, benchSeries{ID: id, Name: benchFloorNames[id], P50Ms: percentile(s, 0.5), P90Ms: percentile(s, 0.9)})
		}
	}
}

// print writes the report as tables.
func (b *benchCommand) print() {
	r := b.report
	w := tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "figure\tp50\tp90\tfloor p50\tfloor p90\tratio\tgoal\t\tfloor\n")
	for _, f := range r.Figures {
		over := ""
		if f.Ratio > f.Goal {
			over = "over"
		}
		fmt.Fprintf(w, "%s\t%.1f ms\t%.1f ms\t%.1f ms\t%.1f ms\t%.2f×\t≤ %g×\t%s\t%s\n", f.Name, f.P50Ms, f.P90Ms, f.FloorP50Ms, f.FloorP90Ms, f.Ratio, f.Goal, over, f.Floor)
	}
	w.Flush()
	fmt.Fprintf(b.stdout, "\n%d timed runs each, after %d untimed; pool: %v\n\nfloors (p50, p90)\n", r.Runs, benchWarmups, r.Pool)
	for _, s := range r.Floors {
		fmt.Fprintf(w, "  %s\t%.1f ms\t%.1f ms\n", s.Name, s.P50Ms, s.P90Ms)
	}
	w.Flush()
	if r.Refill != nil {
		fmt.Fprintf(b.stdout, "\npool refill: a drained pool of %d is full again %.2f s after the first claim (p50 of %d rounds): %.1f sessions/s\n",
			r.Refill.PoolSize, r.Refill.Seconds, r.Refill.Rounds, r.Refill.SessionsPerSecond)
	}
	if r.Idle != nil {
		fmt.Fprintf(b.stdout, "\nserver RSS: %.1f MB with %d idle python sessions (%.1f MB with none: %.0f kB a session); opening them took %.1f s with %d clients\n",
			r.Idle.RSSMB, r.Idle.Sessions, r.Idle.BaselineRSSMB, r.Idle.PerSessionKB, r.Idle.CreateSeconds, r.Idle.ConcurrentClients)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(b.stdout, "\nnote: %s\n", n)
	}
}

// benchServer is a `codebeaker serve` the bench started.
type benchServer struct {
	b       *benchCommand
	name    string
	addr    string
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	once    sync.Once

	mu   sync.Mutex
	open map[string]bool // sessions created and not yet closed
}

// errNoPoolFlag: this serve has no --pool-size.
var errNoPoolFlag = errors.New("serve has no --pool-size")

// startPoolServer starts a server with --pool-size size, or, when this
// serve has no such flag, without it; pool says whether the server has
// a python pool to claim from (always false when size is 0).
func (b *benchCommand) startPoolServer(ctx context.Context, name string, size int) (s *benchServer, pool bool, err error) {
	s, err = b.startServer(ctx, name, "--pool-size", strconv.Itoa(size))
	if errors.Is(err, errNoPoolFlag) {
		if !b.noPoolFlag {
			b.note("this serve has no --pool-size: its servers ran without a warm pool, so the pool figures are cold creates")
		}
		b.noPoolFlag = true
		s, err = b.startServer(ctx, name)
		return s, false, err
	}
	if err != nil || size == 0 {
		return s, false, err
	}
	// The pool shows in /health; a server that took the flag but shows no
	// pool there is measured as it is.
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := s.health(ctx)
		if err != nil {
			return s, false, err
		}
		if _, _, found := pythonPool(h); found {
			return s, true, nil
		}
		if time.Now().After(deadline) {
			b.note("server " + name + " took --pool-size but its /health shows no python pool: measured as it is")
			return s, false, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return s, false, err
		}
	}
}

// startServer starts this binary's serve on a free loopback port and a
// data dir of its own, and waits until it answers /health.
func (b *benchCommand) startServer(ctx context.Context, name string, flags ...string) (*benchServer, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("find a free loopback port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &benchServer{b: b, name: name, addr: addr, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "server.log"),
		exited: make(chan struct{}), open: map[string]bool{}}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := append([]string{"serve", "--addr", addr, "--data-dir", s.dataDir, "--log-format", "json"}, flags...)
	s.cmd = exec.Command(b.exe, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Defaults only: the user's CODEBEAKER_* settings would change what is measured.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CODEBEAKER_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	// A group of its own, so that a Ctrl-C reaches the bench alone and the
	// bench stops the server; and SIGTERM if the bench dies.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", b.exe, err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	b.onCleanup(s.stop)
	b.logf("server %s: %s (log %s)", name, strings.Join(append([]string{"serve"}, flags...), " "), s.logPath)

	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-s.exited:
			log, _ := os.ReadFile(s.logPath)
			if strings.Contains(string(log), "flag provided but not defined: -pool-size") {
				return nil, errNoPoolFlag
			}
			return nil, fmt.Errorf("server %s exited at start (%v): %s", name, s.cmd.ProcessState, lastBytes(log, 2000))
		default:
		}
		if _, err := s.health(ctx); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("server %s did not answer /health within a minute: %w", name, err)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// stop closes the sessions still open, sends SIGTERM, waits, and removes
// any container left with the server's instance label (its pool's, say).
func (s *benchServer) stop(ctx context.Context) {
	s.once.Do(func() {
		ctx := context.WithoutCancel(ctx)
		s.closeLeft(ctx)
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(time.Minute):
			s.b.logf("server %s did not stop within a minute of SIGTERM: killed", s.name)
			s.cmd.Process.Kill()
			<-s.exited
		}
		api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err == nil {
			rmCtx, cancel := context.WithTimeout(ctx, time.Minute)
			err = removeLabelled(rmCtx, api, docker.LabelInstance+"="+docker.Instance(s.dataDir))
			cancel()
			api.Close()
		}
		if err != nil {
			s.b.logf("server %s: %v", s.name, err)
		}
	})
}

// closeLeft closes the sessions a failed or cancelled run left open.
func (s *benchServer) closeLeft(ctx context.Context) {
	s.mu.Lock()
	var sids []string
	for sid := range s.open {
		sids = append(sids, sid)
	}
	s.mu.Unlock()
	if len(sids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		return // the containers go with the instance label
	}
	defer c.Close()
	for _, sid := range sids {
		if c.closeSession(ctx, sid) != nil {
			return
		}
	}
}

var benchHTTP = &http.Client{Timeout: 15 * time.Second}

// health is the server's /health as generic JSON.
func (s *benchServer) health(ctx context.Context) (any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/health", nil)
	if err != nil {
		return nil, err
	}
	resp, err := benchHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h any
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("server %s: /health: %w", s.name, err)
	}
	return h, nil
}

// pythonPool finds, anywhere in a /health body, a "pools" object and in it
// the pool whose language is python; ready is the least any pool has short
// of its size subtracted from python's size, so that ready == size only
// when every pool is full (a refill of any of them loads the machine).
func pythonPool(h any) (ready, size int, found bool) {
	switch v := h.(type) {
	case map[string]any:
		if pools, ok := v["pools"].(map[string]any); ok {
			short := 0
			for _, p := range pools {
				if p, ok := p.(map[string]any); ok {
					r, _ := p["ready"].(float64)
					sz, _ := p["size"].(float64)
					short += max(0, int(sz)-int(r))
					if p["language"] == "python" {
						size, found = int(sz), true
					}
				}
			}
			if found {
				return max(0, size-short), size, true
			}
		}
		for _, x := range v {
			if r, sz, ok := pythonPool(x); ok {
				return r, sz, true
			}
		}
	case []any:
		for _, x := range v {
			if r, sz, ok := pythonPool(x); ok {
				return r, sz, true
			}
		}
	}
	return 0, 0, false
}

// waitPool waits until /health says the python pool, and every other, is
// full.
func (s *benchServer) waitPool(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for {
		h, err := s.health(ctx)
		if err == nil {
			ready, size, found := pythonPool(h)
			if !found {
				return fmt.Errorf("server %s: /health shows no python pool any more", s.name)
			}
			if size > 0 && ready >= size {
				return nil
			}
			last = fmt.Sprintf("%d of %d ready", ready, size)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server %s: the python pool was not full within 2 minutes (%s; see %s)", s.name, last, s.logPath)
		}
		// Each /health asks the engine about every image: not too often.
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// benchClient is one WebSocket connection to a bench server, making one
// call at a time; it closes when the bench's context ends, so a Ctrl-C
// does not wait for an answer.
type benchClient struct {
	*serverSource
	s    *benchServer
	stop func() bool
}

func (s *benchServer) dial(ctx context.Context) (*benchClient, error) {
	src, err := dialServer(ctx, s.addr)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", s.name, err)
	}
	ss := src.(*serverSource)
	return &benchClient{serverSource: ss, s: s, stop: context.AfterFunc(ctx, func() { ss.Close() })}, nil
}

func (c *benchClient) Close() error {
	c.stop()
	return c.serverSource.Close()
}

func (c *benchClient) create(ctx context.Context, language string) (string, error) {
	var res struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call(ctx, "session.create", map[string]any{"language": language}, &res); err != nil {
		return "", fmt.Errorf("server %s: %w", c.s.name, err)
	}
	c.s.mu.Lock()
	c.s.open[res.SessionID] = true
	c.s.mu.Unlock()
	return res.SessionID, nil
}

func (c *benchClient) closeSession(ctx context.Context, sid string) error {
	var res struct{}
	if err := c.call(ctx, "session.close", map[string]any{"sessionId": sid}, &res); err != nil {
		return fmt.Errorf("server %s: %w", c.s.name, err)
	}
	c.s.mu.Lock()
	delete(c.s.open, sid)
	c.s.mu.Unlock()
	return nil
}

// execute runs a command and returns its result, or why it failed.
func (c *benchClient) execute(ctx context.Context, sid string, command map[string]any, result any) error {
	var env struct {
		Success bool            `json:"success"`
		Result  json.RawMessage `json:"result"`
		Error   *string         `json:"error"`
	}
	if err := c.call(ctx, "session.execute", map[string]any{"sessionId": sid, "command": command}, &env); err != nil {
		return fmt.Errorf("server %s: %w", c.s.name, err)
	}
	if !env.Success {
		msg := ""
		if env.Error != nil {
			msg = *env.Error
		}
		return fmt.Errorf("server %s: %s failed: %s (%s)", c.s.name, command["type"], msg, env.Result)
	}
	return json.Unmarshal(env.Result, result)
}

// shell runs execute_shell and checks its stdout.
func (c *benchClient) shell(ctx context.Context, sid, want, name string, args ...string) error {
	var res struct {
		ExitCode int    `json:"exitCode"`
		Stdout   string `json:"stdout"`
	}
	if err := c.execute(ctx, sid, map[string]any{"type": "execute_shell", "commandName": name, "args": args}, &res); err != nil {
		return err
	}
	if res.ExitCode != 0 || res.Stdout != want {
		return fmt.Errorf("server %s: %s %q: exit code %d, stdout %q", c.s.name, name, args, res.ExitCode, res.Stdout)
	}
	return nil
}

// code runs execute_code and checks its stdout (which may come trimmed).
func (c *benchClient) code(ctx context.Context, sid, want, code string) error {
	var out string
	if err := c.execute(ctx, sid, map[string]any{"type": "execute_code", "code": code}, &out); err != nil {
		return err
	}
	if strings.TrimSpace(out) != strings.TrimSpace(want) {
		return fmt.Errorf("server %s: execute_code %q: stdout %q", c.s.name, code, out)
	}
	return nil
}
