package rpc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
	"github.com/codebeaker/codebeaker/sandbox"
)

// Command types, with the aliases clients use.
const (
	cmdWriteFile  = "write_file"
	cmdReadFile   = "read_file"
	cmdShell      = "execute_shell"
	cmdMkdir      = "create_directory"
	cmdCopyFile   = "copy_file"
	cmdDeleteFile = "delete_file"
	cmdList       = "list_directory"
	cmdCode       = "execute_code"
)

var commandAliases = map[string]string{
	"writefile": cmdWriteFile, "readfile": cmdReadFile,
	"executeshell": cmdShell, "shell": cmdShell,
	"createdirectory": cmdMkdir, "createdir": cmdMkdir, "mkdir": cmdMkdir,
	"copyfile": cmdCopyFile, "copy": cmdCopyFile,
	"deletefile": cmdDeleteFile, "delete": cmdDeleteFile,
	"listdirectory": cmdList, "listfiles": cmdList, "listdir": cmdList,
	"executecode": cmdCode, "execute": cmdCode,
}

// command is every field any command type reads; each type checks the ones
// it needs.
type command struct {
	Type             string            `json:"type"`
	Path             *string           `json:"path"`
	Content          *string           `json:"content"`
	Encoding         string            `json:"encoding"`
	Mode             string            `json:"mode"`
	CommandName      string            `json:"commandName"`
	Command          string            `json:"command"`
	Args             []string          `json:"args"`
	WorkingDirectory string            `json:"workingDirectory"`
	SourcePath       string            `json:"sourcePath"`
	Source           string            `json:"source"`
	DestinationPath  string            `json:"destinationPath"`
	Destination      string            `json:"destination"`
	Code             *string           `json:"code"`
	TimeoutMs        *int64            `json:"timeoutMs"`
	Stdin            *string           `json:"stdin"`
	Env              map[string]string `json:"env"`

	// Set by parseCommand, so that a queued command keeps only what it
	// needs: large fields decoded, refused ones dropped.
	data       []byte          // write_file's content, decoded (Content is then nil)
	contentErr error           // why write_file's content cannot be written (Content is then nil)
	stdinBytes int             // stdin's size when over the limit (Stdin is then dropped)
	audit      json.RawMessage // the copy of the command the log keeps
}

// size is about how many bytes the parsed command holds.
func (c *command) size() int64 {
	n := 512 + len(c.data) + len(c.audit) + len(c.Type) + len(c.Encoding) + len(c.Mode) + len(c.CommandName) + len(c.Command) +
		len(c.WorkingDirectory) + len(c.SourcePath) + len(c.Source) + len(c.DestinationPath) + len(c.Destination)
	for _, f := range []*string{c.Path, c.Content, c.Code, c.Stdin} {
		if f != nil {
			n += len(*f)
		}
	}
	for _, a := range c.Args {
		n += 16 + len(a)
	}
	for k, v := range c.Env {
		n += 32 + len(k) + len(v)
	}
	return int64(n)
}

// parseCommand decodes and checks a command object. Errors are for the
// client: the request is wrong, nothing ran. Content that cannot be written
// (over lim.MaxFileBytes, bad base64) and stdin over the limit are found
// here and dropped; the command still runs in its turn and fails then, as
// a command that ran.
func parseCommand(raw json.RawMessage, lim Limits) (*command, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, &invalidParams{`"command" is required: an object with a "type"`}
	}
	if raw[0] != '{' {
		return nil, &invalidParams{`"command" must be an object with a "type"`}
	}
	var c command
	if err := jsonrpc.DecodeParams(raw, &c); err != nil {
		return nil, &invalidParams{"command: " + strings.TrimPrefix(err.Message, "invalid params: ")}
	}
	if c.Type == "" {
		return nil, &invalidParams{`command "type" is required`}
	}
	key := strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(c.Type))
	typ, ok := commandAliases[key]
	if !ok {
		return nil, &invalidParams{fmt.Sprintf("unknown command type %q (known: write_file, read_file, execute_shell, create_directory, copy_file, delete_file, list_directory, execute_code)", c.Type)}
	}
	c.Type = typ
	need := func(name string, ok bool) error {
		if !ok {
			return &invalidParams{fmt.Sprintf("%s needs %q", typ, name)}
		}
		return nil
	}
	switch typ {
	case cmdWriteFile:
		if err := need("path", c.Path != nil); err != nil {
			return nil, err
		}
		if err := need("content", c.Content != nil); err != nil {
			return nil, err
		}
		switch strings.ToLower(c.Mode) {
		case "", "create", "overwrite":
			c.Mode = "Create"
		case "append":
			c.Mode = "Append"
		default:
			return nil, &invalidParams{fmt.Sprintf(`write_file "mode" must be "Create" or "Append", not %q`, c.Mode)}
		}
	case cmdReadFile, cmdMkdir, cmdDeleteFile:
		if err := need("path", c.Path != nil); err != nil {
			return nil, err
		}
	case cmdShell:
		if c.CommandName == "" {
			c.CommandName = c.Command
		}
		if err := need("commandName", c.CommandName != ""); err != nil {
			return nil, err
		}
	case cmdCopyFile:
		c.SourcePath, c.DestinationPath = firstOf(c.SourcePath, c.Source), firstOf(c.DestinationPath, c.Destination)
		if err := need("sourcePath", c.SourcePath != ""); err != nil {
			return nil, err
		}
		if err := need("destinationPath", c.DestinationPath != ""); err != nil {
			return nil, err
		}
	case cmdCode:
		if err := need("code", c.Code != nil); err != nil {
			return nil, err
		}
	}
	switch c.Encoding {
	case "", "utf8", "utf-8", "base64":
	default:
		return nil, &invalidParams{fmt.Sprintf(`"encoding" must be "utf-8" or "base64", not %q`, c.Encoding)}
	}
	if typ == cmdWriteFile {
		size := len(*c.Content)
		if c.Encoding == "base64" {
			c.data, c.contentErr = decodeBase64(*c.Content)
			size, c.Content = len(c.data), nil
		}
		if c.contentErr == nil && int64(size) > lim.MaxFileBytes {
			c.data, c.Content, c.contentErr = nil, nil, fmt.Errorf("content of %d bytes is over the %d-byte file limit", size, lim.MaxFileBytes)
		}
	}
	if c.Stdin != nil && int64(len(*c.Stdin)) > lim.MaxFileBytes {
		c.stdinBytes, c.Stdin = len(*c.Stdin), nil
	}
	c.audit = auditCopy(raw, typ, lim.StoredOutputBytes)
	return &c, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// outcome is what one command produced: the envelope's fields and what the
