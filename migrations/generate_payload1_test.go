//go:build generate

// Built only with -tags generate: it writes testdata, it does not test.

package migrations_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/codebeaker/codebeaker/migrations"
	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
	"github.com/codebeaker/codebeaker/sandbox/sandboxtest"
)

// envGeneratePayload1 names the folder TestGeneratePayload1 writes
// payload1.jsonl to. testdata/README.md gives the exact command: it must
// run against the code of payload version 1, in a checkout of that commit.
const envGeneratePayload1 = "CODEBEAKER_GENERATE_PAYLOAD1"

// TestGeneratePayload1 runs a real service on a real Docker engine, a
// python session whose programs print bytes that are not UTF-8, and writes
// every event of its log, as stored, as JSON Lines. It refuses to run on
// code whose payload version is not 1.
func TestGeneratePayload1(t *testing.T) {
	dir := os.Getenv(envGeneratePayload1)
	if dir == "" {
		t.Fatal("set " + envGeneratePayload1 + "=DIR to write DIR/payload1.jsonl (see testdata/README.md)")
	}
	if migrations.PayloadVersion != 1 {
		t.Fatalf("this code writes payload version %d: run the generator on the payload-1 commit as testdata/README.md says", migrations.PayloadVersion)
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	rt, err := docker.New(docker.Options{Instance: docker.Instance(dataDir), Agent: sandboxtest.AgentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := rpc.Open(ctx, rpc.Config{DataDir: dataDir, Runtimes: map[string]sandbox.Runtime{sandbox.KindDocker: rt},
		Limits: rpc.DefaultLimits(), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	sess, err := svc.Create(ctx, rpc.CreateParams{Language: "python"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		// Not UTF-8 on both streams, as a shell command and as code.
		`{"type":"execute_shell","commandName":"python3","args":["-c","import sys; sys.stdout.buffer.write(b'\\xff\\xfe ok\\x80'); sys.stderr.buffer.write(b'caf\\xc3\\xa9 \\xe2\\x82')"]}`,
		`{"type":"execute_code","code":"import sys; sys.stdout.buffer.write(b'\\xff\\xfe ok\\x80')"}`,
		// UTF-8, a real U+FFFD among it.
		`{"type":"execute_shell","commandName":"python3","args":["-c","print('caf\\u00e9 \\ufffd')"]}`,
	} {
		env, err := svc.Execute(ctx, sess.ID, json.RawMessage(cmd))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v %s", cmd, env, env.Result)
	}
	if err := svc.CloseSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	events, err := svc.Log().Events(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "payload1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	enc := json.NewEncoder(f)
	for _, e := range events {
		if e.Version != 1 {
			t.Fatalf("event %d has payload version %d", e.Seq, e.Version)
		}
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d events to %s", len(events), f.Name())
}
