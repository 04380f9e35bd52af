package migrations_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/migrations"
)

const payload1File = "../testdata/payload1.jsonl"

// TestPayload1File reads the events a server of payload version 1 stored
// for programs that printed bytes that are not UTF-8 (testdata/README.md):
// their chain verifies, Upcast flags the output that may have lost bytes,
// and retention still compacts them.
func TestPayload1File(t *testing.T) {
	lines := bytes.Split(bytes.TrimSuffix(readFile(t, payload1File), []byte("\n")), []byte("\n"))
	prev := chain.Zero
	lossy := map[uint64][]string{} // seq -> the encoding members Upcast adds
	for _, line := range lines {
		var e migrations.StoredEvent
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		if e.Version != 1 {
			t.Fatalf("event %d has payload version %d", e.Seq, e.Version)
		}
		h, err := chain.Of(prev, e.Event)
		if err != nil || h.String() != e.Hash {
			t.Fatalf("event %d: hash %s, %v; stored %s", e.Seq, h, err, e.Hash)
		}
		prev = h

		data, v, err := migrations.Upcast(e.Type, e.Version, e.Data)
		if err != nil || v != migrations.PayloadVersion {
			t.Fatalf("Upcast of event %d = v%d, %v", e.Seq, v, err)
		}
		var stored, upcast map[string]any
		if err := json.Unmarshal(e.Data, &stored); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &upcast); err != nil {
			t.Fatalf("upcast event %d: %s: %v", e.Seq, data, err)
		}
		for _, o := range []string{"stdout", "stderr"} {
			if text, _ := stored[o].(string); bytes.ContainsRune([]byte(text), '\uFFFD') {
				stored[o+"Encoding"] = migrations.OutputLossy
				lossy[e.Seq] = append(lossy[e.Seq], o)
			}
		}
		want, _ := json.Marshal(stored) // decoded JSON always encodes
		if !jsonEqual(t, want, data) {
			t.Errorf("upcast event %d:\n got %s\nwant %s", e.Seq, data, want)
		}
	}
	// The generator's three commands: two printed bytes that are not UTF-8
	// (the first on both streams), the third a real U+FFFD, which the log
	// cannot tell from a lost byte.
	if want := map[uint64]int{4: 2, 6: 1, 8: 1}; len(lossy) != len(want) || len(lossy[4]) != 2 || len(lossy[6]) != 1 || len(lossy[8]) != 1 {
		t.Errorf("flagged output %v, want the streams %v", lossy, want)
	}

	// In a data file, the events verify, and compaction digests their text
	// as stored.
	path := filepath.Join(t.TempDir(), eventlog.FileName)
	db := openDB(t, path)
	update(t, db, func(tx *bolt.Tx) error {
		if _, err := migrations.Run(tx); err != nil {
			return err
		}
		events, index := tx.Bucket(migrations.BucketEvents), tx.Bucket(migrations.BucketSessionEvents)
		var seq uint64
		for _, line := range lines {
			var e migrations.StoredEvent
			json.Unmarshal(line, &e)
			seq, _ = events.NextSequence()
			put(t, events, seqKey(seq), line)
			put(t, index, append([]byte(e.SessionID), seqKey(seq)...), nil)
		}
		return migrations.PutHead(tx, seq, prev)
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if v, err := eventlog.Verify(ctx, path, eventlog.VerifyOptions{}); err != nil || v.Events != uint64(len(lines)) {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
	l, err := eventlog.Open(path, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.CompactOutput(ctx, time.Now())
	if err != nil || res.Events != 3 {
		t.Errorf("CompactOutput = %+v, %v; want the 3 command results", res, err)
	}
	events, err := l.Events(0, 0)
	if err := errors.Join(err, l.Close()); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Type != eventlog.CommandCompleted {
			continue
		}
		var was, d eventlog.CommandCompletedData
		json.Unmarshal(lines[e.Seq-1], &struct {
			Data *eventlog.CommandCompletedData `json:"data"`
		}{&was})
		e.Decode(&d)
		if !d.OutputCompacted || d.StdoutSha256 != chain.Digest(was.Stdout) || (was.Stderr != "" && d.StderrSha256 != chain.Digest(was.Stderr)) {
			t.Errorf("compacted event %d: %+v", e.Seq, d)
		}
	}
	if _, err := eventlog.Verify(ctx, path, eventlog.VerifyOptions{}); err != nil {
		t.Errorf("Verify after compaction: %v", err)
	}
}
