package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
)

// compact is `codebeaker audit compact`: the log's retention, run with the
// server stopped.
func (c *Command) compact(ctx context.Context, args []string) error {
	fs := c.flagSet("compact", "--data-dir DIR --older-than AGE")
	dataDir := c.dataDirFlag(fs)
	olderThan := fs.String("older-than", "", "drop the output of commands that ended longer than this `age` ago (30d, 12h, 90m)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *olderThan == "" {
		return errors.New("audit compact: --older-than is required")
	}
	age, err := parseAge(*olderThan)
	if err != nil {
		return fmt.Errorf("--older-than: %w", err)
	}
	path := logPath(*dataDir)
	l, err := eventlog.Open(path, eventlog.Options{LockTimeout: auditLockTimeout})
	if err != nil {
		return inUse(err, path, "stop it first: compaction rewrites the file")
	}
	before := time.Now().Add(-age)
	res, err := l.CompactOutput(ctx, before)
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "compacted the stored output of %d command results of %d closed sessions, ended before %s (events %+d bytes)\n",
		res.Events, res.Sessions, before.UTC().Format(time.RFC3339), -res.Bytes)
	v, err := eventlog.Verify(ctx, path, eventlog.VerifyOptions{LockTimeout: auditLockTimeout})
	if err != nil {
		return fmt.Errorf("audit compact: the log does not verify after compaction: %w", err)
	}
	fmt.Fprintf(c.Stdout, "ok: %d events, head hash %s\n", v.Events, v.Head)
	return nil
}
