package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `codebeaker runs untrusted code in per-session sandboxes for WebSocket JSON-RPC clients.

Usage:
  codebeaker serve [flags]    run the service (codebeaker serve --help lists its flags)
  codebeaker audit COMMAND    verify, replay, export or compact the event log (codebeaker audit --help)
  codebeaker bench [flags]    time sessions and commands against raw Docker and Deno (codebeaker bench --help)
  codebeaker version          print the version

Every flag can also be set by an environment variable: --data-dir is
CODEBEAKER_DATA_DIR, --addr is CODEBEAKER_ADDR, and so on. A flag on the
command line wins over the variable.
`

// defaultDataDir is the default of --data-dir, in serve and audit.
const defaultDataDir = "data"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "codebeaker:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return (&serveCommand{stdout: stdout, stderr: stderr}).Run(ctx, args[1:])
	case "audit":
		return auditCommand(stdout, stderr).Run(ctx, args[1:])
	case "bench":
		return (&benchCommand{stdout: stdout, stderr: stderr}).Run(ctx, args[1:])
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "codebeaker", version)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// signalContext ends its context at the first SIGINT or SIGTERM, so work
// can drain; a second signal exits at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-signals
		fmt.Fprintf(os.Stderr, "codebeaker: %s: shutting down gracefully (send it again to exit at once)\n", sig)
		cancel()
		<-signals
		os.Exit(130)
	}()
	return ctx, func() { signal.Stop(signals); cancel() }
}

// envFlags gives every flag of fs the value of its environment variable
// (CODEBEAKER_ and the flag's name in upper case, dashes as underscores),
// before the command line is parsed, so the command line wins.
func envFlags(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func envName(flagName string) string {
	return "CODEBEAKER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
