package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/chain"
)

// anchors is the repeatable --anchor SEQ:HASH flag.
type anchors map[uint64]chain.Hash

func (a anchors) String() string {
	var out []string
	for seq, h := range a {
		out = append(out, fmt.Sprintf("%d:%s", seq, h))
	}
	return strings.Join(out, ",")
}

func (a anchors) Set(s string) error {
	seqText, hashText, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if !ok || err != nil || seq == 0 {
		return fmt.Errorf("%q is not SEQ:HASH", s)
	}
	h, err := chain.ParseHash(hashText)
	if err != nil {
		return err
	}
	a[seq] = h
	return nil
}

// verify is `codebeaker audit verify`.
func (c *Command) verify(ctx context.Context, args []string) error {
	fs := c.flagSet("verify", "--data-dir DIR [--anchor SEQ:HASH]...")
	dataDir := c.dataDirFlag(fs)
	anchored := anchors{}
	fs.Var(anchored, "anchor", "`SEQ:HASH` an earlier verify printed (kept outside the data dir): event SEQ must still have HASH; repeatable")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := logPath(*dataDir)
	v, err := eventlog.Verify(ctx, path, eventlog.VerifyOptions{LockTimeout: auditLockTimeout, Anchors: anchored})
	var problem *eventlog.Problem
	switch {
	case errors.As(err, &problem):
		fmt.Fprintf(c.Stdout, "FAILED: %s\n", strings.TrimPrefix(problem.Error(), "eventlog: "))
		return fmt.Errorf("audit verify: the event log %s does not verify", path)
	case err != nil:
		return inUse(err, path, "stop it to verify the file (verify reads the file itself, not through the server)")
	}
	fmt.Fprintf(c.Stdout, "ok: %d events, head hash %s\n", v.Events, v.Head)
	return nil
}
