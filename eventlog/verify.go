package eventlog

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/migrations"
)

// ErrNoChain is returned by Verify for a file written before the hash chain
// (layout 1): it has nothing to verify until it is migrated.
var ErrNoChain = errors.New("no hash chain to verify")

// ProblemKind says how the stored log differs from what was written.
type ProblemKind string

const (
	Removed    ProblemKind = "removed"    // an event is missing from the sequence
	Reordered  ProblemKind = "reordered"  // an event is stored under another event's seq
	Changed    ProblemKind = "changed"    // an event's content does not match its hash
	Unreadable ProblemKind = "unreadable" // an event's envelope is not valid
	TailCut    ProblemKind = "tail cut"   // events after the last stored one were removed
	Added      ProblemKind = "added"      // events past the head record
	BadIndex   ProblemKind = "bad index"  // session_events disagrees with events
	BadHead    ProblemKind = "bad head"   // the head record is missing or wrong
)

// Problem is the first place where a stored log stops being the one its
// writer committed.
type Problem struct {
	Kind ProblemKind
	// Seq is the event the problem is about: the one changed, the first one
	// missing, the one stored out of place.
	Seq uint64
	// ID, Type and SessionID describe that event, when it could be read.
	ID        ulid.ULID
	Type      Type
	SessionID string
	Detail    string
}

func (p *Problem) Error() string {
	what := fmt.Sprintf("event %d", p.Seq)
	if !p.ID.IsZero() {
		what += fmt.Sprintf(" (id %s, %s of session %s)", p.ID, p.Type, p.SessionID)
	}
	return fmt.Sprintf("eventlog: %s %s: %s", what, p.Kind, p.Detail)
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// LockTimeout bounds the wait for a writer's lock on the file.
	LockTimeout time.Duration
	// Anchors are (seq, hash) pairs kept outside the file, for example a
	// head that an earlier verify printed: each event named must still have
	// that hash. They make a chain that was rewritten from some point on,
	// head record included, detectable.
	Anchors map[uint64]chain.Hash
}

// Verified is what Verify found in a log that passed.
type Verified struct {
	Events   uint64     // the last seq, which is also the number of events
	Head     chain.Hash // the last event's hash
	Sessions int        // distinct session ids
}

// Verify checks the file at path, read-only, against everything its writer
// guarantees: seqs from 1 with no gap, each event stored under its own seq,
// each hash chained to the previous one over the canonical form (doc.go),
// the head record naming the last event and its hash, and the session
// index holding exactly one entry per event. It returns the first problem
// as a *Problem; other errors say why the file could not be checked.
func Verify(ctx context.Context, path string, opts VerifyOptions) (Verified, error) {
	db, err := openBoltReadOnly(path, cmp.Or(opts.LockTimeout, defaultLockTimeout))
	if err != nil {
		return Verified{}, err
	}
	defer db.Close()
	var out Verified
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = verifyTx(ctx, tx, opts)
		return err
	})
	var p *Problem
	if err != nil && !errors.As(err, &p) {
		err = fmt.Errorf("eventlog: verify %s: %w", path, err)
	}
	return out, err
}

