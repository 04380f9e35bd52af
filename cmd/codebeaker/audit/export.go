package audit

import (
	"bufio"
	"context"
	"encoding/json"

	"github.com/codebeaker/codebeaker/eventlog"
)

// export is `codebeaker audit export`: events as JSON Lines, one stored
// envelope (with its hash, the payload in the current shape) a line.
func (c *Command) export(ctx context.Context, args []string) error {
	fs := c.flagSet("export", "(--data-dir DIR | --server URL) [--session ID] [--after SEQ]")
	source := c.addSourceFlags(fs)
	session := fs.String("session", "", "export only this session's events")
	after := fs.Uint64("after", 0, "export the events after this `seq`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	src, err := source.open(ctx, fs)
	if err != nil {
		return err
	}
	defer src.Close()
	out := bufio.NewWriterSize(c.Stdout, 64<<10)
	enc := json.NewEncoder(out)
	if err := src.each(ctx, *session, *after, func(e eventlog.Event) error { return enc.Encode(e) }); err != nil {
		out.Flush()
		return err
	}
	return out.Flush()
}