// event log keeps.
type outcome struct {
	ran     bool // a process ran (its result is in audit)
	success bool
	result  any
	err     string
	audit   eventlog.CommandCompletedData
	// The process's output, as it wrote it: runJob stores it in audit.
	stdout, stderr []byte
}

func failed(err error) outcome { return outcome{err: err.Error()} }

// runCommand runs a parsed command in a live session.
func (s *Service) runCommand(ctx context.Context, l *liveSession, c *command) (outcome, error) {
	lim := s.cfg.Limits
	switch c.Type {
	case cmdWriteFile:
		if c.contentErr != nil {
			return failed(c.contentErr), nil
		}
		data := c.data
		if c.Content != nil {
			data = []byte(*c.Content)
		}
		shown, err := l.ws.WriteFile(*c.Path, data, c.Mode == "Append")
		if err != nil {
			return fileFailure(err)
		}
		return outcome{success: true, result: map[string]any{"path": shown, "bytes": len(data)}}, nil

	case cmdReadFile:
		data, err := l.ws.ReadFile(*c.Path, lim.MaxFileBytes)
		if err != nil {
			return fileFailure(err)
		}
		res := map[string]any{"content": string(data), "bytes": len(data)}
		if c.Encoding == "base64" || !utf8.Valid(data) {
			res["content"], res["encoding"] = base64.StdEncoding.EncodeToString(data), "base64"
		}
		return outcome{success: true, result: res}, nil

	case cmdMkdir:
		shown, err := l.ws.MkdirAll(*c.Path)
		if err != nil {
			return fileFailure(err)
		}
		return outcome{success: true, result: map[string]any{"path": shown}}, nil

	case cmdCopyFile:
		src, dst, n, err := l.ws.Copy(c.SourcePath, c.DestinationPath, lim.MaxFileBytes)
		if err != nil {
			return fileFailure(err)
		}
		return outcome{success: true, result: map[string]any{"sourcePath": src, "destinationPath": dst, "bytes": n}}, nil

	case cmdDeleteFile:
		shown, err := l.ws.Delete(*c.Path)
		if err != nil {
			return fileFailure(err)
		}
		return outcome{success: true, result: map[string]any{"path": shown, "deleted": true}}, nil

	case cmdList:
		p := sandbox.WorkspaceDir
		if c.Path != nil && *c.Path != "" {
			p = *c.Path
		}
		shown, entries, more, err := l.ws.List(p, lim.MaxListEntries)
		if err != nil {
			return fileFailure(err)
		}
		res := map[string]any{"path": shown, "entries": entries}
		if more {
			res["truncated"] = true
		}
		return outcome{success: true, result: res}, nil

	case cmdShell:
		r, o, err := s.runProcess(ctx, l, c, append([]string{c.CommandName}, c.Args...))
		if err != nil || !o.ran {
			return o, err
		}
		result := map[string]any{
			"exitCode": r.ExitCode, "stdout": text(r.Stdout), "stderr": text(r.Stderr), "durationMs": r.Duration.Milliseconds(),
		}
		for k, v := range map[string]bool{"timedOut": r.TimedOut, "oomKilled": r.OOMKilled, "stdoutTruncated": r.StdoutTruncated, "stderrTruncated": r.StderrTruncated} {
			if v {
				result[k] = true
			}
		}
		o.result = result
		return o, nil

	case cmdCode:
		file, cleanup := l.lang.CodeFile(ulid.Make().String())
		if _, err := l.ws.WriteFile(file, []byte(*c.Code), false); err != nil {
			return fileFailure(err)
		}
		defer l.ws.Delete(cleanup)
		r, o, err := s.runProcess(ctx, l, c, l.lang.CodeCommand(file))
		if err != nil || !o.ran {
			return o, err
		}
		o.result = strings.TrimSuffix(text(r.Stdout), "\n")
		if !o.success && len(r.Stderr) > 0 && !r.TimedOut && !r.OOMKilled {
			o.err = strings.TrimSuffix(text(r.Stderr), "\n")
		}
		return o, nil
	}
	return outcome{}, fmt.Errorf("command type %q has no handler", c.Type)
}