func verifyTx(ctx context.Context, tx *bolt.Tx, opts VerifyOptions) (Verified, error) {
	switch v, err := migrations.KnownVersion(tx); {
	case err != nil:
		return Verified{}, err
	case v < migrations.ChainLayout:
		return Verified{}, fmt.Errorf("%w: the file has layout %d, from before the chain; it is migrated, and its chain computed, the next time codebeaker opens it for writing (codebeaker serve, or codebeaker audit compact)", ErrNoChain, v)
	}
	events := tx.Bucket(migrations.BucketEvents)
	index := tx.Bucket(migrations.BucketSessionEvents)
	if events == nil || index == nil {
		return Verified{}, errors.New("a bucket is missing: not a CodeBeaker data file")
	}

	// The session of every seq, interned, for the index check.
	var (
		sessionNum = map[string]uint32{}
		sessionOf  = []uint32{0} // seq 0 unused
		prev       chain.Hash
		last       uint64
		e          migrations.StoredEvent
	)
	c := events.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if last%(1<<16) == 0 {
			if err := ctx.Err(); err != nil {
				return Verified{}, err
			}
		}
		want := last + 1
		if len(k) != 8 {
			return Verified{}, &Problem{Kind: Unreadable, Seq: want, Detail: fmt.Sprintf("a key of %d bytes (%x) is in the events bucket", len(k), k)}
		}
		if key := binary.BigEndian.Uint64(k); key != want {
			if key < want { // keys are sorted: only seq 0 can come first
				return Verified{}, &Problem{Kind: Unreadable, Seq: key, Detail: "seq 0 is never used"}
			}
			detail := fmt.Sprintf("event %d is followed by event %d", last, key)
			if last == 0 {
				detail = fmt.Sprintf("the log starts at event %d", key)
			}
			if key-want > 1 {
				detail += fmt.Sprintf(": events %d to %d were removed", want, key-1)
			} else {
				detail += ": it was removed"
			}
			return Verified{}, &Problem{Kind: Removed, Seq: want, Detail: detail}
		}
		last = want
		e = migrations.StoredEvent{}
		if err := json.Unmarshal(v, &e); err != nil {
			return Verified{}, &Problem{Kind: Unreadable, Seq: last, Detail: fmt.Sprintf("its envelope is not valid: %v", err)}
		}
		if e.Seq != last {
			return Verified{}, &Problem{Kind: Reordered, Seq: last,
				Detail: fmt.Sprintf("the event stored as %d is event %d (id %s, %s of session %s): events were moved or swapped", last, e.Seq, e.ID, e.Type, e.SessionID)}
		}
		problem := func(kind ProblemKind, format string, args ...any) error {
			return &Problem{Kind: kind, Seq: last, ID: e.ID, Type: Type(e.Type), SessionID: e.SessionID, Detail: fmt.Sprintf(format, args...)}
		}
		stored, err := chain.ParseHash(e.Hash)
		if err != nil {
			return Verified{}, problem(Changed, "its stored hash is not valid: %v", err)
		}
		canonical, err := chain.Canonical(e.Event)
		if err != nil {
			return Verified{}, problem(Changed, "its payload cannot be encoded: %v", err)
		}
		if got := chain.Next(prev, canonical); got != stored {
			return Verified{}, problem(Changed, "its hash does not match its content and the hash before it (stored %s, computed %s): the event was changed, or moved here from elsewhere", stored, got)
		}
		if anchor, ok := opts.Anchors[last]; ok && anchor != stored {
			return Verified{}, problem(Changed, "its hash %s is not the anchored %s: the chain was rewritten from this event or before", stored, anchor)
		}
		prev = stored
		n, ok := sessionNum[e.SessionID]
		if !ok {
			n = uint32(len(sessionNum))
			sessionNum[e.SessionID] = n
		}
		sessionOf = append(sessionOf, n)
	}

	for seq := range opts.Anchors {
		if seq > last || seq == 0 {
			return Verified{}, &Problem{Kind: TailCut, Seq: seq, Detail: fmt.Sprintf("an anchor names event %d but the log ends at event %d", seq, last)}
		}
	}
	headSeq, headHash, ok := migrations.Head(tx)
	switch {
	case !ok:
		return Verified{}, &Problem{Kind: BadHead, Seq: last, Detail: "the file has no head record"}
	case headSeq > last:
		return Verified{}, &Problem{Kind: TailCut, Seq: last + 1, Detail: fmt.Sprintf("the log ends at event %d but its head record says %d: events %d to %d were removed from the tail", last, headSeq, last+1, headSeq)}
	case headSeq < last:
		return Verified{}, &Problem{Kind: Added, Seq: headSeq + 1, Detail: fmt.Sprintf("the head record says the log ends at event %d, but it goes on to %d: events were added by something other than codebeaker", headSeq, last)}
	case headHash != prev:
		return Verified{}, &Problem{Kind: BadHead, Seq: last, Detail: fmt.Sprintf("the head record's hash %s is not the last event's %s", headHash, prev)}
	}
	if seq := events.Sequence(); seq != last {
		return Verified{}, &Problem{Kind: TailCut, Seq: last + 1, Detail: fmt.Sprintf("the log ends at event %d but the events bucket's sequence is %d: events were removed from the tail", last, seq)}
	}

	indexed := make([]bool, last+1)
	var entries uint64
	ic := index.Cursor()
	for k, v := ic.First(); k != nil; k, v = ic.Next() {
		entries++
		if len(k) < 8 {
			return Verified{}, &Problem{Kind: BadIndex, Detail: fmt.Sprintf("session_events key %x is shorter than a seq", k)}
		}
		id, seq := string(k[:len(k)-8]), binary.BigEndian.Uint64(k[len(k)-8:])
		n, known := sessionNum[id]
		switch {
		case seq == 0 || seq > last:
			return Verified{}, &Problem{Kind: BadIndex, Seq: seq, Detail: fmt.Sprintf("session %s's index entry points at event %d, which is not in the log", id, seq)}
		case !known || sessionOf[seq] != n:
			return Verified{}, &Problem{Kind: BadIndex, Seq: seq, Detail: fmt.Sprintf("session %s's index entry points at event %d, an event of another session", id, seq)}
		case indexed[seq]:
			return Verified{}, &Problem{Kind: BadIndex, Seq: seq, Detail: "the event is indexed twice"}
		case len(v) != 0:
			return Verified{}, &Problem{Kind: BadIndex, Seq: seq, Detail: fmt.Sprintf("session %s's index entry has a value", id)}
		}
		indexed[seq] = true
	}
	if entries != last {
		for seq := uint64(1); seq <= last; seq++ {
			if !indexed[seq] {
				return Verified{}, &Problem{Kind: BadIndex, Seq: seq, Detail: "the event is missing from the session index"}
			}
		}
	}
	return Verified{Events: last, Head: prev, Sessions: len(sessionNum)}, nil
}
