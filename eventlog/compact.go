package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/migrations"
)

// Compacted says what CompactOutput did.
type Compacted struct {
	Events   int   // CommandCompleted events whose output was replaced by digests
	Sessions int   // the closed sessions they belong to
	Bytes    int64 // how much smaller their stored envelopes are (a digest is 64 bytes: shorter output grows)
}

// compactBatch is how many events one compaction transaction rewrites.
const compactBatch = 1000

// CompactOutput is the log's retention: in CommandCompleted events stored
// before the time before, of sessions that are closed (SessionClosed or
// SessionCreateFailed is in the log), it replaces the stored stdout and
// stderr by their SHA-256 digests (stdoutSha256, stderrSha256) and marks
// the payload outputCompacted, in place. Everything else of the event stays,
// and so does its hash: the canonical form holds output as its digest
// (doc.go), so the chain verifies as before.
//
// It may run while the log is appended to: it rewrites old events in
// transactions of its own, a thousand events each, and each leaves a log
// that verifies. The file does not shrink; bbolt reuses the freed pages.
func (l *Log) CompactOutput(ctx context.Context, before time.Time) (Compacted, error) {
	var res Compacted
	if l.opts.ReadOnly {
		return res, ErrReadOnly
	}
	type candidate struct {
		seq     uint64
		session string
	}
	var (
		candidates []candidate
		closed     = map[string]bool{}
		head       struct {
			SessionID string    `json:"sessionId"`
			Time      time.Time `json:"time"`
			Type      Type      `json:"type"`
		}
	)
	err := l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(migrations.BucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			head.SessionID, head.Type = "", ""
			if err := json.Unmarshal(v, &head); err != nil {
				return fmt.Errorf("event %x is unreadable: %w", k, err)
			}
			switch head.Type {
			case SessionClosed, SessionCreateFailed:
				closed[head.SessionID] = true
			case CommandCompleted:
				if head.Time.Before(before) && (bytes.Contains(v, []byte(`"stdout":`)) || bytes.Contains(v, []byte(`"stderr":`))) {
					candidates = append(candidates, candidate{seqOf(k), head.SessionID})
				}
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("eventlog: compact %s: %w", l.path, err)
	}
	var todo []uint64
	sessions := map[string]bool{}
	for _, c := range candidates {
		if closed[c.session] {
			todo = append(todo, c.seq)
			sessions[c.session] = true
		}
	}
	for len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		batch := todo[:min(compactBatch, len(todo))]
		todo = todo[len(batch):]
		var n int
		var saved int64
		err := l.db.Update(func(tx *bolt.Tx) error {
			n, saved = 0, 0
			events := tx.Bucket(migrations.BucketEvents)
			for _, seq := range batch {
				key := seqKey(seq)
				old := events.Get(key)
				value, changed, err := compactEnvelope(old)
				if err != nil {
					return fmt.Errorf("event %d: %w", seq, err)
				}
				if !changed {
					continue
				}
				if err := events.Put(key, value); err != nil {
					return err
				}
				n++
				saved += int64(len(old) - len(value))
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("eventlog: compact %s: %w", l.path, err)
		}
		res.Events += n
		res.Bytes += saved
	}
	res.Sessions = len(sessions)
	return res, nil
}

// compactEnvelope rewrites one stored CommandCompleted envelope with its
// output replaced by digests, and checks that its canonical form, and so its
// hash, did not change.
func compactEnvelope(value []byte) ([]byte, bool, error) {
	var e migrations.StoredEvent
	if err := json.Unmarshal(value, &e); err != nil {
		return nil, false, fmt.Errorf("unreadable: %w", err)
	}
	if e.Version > migrations.PayloadVersion {
		// Only the payload versions this binary knows are known to keep
		// their output in stdout and stderr.
		return nil, false, nil
	}
	data, changed, err := chain.CompactOutput(e.Data)
	if err != nil || !changed {
		return nil, false, err
	}
	before, err := chain.Canonical(e.Event)
	if err != nil {
		return nil, false, err
	}
	e.Data = data
	after, err := chain.Canonical(e.Event)
	if err != nil {
		return nil, false, err
	}
	if !bytes.Equal(before, after) {
		return nil, false, fmt.Errorf("compaction would change the event's canonical form:\n%s\n%s", before, after)
	}
	out, err := json.Marshal(e)
	return out, err == nil, err
}
