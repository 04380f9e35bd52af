package eventlog_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
	"github.com/codebeaker/codebeaker/migrations"
)

// auditedLog writes three sessions with commands and output, closes the log
// and returns its path and events.
func auditedLog(t *testing.T) (string, []eventlog.Event) {
	t.Helper()
	l := eventlogtest.Open(t)
	ctx := context.Background()
	for s := range 3 {
		id := fmt.Sprintf("01jfsession%d", s)
		recs := []eventlog.Record{
			rec(id, eventlog.SessionCreating, eventlog.SessionCreatingData{Language: "python", Runtime: "docker"}),
			rec(id, eventlog.SessionCreated, eventlog.SessionCreatedData{ContainerID: "c" + id}),
		}
		for c := range 3 {
			exit := c
			recs = append(recs,
				rec(id, eventlog.CommandStarted, eventlog.CommandStartedData{CommandID: fmt.Sprint(c), Type: "execute_shell", Command: json.RawMessage(`{"type":"execute_shell","commandName":"echo"}`)}),
				rec(id, eventlog.CommandCompleted, eventlog.CommandCompletedData{CommandID: fmt.Sprint(c), Type: "execute_shell", Success: exit == 0,
					ExitCode: &exit, Stdout: fmt.Sprintf("output %d of %s\n", c, id), Stderr: "<warning> & more"}))
		}
		for _, r := range recs { // one at a time: sessions interleave
			if _, err := l.Append(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	events := scanAll(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return l.Path(), events
}

func TestVerifyIntact(t *testing.T) {
	path, events := auditedLog(t)
	v, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify of an intact log: %v", err)
	}
	last := events[len(events)-1]
	if v.Events != last.Seq || v.Head.String() != last.Hash || v.Sessions != 3 {
		t.Errorf("Verify = %+v, want %d events, head %s, 3 sessions", v, last.Seq, last.Hash)
	}
	// Each event's hash is the chain's, from the events as read back.
	prev := chain.Zero
	for _, e := range events {
		h, err := chain.Of(prev, chain.Event{Seq: e.Seq, ID: e.ID, SessionID: e.SessionID, Time: e.Time, Type: string(e.Type), Version: e.Version, Data: e.Data})
		if err != nil || h.String() != e.Hash {
			t.Fatalf("event %d has hash %s, the chain gives %s (%v)", e.Seq, e.Hash, h, err)
		}
		prev = h
	}
	// An anchor kept from before still holds.
	if _, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{Anchors: map[uint64]chain.Hash{last.Seq: v.Head}}); err != nil {
		t.Errorf("Verify with the head as anchor: %v", err)
	}
	// The head is what the log says it is.
	l := eventlogtest.OpenWith(t, path, eventlog.Options{ReadOnly: true})
	if seq, h, err := l.Head(); err != nil || seq != last.Seq || h != v.Head {
		t.Errorf("Head = %d %s %v, want %d %s", seq, h, err, last.Seq, v.Head)
	}
}

func TestVerifyEmptyLog(t *testing.T) {
	l := eventlogtest.Open(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := eventlog.Verify(context.Background(), l.Path(), eventlog.VerifyOptions{})
	if err != nil || v.Events != 0 || v.Head != chain.Zero {
		t.Errorf("Verify of an empty log = %+v, %v", v, err)
	}
}

// tamper changes the closed log at path with bbolt, as someone with the
// file could.
func tamper(t *testing.T, path string, fn func(events, index, meta *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return fn(tx.Bucket(migrations.BucketEvents), tx.Bucket(migrations.BucketSessionEvents), tx.Bucket(migrations.BucketMeta))
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func indexKey(session string, seq uint64) []byte { return append([]byte(session), key(seq)...) }

// setSeq rewrites the seq inside a stored envelope.
func setSeq(t *testing.T, v []byte, seq uint64) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		t.Fatal(err)
	}
	m["seq"] = json.RawMessage(fmt.Sprint(seq))
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Each way of altering the file is caught, naming the right event.
func TestVerifyTampered(t *testing.T) {
	original, all := auditedLog(t)
	n := uint64(len(all))
	// An event with output in the middle of the log.
	var target eventlog.Event
	for _, e := range all {
		if e.Type == eventlog.CommandCompleted && e.Seq > n/2 {
			target = e
			break
		}
	}
	cases := []struct {
		name   string
		alter  func(t *testing.T, events, index, meta *bolt.Bucket) error
		kind   eventlog.ProblemKind
		seq    uint64
		named  uint64   // the problem carries the id and type of this event (as first written)
		anchor []uint64 // anchor these events at their original hashes
	}{
		{name: "a byte of the output changed", kind: eventlog.Changed, seq: target.Seq, named: target.Seq,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error {
				v := bytes.Clone(events.Get(key(target.Seq)))
				i := bytes.Index(v, []byte("output"))
				v[i] = 'O'
				return events.Put(key(target.Seq), v)
			}},
		{name: "the exit code changed", kind: eventlog.Changed, seq: target.Seq, named: target.Seq,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error {
				v := bytes.Replace(events.Get(key(target.Seq)), []byte(`"success":false,"exitCode":1`), []byte(`"success":false,"exitCode":0`), 1)
				if bytes.Equal(v, events.Get(key(target.Seq))) {
					v = bytes.Replace(v, []byte(`"exitCode":`), []byte(`"exitCode":1`), 1)
				}
				return events.Put(key(target.Seq), v)
			}},
		{name: "a byte of the hash changed", kind: eventlog.Changed, seq: target.Seq, named: target.Seq,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error {
				v := bytes.Clone(events.Get(key(target.Seq)))
				i := bytes.Index(v, []byte(`"hash":"`)) + len(`"hash":"`)
				v[i] ^= 1
				return events.Put(key(target.Seq), v)
			}},
		{name: "an event deleted", kind: eventlog.Removed, seq: target.Seq,
			alter: func(t *testing.T, events, index, _ *bolt.Bucket) error {
				if err := index.Delete(indexKey(target.SessionID, target.Seq)); err != nil {
					return err
				}
				return events.Delete(key(target.Seq))
			}},
		{name: "the first event deleted", kind: eventlog.Removed, seq: 1,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error { return events.Delete(key(1)) }},
		{name: "an event deleted and the rest renumbered", kind: eventlog.Changed, seq: target.Seq, named: target.Seq + 1,
			alter: func(t *testing.T, events, index, _ *bolt.Bucket) error {
				for seq := target.Seq; seq < n; seq++ {
					if err := events.Put(key(seq), setSeq(t, events.Get(key(seq+1)), seq)); err != nil {
						return err
					}
				}
				return events.Delete(key(n))
			}},
		{name: "two events swapped", kind: eventlog.Reordered, seq: target.Seq - 1,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error {
				a, b := bytes.Clone(events.Get(key(target.Seq-1))), bytes.Clone(events.Get(key(target.Seq)))
				return errors.Join(events.Put(key(target.Seq-1), b), events.Put(key(target.Seq), a))
			}},
		{name: "two events swapped and renumbered", kind: eventlog.Changed, seq: target.Seq - 1, named: target.Seq,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error {
				a, b := bytes.Clone(events.Get(key(target.Seq-1))), bytes.Clone(events.Get(key(target.Seq)))
				return errors.Join(events.Put(key(target.Seq-1), setSeq(t, b, target.Seq-1)), events.Put(key(target.Seq), setSeq(t, a, target.Seq)))
			}},
		{name: "the tail cut", kind: eventlog.TailCut, seq: n - 2,
			alter: func(t *testing.T, events, index, _ *bolt.Bucket) error {
				for seq := n - 2; seq <= n; seq++ {
					if err := errors.Join(events.Delete(key(seq)), index.Delete(indexKey(all[seq-1].SessionID, seq))); err != nil {
						return err
					}
				}
				return nil
			}},
		{name: "the tail cut and the head rewritten, against an anchor", kind: eventlog.TailCut, seq: n, anchor: []uint64{n},
			alter: func(t *testing.T, events, index, meta *bolt.Bucket) error {
				for seq := n - 2; seq <= n; seq++ {
					if err := errors.Join(events.Delete(key(seq)), index.Delete(indexKey(all[seq-1].SessionID, seq))); err != nil {
						return err
					}
				}
				var last struct{ Hash string }
				json.Unmarshal(events.Get(key(n-3)), &last)
				h, _ := chain.ParseHash(last.Hash)
				return errors.Join(events.SetSequence(n-3), meta.Put([]byte("head"), append(key(n-3), h[:]...)))
			}},
		{name: "an event's payload replaced and the chain recomputed, against an anchor", kind: eventlog.Changed, seq: target.Seq, named: target.Seq, anchor: []uint64{target.Seq},
			alter: func(t *testing.T, events, _, meta *bolt.Bucket) error {
				return rechain(t, events, meta, target.Seq, func(e *chain.Event) { e.Data = json.RawMessage(`{"commandId":"0","success":true}`) })
			}},
		{name: "an event added after the head", kind: eventlog.Added, seq: n + 1,
			alter: func(t *testing.T, events, index, _ *bolt.Bucket) error {
				// Chained properly, but the head record is not moved on.
				var e struct {
					chain.Event
					Hash string `json:"hash"`
				}
				json.Unmarshal(events.Get(key(n)), &e)
				prev, _ := chain.ParseHash(e.Hash)
				e.Seq, e.ID = n+1, all[n-1].ID
				e.ID[15]++
				h, err := chain.Of(prev, e.Event)
				e.Hash = h.String()
				v, _ := json.Marshal(e)
				return errors.Join(err, events.Put(key(n+1), v), index.Put(indexKey(e.SessionID, n+1), nil), events.SetSequence(n+1))
			}},
		{name: "the head's hash changed", kind: eventlog.BadHead, seq: n,
			alter: func(t *testing.T, _, _, meta *bolt.Bucket) error {
				h := bytes.Clone(meta.Get([]byte("head")))
				h[len(h)-1] ^= 1
				return meta.Put([]byte("head"), h)
			}},
		{name: "an envelope made unreadable", kind: eventlog.Unreadable, seq: target.Seq,
			alter: func(t *testing.T, events, _, _ *bolt.Bucket) error {
				return events.Put(key(target.Seq), []byte(`{"seq":`))
			}},
		{name: "an index entry deleted", kind: eventlog.BadIndex, seq: target.Seq,
			alter: func(t *testing.T, _, index, _ *bolt.Bucket) error {
				return index.Delete(indexKey(target.SessionID, target.Seq))
			}},
		{name: "an index entry moved to another session", kind: eventlog.BadIndex, seq: target.Seq,
			alter: func(t *testing.T, _, index, _ *bolt.Bucket) error {
				return errors.Join(index.Delete(indexKey(target.SessionID, target.Seq)), index.Put(indexKey("01jfsession9", target.Seq), nil))
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := copyFile(t, original)
			tamper(t, path, func(events, index, meta *bolt.Bucket) error { return c.alter(t, events, index, meta) })
			anchors := map[uint64]chain.Hash{}
			for _, seq := range c.anchor {
				anchors[seq], _ = chain.ParseHash(all[seq-1].Hash)
			}
			_, err := eventlog.Verify(context.Background(), path, eventlog.VerifyOptions{Anchors: anchors})
			var p *eventlog.Problem
			if !errors.As(err, &p) {
				t.Fatalf("Verify = %v, want a *Problem", err)
			}
			t.Log(err)
			if p.Kind != c.kind || p.Seq != c.seq {
				t.Errorf("Verify found %q at event %d, want %q at event %d", p.Kind, p.Seq, c.kind, c.seq)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("event %d ", c.seq)) {
				t.Errorf("the problem %q does not name event %d", err, c.seq)
			}
			if c.named != 0 {
				e := all[c.named-1]
				if p.ID != e.ID || p.Type != e.Type || p.SessionID != e.SessionID {
					t.Errorf("the problem names %s %s of %s, want %s %s of %s", p.ID, p.Type, p.SessionID, e.ID, e.Type, e.SessionID)
				}
			}
		})
	}
}

// rechain replaces event seq with change applied, and computes the chain
// from there on and the head again, as someone who knows the format could.
func rechain(t *testing.T, events, meta *bolt.Bucket, from uint64, change func(*chain.Event)) error {
	t.Helper()
	type stored struct {
		chain.Event
		Hash string `json:"hash"`
	}
	var prev stored
	if from > 1 {
		json.Unmarshal(events.Get(key(from-1)), &prev)
	}
	h, _ := chain.ParseHash(prev.Hash)
	if from == 1 {
		h = chain.Zero
	}
	last := events.Sequence()
	for seq := from; seq <= last; seq++ {
		var e stored
		if err := json.Unmarshal(events.Get(key(seq)), &e); err != nil {
			return err
		}
		if seq == from {
			change(&e.Event)
		}
		var err error
		if h, err = chain.Of(h, e.Event); err != nil {
			return err
		}
		e.Hash = h.String()
		v, _ := json.Marshal(e)
		if err := events.Put(key(seq), v); err != nil {
			return err
		}
	}
	return meta.Put([]byte("head"), append(key(last), h[:]...))
}

func TestVerifyLockedAndMissing(t *testing.T) {
	l := eventlogtest.Open(t)
	appendOne(t, l, rec("s", eventlog.SessionCreating, eventlog.SessionCreatingData{}))
	_, err := eventlog.Verify(context.Background(), l.Path(), eventlog.VerifyOptions{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, eventlog.ErrLocked) {
		t.Errorf("Verify of a file a writer holds = %v, want ErrLocked", err)
	}
	if _, err := eventlog.Verify(context.Background(), l.Path()+".missing", eventlog.VerifyOptions{}); err == nil {
		t.Error("Verify of a missing file succeeded")
	}
}
