package audit

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/codebeaker/codebeaker/eventlog"
)

// Source is a running server's log, read a page at a time (session.history).
type Source interface {
	// Page returns the events after afterSeq, of one session or, for "",
	// of the whole log, in order, and whether more follow.
	Page(ctx context.Context, sessionID string, afterSeq uint64) (events []eventlog.Event, more bool, err error)
	Close() error
}

// eventSource is where replay and export read events: the data file, or a
// running server's session.history.
type eventSource interface {
	// each calls fn with the events after afterSeq, of one session or, for
	// "", of the whole log, in order, until fn returns errStop (each then
	// returns nil), another error, or the events end.
	each(ctx context.Context, sessionID string, afterSeq uint64, fn func(eventlog.Event) error) error
	Close() error
}

var errStop = errors.New("stop")

// sourceFlags are the flags that choose an eventSource.
type sourceFlags struct {
	dataDir *string
	server  *string
	dial    func(ctx context.Context, url string) (Source, error)
}

func (c *Command) addSourceFlags(fs *flag.FlagSet) sourceFlags {
	return sourceFlags{
		dataDir: c.dataDirFlag(fs),
		server:  fs.String("server", "", "read through a running server at this `URL` (ws://HOST:PORT/ws/jsonrpc) instead of the data file"),
		dial:    c.DialServer,
	}
}

func (f sourceFlags) open(ctx context.Context, fs *flag.FlagSet) (eventSource, error) {
	if *f.server != "" {
		dataDirSet := false
		fs.Visit(func(fl *flag.Flag) { dataDirSet = dataDirSet || fl.Name == "data-dir" })
		if dataDirSet {
			return nil, errors.New("give --data-dir or --server, not both")
		}
		if f.dial == nil {
			return nil, errors.New("--server: this build cannot read through a server")
		}
		src, err := f.dial(ctx, *f.server)
		if err != nil {
			return nil, err
		}
		return serverSource{src}, nil
	}
	path := logPath(*f.dataDir)
	l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: auditLockTimeout})
	if err != nil {
		return nil, inUse(err, path, "stop it, or read through it with --server ws://HOST:PORT/ws/jsonrpc")
	}
	return localSource{l}, nil
}

// localSource reads the data file, read-only.
type localSource struct{ log *eventlog.Log }

func (s localSource) Close() error { return s.log.Close() }

func (s localSource) each(ctx context.Context, sessionID string, afterSeq uint64, fn func(eventlog.Event) error) error {
	var err error
	if sessionID == "" {
		err = s.log.Scan(afterSeq, func(e eventlog.Event) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(e)
		})
	} else {
		if ok, herr := s.log.HasSession(sessionID); herr != nil || !ok {
			return errors.Join(herr, fmt.Errorf("no session %q in the log", sessionID))
		}
		err = pages(ctx, afterSeq, fn, func(after uint64) ([]eventlog.Event, bool, error) {
			events, err := s.log.SessionEvents(sessionID, after, 1000)
			return events, len(events) == 1000, err
		})
	}
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// pages calls fn with the events of the pages next returns.
func pages(ctx context.Context, after uint64, fn func(eventlog.Event) error, next func(after uint64) ([]eventlog.Event, bool, error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		events, more, err := next(after)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		if !more || len(events) == 0 {
			return nil
		}
	}
}

// serverSource reads through a running server, a page at a time.
type serverSource struct{ Source }

func (s serverSource) each(ctx context.Context, sessionID string, afterSeq uint64, fn func(eventlog.Event) error) error {
	err := pages(ctx, afterSeq, fn, func(after uint64) ([]eventlog.Event, bool, error) {
		return s.Page(ctx, sessionID, after)
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}
