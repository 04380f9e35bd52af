// Command codebeaker-agent is the init of every Docker sandbox: the server
// bind-mounts it read-only into each container as its PID 1, and asks it,
// over a Unix socket, to run, feed and kill the session's commands. See
// package sandbox/agent.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/codebeaker/codebeaker/sandbox/agent"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == agent.ShimArg {
		os.Exit(agent.RunShim())
	}
	var cfg agent.Config
	fs := flag.NewFlagSet("codebeaker-agent", flag.ExitOnError)
	fs.StringVar(&cfg.Socket, "socket", "/.codebeaker/run/agent.sock", "Unix socket `path` to listen on")
	fs.IntVar(&cfg.UID, "uid", 0, "`uid` that runs every command")
	fs.IntVar(&cfg.GID, "gid", 0, "`gid` that runs every command")
	fs.StringVar(&cfg.Workdir, "workdir", "/workspace", "working `folder` of commands that name none")
	fs.BoolVar(&cfg.SetHome, "set-home", false, "set HOME to the uid's home in /etc/passwd (the image sets none)")
	fs.Parse(os.Args[1:])
	cfg.Build = version
	if cfg.UID == 0 || cfg.GID == 0 {
		fmt.Fprintln(os.Stderr, "codebeaker-agent: --uid and --gid must name the unprivileged sandbox user")
		os.Exit(2)
	}
	if err := agent.Serve(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "codebeaker-agent:", err)
		os.Exit(1)
	}
}
