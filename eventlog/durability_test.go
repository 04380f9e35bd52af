package eventlog_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
)

const (
	envChild     = "CODEBEAKER_EVENTLOG_DURABILITY_CHILD"
	envChildPath = "CODEBEAKER_EVENTLOG_DURABILITY_PATH"
)

// TestDurableBeforeAck runs appenders in a child process that prints every
// seq as soon as Append returns it, kills the child with SIGKILL in full
// flight, and checks that every seq it printed is in the log.
//
// SIGKILL loses what the process held, not what the kernel did: this shows
// that nothing is acknowledged before it is written. That it is also fsynced
// before is TestNeverNoSync's part.
func TestDurableBeforeAck(t *testing.T) {
	if os.Getenv(envChild) == "1" {
		durabilityChild(os.Getenv(envChildPath))
		return
	}
	path := filepath.Join(t.TempDir(), eventlog.FileName)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDurableBeforeAck$")
	cmd.Env = append(os.Environ(), envChild+"=1", envChildPath+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	acked := map[uint64]string{} // seq -> session, as the child printed them
	lines := bufio.NewScanner(stdout)
	read := func() bool {
		if !lines.Scan() {
			return false
		}
		var seq uint64
		var session string
		if _, err := fmt.Sscanf(lines.Text(), "acked %d %s", &seq, &session); err == nil {
			acked[seq] = session
		}
		return true
	}
	const beforeKill = 200
	for len(acked) < beforeKill && read() {
	}
	if len(acked) < beforeKill {
		cmd.Wait()
		t.Fatalf("the child stopped after %d acknowledged appends; its stderr:\n%s", len(acked), stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// What the child printed before it died was acknowledged too.
	for read() {
	}
	cmd.Wait()

	l := eventlogtest.OpenWith(t, path, eventlog.Options{})
	last, err := l.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	var missing []uint64
	for seq, session := range acked {
		if seq > last {
			missing = append(missing, seq)
			continue
		}
		events, err := l.SessionEvents(session, seq-1, 1)
		if err != nil || len(events) != 1 || events[0].Seq != seq {
			t.Errorf("acknowledged seq %d of %s is not in its session's history: %v, %v", seq, session, events, err)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d acknowledged seqs are not in the log (it ends at %d): %v", len(missing), last, missing)
	}
	t.Logf("the child had %d appends acknowledged; the log holds %d events", len(acked), last)
}

// durabilityChild appends from several goroutines until it is killed.
func durabilityChild(path string) {
	l, err := eventlog.Open(path, eventlog.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex // one line per write
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			session := fmt.Sprintf("child-%d", w)
			for i := 0; ; i++ {
				events, err := l.Append(context.Background(), eventlog.Record{SessionID: session, Type: eventlog.SessionClosing,
					Data: eventlog.SessionClosingData{Reason: fmt.Sprint(i)}})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "acked %d %s\n", events[0].Seq, session)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
