package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/deno"
	"github.com/codebeaker/codebeaker/sandbox/docker"
)

// maxHeaderBytes bounds an HTTP request head, the upgrade request
// included (cookies and all).
const maxHeaderBytes = 32 << 10

// serveCommand is `codebeaker serve`.
type serveCommand struct {
	stdout, stderr io.Writer

	addr            string
	dataDir         string
	logLevel        string
	logFormat       string
	ws              ws.Options
	shutdownTimeout time.Duration
	reconcileEvery  time.Duration
	allowedImages   string
	agent           string
	poolSize        int
	limits          rpc.Limits
}

func (c *serveCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("codebeaker serve", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	c.limits, c.ws = rpc.DefaultLimits(), ws.DefaultOptions()
	l, o := &c.limits, &c.ws
	fs.StringVar(&c.addr, "addr", "localhost:5000", "`host:port` to listen on for /health and /ws/jsonrpc")
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir, "`folder` for the event log and session workspaces")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "auto", "log `format`: json, console, or auto (console on a terminal, json otherwise)")
	fs.Int64Var(&o.MaxMessageBytes, "max-message-bytes", o.MaxMessageBytes, "largest JSON-RPC message accepted, in `bytes`")
	fs.IntVar(&o.MaxReplyBytes, "max-reply-bytes", o.MaxReplyBytes, "largest reply sent, in `bytes`; a larger one becomes an error")
	fs.Int64Var(&o.MaxRequestBytesInFlight, "max-request-bytes-in-flight", o.MaxRequestBytesInFlight,
		"`bytes` of requests held at once, across connections: frames being read and the commands they carry while queued or running; a frame past it gets -32004")
	fs.IntVar(&o.MaxConnections, "max-connections", o.MaxConnections, "WebSocket connections open at once")
	fs.DurationVar(&o.WriteTimeout, "write-timeout", o.WriteTimeout, "how long a reply may take to be written before the connection is dropped")
	fs.DurationVar(&o.IdleTimeout, "idle-connection-timeout", o.IdleTimeout, "a connection with no request for this long is closed")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long running commands may finish after a shutdown signal")
	fs.DurationVar(&c.reconcileEvery, "reconcile-interval", rpc.DefaultReconcileInterval, "how often sandboxes are matched against the open sessions")
	fs.StringVar(&c.allowedImages, "allowed-images", "", "comma-separated `patterns` (path.Match, on an image's name with or without its tag) of images dockerImage may name besides the CodeBeaker runtime images")
	fs.StringVar(&c.agent, "agent", "", "`path` of the codebeaker-agent binary that runs in every container (default: beside this executable, else in PATH); it is copied into the data dir, where the engine finds it")
	fs.IntVar(&c.poolSize, "pool-size", 1, "started sandboxes kept warm per language (and per dockerImage in use, for the 4 used last) for session.create to take; 0 keeps none")
	fs.IntVar(&l.MaxSessions, "max-sessions", l.MaxSessions, "open sessions allowed at once")
	fs.IntVar(&l.MaxQueuedCommands, "max-queued-commands", l.MaxQueuedCommands, "commands that may wait in one session")
	fs.DurationVar(&l.DefaultTimeout, "default-timeout", l.DefaultTimeout, "timeout of execute_shell and execute_code without timeoutMs")
	fs.DurationVar(&l.MaxTimeout, "max-timeout", l.MaxTimeout, "the longest timeoutMs a command may ask for")
	fs.IntVar(&l.OutputLimit, "output-limit", l.OutputLimit, "`bytes` kept of each of stdout and stderr per command")
	fs.Int64Var(&l.MaxFileBytes, "max-file-bytes", l.MaxFileBytes, "largest file written or read by one command, in `bytes`")
	fs.IntVar(&l.StoredOutputBytes, "stored-output-bytes", l.StoredOutputBytes, "`bytes` of each output stream kept in the event log per command")
	fs.IntVar(&l.MaxMemoryMB, "max-memory-mb", l.MaxMemoryMB, "the largest memoryLimitMB a session may ask for")
	fs.IntVar(&l.PidsLimit, "pids-limit", l.PidsLimit, "processes allowed in one sandbox")
	fs.IntVar(&l.MaxProcesses, "max-processes", l.MaxProcesses, "background processes (process.start) running at once in one session")
	fs.IntVar(&l.MaxPTYs, "max-ptys", l.MaxPTYs, "background processes on a terminal (pty) running at once in one session")
	fs.IntVar(&l.ProcessOutputBytes, "process-output-bytes", l.ProcessOutputBytes, "newest `bytes` of each of a background process's stdout and stderr kept for process.read and process.subscribe; older ones are dropped")
	fs.Float64Var(&l.DefaultIdleMinutes, "default-idle-minutes", l.DefaultIdleMinutes, "idle timeout of sessions that do not set idleTimeoutMinutes")
	fs.Float64Var(&l.DefaultLifetimeMins, "default-lifetime-minutes", l.DefaultLifetimeMins, "lifetime of sessions that do not set maxLifetimeMinutes")
	fs.IntVar(&l.DefaultMemoryMB, "default-memory-mb", l.DefaultMemoryMB, "memory limit of sessions that do not set memoryLimitMB")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: codebeaker serve [flags]\n\nRuns the service. Each flag may also be set by the environment variable shown.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(fs.Output(), "  --%s %s\t(env %s, default %q)\n    \t%s\n", f.Name, name, envName(f.Name), f.DefValue, usage)
		})
	}
	return fs
}

// Run parses args and serves until ctx ends.
func (c *serveCommand) Run(ctx context.Context, args []string) error {
	fs := c.flags()
	if err := envFlags(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	if c.poolSize < 0 {
		return errors.New("--pool-size must be 0 or more")
	}
	if c.ws.WriteTimeout <= 0 || c.ws.IdleTimeout <= 0 {
		return errors.New("--write-timeout and --idle-connection-timeout must be longer than 0")
	}
	if min := ws.DecodeCopies * c.ws.MaxMessageBytes; c.ws.MaxRequestBytesInFlight < min {
		return fmt.Errorf("--max-request-bytes-in-flight (%d) must be at least %d times --max-message-bytes (%d): a message of the largest size counts that much until it is decoded", c.ws.MaxRequestBytesInFlight, ws.DecodeCopies, c.ws.MaxMessageBytes)
	}
	logger, err := newLogger(c.stderr, c.logLevel, c.logFormat)
	if err != nil {
		return err
	}
	if err := sandbox.CheckHostIDs(); err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}

	agentPath, err := c.installAgent()
	if err != nil {
		return err
	}
	dockerRuntime, err := docker.New(docker.Options{Instance: docker.Instance(c.dataDir), Agent: agentPath})
	if err != nil {
		return err
	}
	defer dockerRuntime.Close()
	if err := dockerRuntime.AllowImages(splitList(c.allowedImages)); err != nil {
		return fmt.Errorf("--allowed-images: %w", err)
	}
	if err := dockerRuntime.Ping(ctx); err != nil {
		logger.Warn().Err(err).Msg("docker engine not reachable: Docker sessions fail until it is")
	}
	denoRuntime := deno.New(deno.Options{})
	if h := denoRuntime.Health(ctx); !h.Available {
		logger.Warn().Str("error", h.Error).Msg("Deno sessions fail until Deno and bubblewrap are installed")
	} else {
		logger.Info().Str("memoryLimit", denoRuntime.MemoryLimit()).Msg("Deno sessions available")
	}
	svc, err := rpc.Open(ctx, rpc.Config{
		DataDir:  c.dataDir,
		Runtimes: map[string]sandbox.Runtime{sandbox.KindDocker: dockerRuntime, sandbox.KindDeno: denoRuntime},
		Limits:   c.limits,
		Logger:   logger,

		ReconcileInterval: c.reconcileEvery,
		PoolSize:          c.poolSize,
	})
	if err != nil {
		return err
	}
	c.ws.Logger = logger
	server := ws.NewServer(svc, c.ws)
	mux := http.NewServeMux()
	mux.Handle("GET /health", rpc.HealthHandler(svc))
	mux.Handle("GET /ws/jsonrpc", server)
	listener, err := net.Listen("tcp", c.addr)
	if err != nil {
		svc.Close(context.Background())
		return fmt.Errorf("listen on %s: %w", c.addr, err)
	}
	httpServer := &http.Server{
		Handler: mux,
		// A client must send its request head within 10 s, and may keep an
		// HTTP connection open between requests only as long as an idle
		// WebSocket.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       c.ws.IdleTimeout,
		// A WebSocket upgrade's head is well under 8 KB; net/http's default
		// of 1 MB let 300 unfinished heads hold 450 MB.
		MaxHeaderBytes: maxHeaderBytes,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpServer.Serve(listener) }()
	logger.Info().Str("addr", listener.Addr().String()).Str("dataDir", c.dataDir).Msg("serving")

	select {
	case err := <-serveErr:
		svc.Close(context.Background())
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info().Dur("deadline", c.shutdownTimeout).Msg("shutting down: no new connections; running commands may finish")
	drain, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	httpServer.Shutdown(drain)
	closeErr := svc.Close(drain)
	server.CloseConnections()
	if closeErr != nil {
		return fmt.Errorf("close the service: %w", closeErr)
	}
	logger.Info().Msg("stopped")
	return nil
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: %w", level, err)
	}
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	case "json":
	default:
		return zerolog.Logger{}, errors.New(`--log-format must be json, console or auto`)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var items []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// installAgent copies the agent binary into the data dir, whose path the
// engine resolves on its host as it does the workspaces', and returns the
// copy's absolute path.
func (c *serveCommand) installAgent() (string, error) {
	src := c.agent
	if src == "" {
		var err error
		if src, err = docker.FindAgent(); err != nil {
			return "", err
		}
	}
	dataDir, err := filepath.Abs(c.dataDir)
	if err != nil {
		return "", err
	}
	if err := sandbox.PrivateDirs(dataDir); err != nil {
		return "", err
	}
	path, err := docker.InstallAgent(src, filepath.Join(dataDir, "agent"))
	if err != nil {
		return "", fmt.Errorf("--agent: %w", err)
	}
	return path, nil
}