// runProcess runs the process of execute_shell or execute_code. An outcome
// that did not run (bad timeout, program not found) is already final.
func (s *Service) runProcess(ctx context.Context, l *liveSession, c *command, args []string) (sandbox.Result, outcome, error) {
	proc, err := s.process(l, c, args)
	if err != nil {
		return sandbox.Result{}, failed(err), nil
	}
	r, err := s.exec(ctx, l, proc)
	if errors.Is(err, sandbox.ErrCannotStart) {
		return r, failed(err), nil
	} else if err != nil {
		return r, outcome{}, err
	}
	return r, processOutcome(r, proc.Timeout), nil
}

// fileFailure turns a workspace error into a failed command when it is the
// client's (missing file, path outside), and into a server error otherwise.
func fileFailure(err error) (outcome, error) {
	var pe *sandbox.PathError
	if errors.As(err, &pe) {
		return failed(pe), nil
	}
	return outcome{}, err
}

func decodeBase64(content string) ([]byte, error) {
	data, err := base64.StdEncoding.DecodeString(content)
	if err != nil {
		return nil, fmt.Errorf("content is not valid base64: %v", err)
	}
	return data, nil
}

// process builds the sandbox process of execute_shell and execute_code.
func (s *Service) process(l *liveSession, c *command, args []string) (sandbox.Process, error) {
	lim := s.cfg.Limits
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return sandbox.Process{}, fmt.Errorf("the program name and arguments cannot contain NUL bytes")
		}
	}
	p := sandbox.Process{Args: args, Dir: sandbox.WorkspaceDir, Timeout: lim.DefaultTimeout, OutputLimit: lim.OutputLimit}
	if c.TimeoutMs != nil {
		// Checked before it is multiplied: 18446744073710 ms wrapped to 448 µs.
		if ms := *c.TimeoutMs; ms <= 0 || ms > lim.MaxTimeout.Milliseconds() {
			return p, fmt.Errorf("timeoutMs must be between 1 and %d", lim.MaxTimeout.Milliseconds())
		}
		p.Timeout = time.Duration(*c.TimeoutMs) * time.Millisecond
	}
	if c.WorkingDirectory != "" {
		dir, err := l.ws.CheckDir(c.WorkingDirectory)
		if err != nil {
			return p, fmt.Errorf("working directory: %w", err)
		}
		p.Dir = dir
	}
	if c.stdinBytes > 0 {
		return p, fmt.Errorf("stdin of %d bytes is over the %d-byte limit", c.stdinBytes, lim.MaxFileBytes)
	}
	if c.Stdin != nil {
		p.Stdin = []byte(*c.Stdin)
	}
	if len(c.Env) > 256 {
		return p, fmt.Errorf("env has %d variables; at most 256", len(c.Env))
	}
	for k, v := range c.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return p, fmt.Errorf("env variable %q is not a valid name", k)
		}
		p.Env = append(p.Env, k+"="+v)
	}
	return p, nil
}

// processOutcome judges a process result and fills in what the log keeps.
func processOutcome(r sandbox.Result, timeout time.Duration) outcome {
	o := outcome{ran: true, success: r.ExitCode == 0 && !r.TimedOut}
	switch {
	case r.TimedOut:
		o.err = fmt.Sprintf("timed out after %s: the command and everything it started were killed", timeout)
	case r.OOMKilled:
		o.err = "killed: the session's memory limit was reached (out of memory)"
	case r.ExitCode != 0:
		o.err = fmt.Sprintf("exit code %d", r.ExitCode)
	}
	exit := r.ExitCode
	o.audit = eventlog.CommandCompletedData{
		ExitCode: &exit, StdoutBytes: r.StdoutBytes, StderrBytes: r.StderrBytes,
		StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated, TimedOut: r.TimedOut, OOMKilled: r.OOMKilled,
	}
	o.stdout, o.stderr = r.Stdout, r.Stderr
	return o
}

// text makes output safe to put in a JSON string: invalid UTF-8 is replaced.
func text(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }
