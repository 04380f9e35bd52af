package migrations_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/migrations"
	"github.com/codebeaker/codebeaker/projection"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/layout1.projection.json from the current code")

const (
	layout1File       = "../testdata/layout1.db"
	layout1Projection = "../testdata/layout1.projection.json"
)

// TestLayout1File opens a copy of the data file the first released layout
// wrote (testdata/README.md), migrates it, verifies its new hash chain and
// replays it to the projection the layout-1 code computed from it.
func TestLayout1File(t *testing.T) {
	path := filepath.Join(t.TempDir(), eventlog.FileName)
	copyFile(t, layout1File, path)

	// As committed: layout 1, no chain, read as it is by a read-only log.
	before := readOnlyEvents(t, path)
	if len(before) == 0 {
		t.Fatal("testdata/layout1.db holds no events")
	}
	for _, e := range before {
		if e.Hash != "" {
			t.Fatalf("event %d of the layout-1 file has a hash", e.Seq)
		}
	}
	if _, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{}); !errors.Is(err, eventlog.ErrNoChain) {
		t.Fatalf("Verify of the layout-1 file = %v, want ErrNoChain", err)
	}

	// Opening it for writing migrates it.
	l, err := eventlog.Open(path, eventlog.Options{})
	if err != nil {
		t.Fatalf("open the layout-1 file: %v", err)
	}
	p, err := projection.Rebuild(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, path)
	v, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify the migrated file: %v", err)
	}
	if v.Events != uint64(len(before)) {
		t.Errorf("verified %d events, the file had %d", v.Events, len(before))
	}

	// The events are the ones layout 1 stored, now with hashes.
	after := readOnlyEvents(t, path)
	if len(after) != len(before) {
		t.Fatalf("%d events after the migration, %d before", len(after), len(before))
	}
	if head := after[len(after)-1].Hash; v.Head.String() != head {
		t.Errorf("verified head %s is not the last event's hash %s", v.Head, head)
	}
	for i := range after {
		if after[i].Hash == "" {
			t.Errorf("event %d has no hash after the migration", after[i].Seq)
		}
		after[i].Hash = ""
		a, _ := json.Marshal(after[i])
		b, _ := json.Marshal(before[i])
		if !bytes.Equal(a, b) {
			t.Errorf("event %d changed in the migration:\nbefore %s\nafter  %s", i+1, b, a)
		}
	}

	// Replayed, it gives the projection the layout-1 code computed.
	got, err := json.MarshalIndent(projectionFile{LastSeq: p.LastSeq(), Sessions: p.List()}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateGolden {
		if err := os.WriteFile(layout1Projection, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(layout1Projection)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("projection of the migrated file differs from %s (regenerate with -update only if the projection's shape changed on purpose):\n got %s\nwant %s", layout1Projection, got, want)
	}

	// The chain goes on from the migrated head.
	l, err = eventlog.Open(path, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), eventlog.Record{SessionID: "01jfgo0000000000000000000b", Type: eventlog.SessionClosing,
		Data: eventlog.SessionClosingData{Reason: eventlog.ReasonClient}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if v, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{}); err != nil || v.Events != uint64(len(before))+1 {
		t.Errorf("verify after an append to the migrated file = %+v, %v", v, err)
	}
}

func readOnlyEvents(t *testing.T, path string) []eventlog.Event {
	t.Helper()
	l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	events, err := l.Events(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func checkLayout(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := migrations.Version(tx); v != migrations.LayoutVersion() {
			t.Errorf("migrated file has layout %d, want %d", v, migrations.LayoutVersion())
		}
		return nil
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// projectionFile is the golden projection of testdata/layout1.db.
type projectionFile struct {
	LastSeq  uint64               `json:"lastSeq"`
	Sessions []projection.Session `json:"sessions"`
}
