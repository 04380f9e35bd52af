package audit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
)

const auditUsage = `Usage: codebeaker audit COMMAND [flags]

Reads the event log the way an auditor needs it, from the data file alone.

  verify   --data-dir DIR [--anchor SEQ:HASH]...
           check the hash chain of every event; prints "ok: N events, head
           hash H", or the first event that was changed, removed or
           reordered (and exits 1)
  replay   (--data-dir DIR | --server URL) [--session ID] [--until SEQ|TIME]
           [--format text|json]
           rebuild the sessions from the log up to a point: one session's
           timeline and state, or every open session as session.list showed
           them then
  export   (--data-dir DIR | --server URL) [--session ID] [--after SEQ]
           write events as JSON Lines to stdout
  compact  --data-dir DIR --older-than AGE
           drop the stored output of commands of closed sessions older than
           AGE (30d, 12h), keeping its SHA-256; the chain still verifies

The data file is opened read-only (compact excepted). A running server
holds it: stop it, or read through it with --server ws://HOST:PORT/ws/jsonrpc
(replay and export). --data-dir defaults to $CODEBEAKER_DATA_DIR, or "data".
`

// Command is `codebeaker audit`.
type Command struct {
	Stdout, Stderr io.Writer
	// DataDir is the default of --data-dir.
	DataDir string
	// DialServer connects to a running server for --server URL; nil
	// means --server is refused.
	DialServer func(ctx context.Context, url string) (Source, error)
}

// auditLockTimeout is how long audit commands wait for the data file.
const auditLockTimeout = time.Second

// Run runs the audit command args name (args[0]) with its flags.
func (c *Command) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.Stderr, auditUsage)
		return errors.New("audit: no command given")
	}
	switch args[0] {
	case "verify":
		return c.verify(ctx, args[1:])
	case "replay":
		return c.replay(ctx, args[1:])
	case "export":
		return c.export(ctx, args[1:])
	case "compact":
		return c.compact(ctx, args[1:])
	case "help", "-h", "--help", "-help":
		fmt.Fprint(c.Stdout, auditUsage)
		return nil
	}
	fmt.Fprint(c.Stderr, auditUsage)
	return fmt.Errorf("audit: unknown command %q", args[0])
}

// flagSet makes the flag set of one audit command.
func (c *Command) flagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("codebeaker audit "+name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: codebeaker audit %s %s\n\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", fs.Name(), fs.Args())
	}
	return nil
}

func (c *Command) dataDirFlag(fs *flag.FlagSet) *string {
	return fs.String("data-dir", c.DataDir, "`folder` holding the event log (events.db)")
}

func logPath(dataDir string) string { return filepath.Join(dataDir, eventlog.FileName) }

// inUse explains a data file a running server holds.
func inUse(err error, path, remedy string) error {
	if !errors.Is(err, eventlog.ErrLocked) {
		return err
	}
	who := "a running codebeaker server"
	if pid := lockHolder(path); pid > 0 {
		who += fmt.Sprintf(" (pid %d)", pid)
	}
	return fmt.Errorf("the data file %s is in use by %s: %s", path, who, remedy)
}

// until is the point in the log a replay stops at: after event Seq, or
// after the last event at or before Time; the zero value is the end.
type until struct {
	seq  uint64
	time time.Time
}

func (u *until) String() string {
	switch {
	case u.seq > 0:
		return strconv.FormatUint(u.seq, 10)
	case !u.time.IsZero():
		return u.time.Format(time.RFC3339Nano)
	}
	return ""
}

func (u *until) Set(s string) error {
	if seq, err := strconv.ParseUint(s, 10, 64); err == nil {
		if seq == 0 {
			return errors.New("a seq starts at 1")
		}
		u.seq = seq
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("%q is neither a seq nor an RFC 3339 time (2026-11-27T12:00:00Z)", s)
	}
	u.time = t
	return nil
}

// past reports whether e comes after the point.
func (u until) past(e eventlog.Event) bool {
	return (u.seq > 0 && e.Seq > u.seq) || (!u.time.IsZero() && e.Time.After(u.time))
}

// parseAge reads a duration that may also be in days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not an age such as 30d, 12h or 90m", s)
	}
	return d, nil
}
