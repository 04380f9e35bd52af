// Command codebeaker runs the CodeBeaker service and its tools: `serve`
// runs the service (serve.go), `audit` reads the event log for auditors
// (package audit; audit_server.go is its WebSocket client for --server),
// `bench` times servers it starts against raw Docker and Deno (bench.go,
// bench_floors.go).
// Each subcommand is a type with Run(ctx, args), parsing its own flag set;
// every flag can also come from a CODEBEAKER_* environment variable. The
// first SIGINT or SIGTERM drains, the second exits.
package main
