package eventlog

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog/chain"
	"github.com/codebeaker/codebeaker/migrations"
)

// Errors returned by the log.
var (
	ErrClosed   = errors.New("eventlog: log is closed")
	ErrLocked   = errors.New("eventlog: data file is locked by another process")
	ErrReadOnly = errors.New("eventlog: log is open read-only")
	// ErrFailed is wrapped by every Append after a commit failed and
	// reading the file back did not tell whether it holds the batch: the
	// writer no longer knows the head of the chain, so it writes nothing
	// more.
	ErrFailed = errors.New("eventlog: log is unusable after a write error: restart the server")
)

// FileName is the name of the log file inside the data dir.
const FileName = "events.db"

// defaultLockTimeout is the wait for another process's lock on the file
// when Options or VerifyOptions give none.
const defaultLockTimeout = 2 * time.Second

// Options configure Open.
type Options struct {
	// OnCommit, if set, is called by the writer with every committed batch,
	// in sequence order, before the appenders are told. It must not call
	// Append. A batch whose commit failed after bbolt made it visible (see
	// Durability in the package doc) is passed too, though its appenders
	// get an error: OnCommit sees exactly the events in the file.
	OnCommit func([]Event)
	// LockTimeout bounds the wait for another process's lock on the file.
	LockTimeout time.Duration
	// MaxBatch caps the appends committed in one transaction.
	MaxBatch int
	// ReadOnly opens an existing file for reading only, sharing it with
	// other readers: nothing is migrated or written, Append fails with
	// ErrReadOnly. A file at layout 1 is read as it is (its events have no
	// hash); one newer than this binary knows is refused.
	ReadOnly bool
}

// Log is an open event log. Its methods are safe for concurrent use.
type Log struct {
	db   *bolt.DB
	path string
	opts Options

	appends chan *appendReq
	done    chan struct{}
	wg      sync.WaitGroup

	closeOnce sync.Once

	// Owned by the writer: ids are made in commit order, so they increase
	// with the seqs.
	entropy  *ulid.MonotonicEntropy
	lastID   ulid.ULID  // the newest id in the file
	lastSeq  uint64     // the newest event's seq, as the head record has it
	lastHash chain.Hash // the head of the chain: the newest event's hash
	failed   error      // set, wrapping ErrFailed, once the file's state is unknown
}

type appendReq struct {
	events []Event // Seq, ID and Time filled in by the writer
	result chan error
}

// Open opens (or creates) the log at path, migrating its layout if needed.
func Open(path string, opts Options) (*Log, error) {
	opts.LockTimeout = cmp.Or(opts.LockTimeout, defaultLockTimeout)
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 256
	}
	if opts.ReadOnly {
		return openReadOnly(path, opts)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("eventlog: create data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, openError(path, err)
	}
	var (
		headSeq uint64
		head    chain.Hash
	)
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := migrations.Run(tx); err != nil {
			return err
		}
		var ok bool
		if headSeq, head, ok = migrations.Head(tx); !ok {
			return errors.New("the head of the hash chain is not recorded: the file is damaged")
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("eventlog: %s: %w", path, err)
	}
	lastID, err := newestID(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("eventlog: %s: %w", path, err)
	}
	l := &Log{
		db:       db,
		path:     path,
		opts:     opts,
		appends:  make(chan *appendReq),
		done:     make(chan struct{}),
		entropy:  ulid.Monotonic(rand.Reader, 0),
		lastID:   lastID,
		lastSeq:  headSeq,
		lastHash: head,
	}
	l.wg.Add(1)
	go l.writer()
	return l, nil
}

func openReadOnly(path string, opts Options) (*Log, error) {
	db, err := openBoltReadOnly(path, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	if err := db.View(migrations.CheckReadable); err != nil {
		db.Close()
		return nil, fmt.Errorf("eventlog: %s: %w", path, err)
	}
	return &Log{db: db, path: path, opts: opts, done: make(chan struct{})}, nil
}

// openBoltReadOnly opens an existing file read-only, taking a shared lock:
// it waits up to timeout for a writer (a running server) to let go.
func openBoltReadOnly(path string, timeout time.Duration) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("eventlog: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return nil, openError(path, err)
	}
	return db, nil
}

func openError(path string, err error) error {
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%w: %s (is another codebeaker using this data dir?)", ErrLocked, path)
	}
	return fmt.Errorf("eventlog: open %s: %w (if the file is damaged, move it aside and restore a backup; it is never overwritten)", path, err)
}

// Path returns the file the log lives in.
func (l *Log) Path() string { return l.path }

// Close stops the writer after the appends already handed to it and closes
// the file. Appends after Close fail with ErrClosed.
func (l *Log) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done) // a read-only log has no writer to wait for
		l.wg.Wait()
		err = l.db.Close()
	})
	return err
}

// Append stores records as consecutive events and returns them once they
// are durable. Either all of them are stored or none. An error means they
// may not be durable: if the commit failed in its last step the events are
// nevertheless in the log (see Durability in the package doc). After an
// error that leaves the log's state unknown, every Append fails with an
// error wrapping ErrFailed.
func (l *Log) Append(ctx context.Context, recs ...Record) ([]Event, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	if l.opts.ReadOnly {
		return nil, ErrReadOnly
	}
	req := &appendReq{events: make([]Event, len(recs)), result: make(chan error, 1)}
	for i, r := range recs {
		data, err := json.Marshal(r.Data)
		if err != nil {
			return nil, fmt.Errorf("eventlog: encode %s payload: %w", r.Type, err)
		}
		req.events[i] = Event{
			SessionID: r.SessionID,
			Type:      r.Type,
			Version:   migrations.PayloadVersion,
			Data:      data,
		}
	}
	select {
	case l.appends <- req:
	case <-l.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once handed over, the append is committed or fails as a whole; wait
	// for the answer even if ctx ends, so a caller never reports an event
	// lost that was in fact stored.
	if err := <-req.result; err != nil {
		return nil, err
	}
	return req.events, nil
}

// newID returns an id above every id in the file, even if the clock went
// back or a previous run made an id in this millisecond. Only the writer
// calls it.
func (l *Log) newID(t time.Time) ulid.ULID {
	ms := max(ulid.Timestamp(t), l.lastID.Time())
	id := ulid.MustNew(ms, l.entropy)
	if id.Compare(l.lastID) <= 0 {
		id = l.lastID
		for i := len(id) - 1; i >= 0; i-- { // id+1, big-endian
			if id[i]++; id[i] != 0 {
				break
			}
		}
	}
	l.lastID = id
	return id
}

// newestID reads the id of the last event in the file.
func newestID(db *bolt.DB) (ulid.ULID, error) {
	var last struct {
		ID ulid.ULID `json:"id"`
	}
	err := db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(migrations.BucketEvents).Cursor().Last()
		if k == nil {
			return nil
		}
		if err := json.Unmarshal(v, &last); err != nil {
			return fmt.Errorf("event %d is unreadable: %w", binary.BigEndian.Uint64(k), err)
		}
		return nil
	})
	return last.ID, err
}

// writer is the only goroutine that writes to the file. It takes every
// append waiting when it wakes up and commits them in one transaction.
func (l *Log) writer() {
	defer l.wg.Done()
	for {
		var first *appendReq
		select {
		case first = <-l.appends:
		case <-l.done:
			return
		}
		batch := []*appendReq{first}
	gather:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r := <-l.appends:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		if l.failed != nil {
			for _, r := range batch {
				r.result <- l.failed
			}
			continue
		}
		// committed is set when the events are in the file, even if err is
		// too (see afterFailedCommit).
		committed, err := l.commit(batch)
		if len(committed) > 0 && l.opts.OnCommit != nil {
			l.opts.OnCommit(committed)
		}
		for _, r := range batch {
			r.result <- err
		}
	}
}

func (l *Log) commit(batch []*appendReq) ([]Event, error) {
	// Ids and times are given here, in commit order, not when Append was
	// called: appenders reach the writer in any order.
	now := time.Now().UTC()
	for _, r := range batch {
		for i := range r.events {
			r.events[i].ID, r.events[i].Time = l.newID(now), now
		}
	}
	var (
		committed []Event
		seq       uint64
		head      chain.Hash
	)
	err := l.db.Update(func(tx *bolt.Tx) error {
		committed, seq, head = committed[:0], l.lastSeq, l.lastHash
		events := tx.Bucket(migrations.BucketEvents)
		index := tx.Bucket(migrations.BucketSessionEvents)
		for _, r := range batch {
			for i := range r.events {
				e := &r.events[i]
				var err error
				if seq, err = events.NextSequence(); err != nil {
					return err
				}
				e.Seq = seq
				if head, err = chain.Of(head, e.chainEvent()); err != nil {
					return err
				}
				e.Hash = head.String()
				value, err := json.Marshal(e)
				if err != nil {
					return err
				}
				if err := events.Put(seqKey(seq), value); err != nil {
					return err
				}
				if err := index.Put(sessionKey(e.SessionID, seq), nil); err != nil {
					return err
				}
				committed = append(committed, *e)
			}
		}
		return migrations.PutHead(tx, seq, head)
	})
	if err != nil {
		return l.afterFailedCommit(committed, seq, head, fmt.Errorf("eventlog: commit to %s: %w", l.path, err))
	}
	l.lastSeq, l.lastHash = seq, head
	return committed, nil
}

// afterFailedCommit reads the file back after the commit of batch, which
// would have left the head at seq and head, failed with cerr. bbolt (1.4)
// can fail a commit after writing its meta page, when the last fdatasync
// fails: every later transaction then sees the batch. So the error alone
// does not say whether the batch is in the file:
//
//   - If the head record and the events bucket's sequence are as before,
//     nothing of it is: the cached head stays, the appenders get cerr.
//   - If they are at the batch's last event, it is: the cached head moves
//     to it and the batch is returned for OnCommit, so the chain goes on
//     from the events in the file and memory matches the file. The
//     appenders still get an error: Append promises durable events and
//     these may not be on disk until a later commit's fsync succeeds (or
//     ever, if the kernel dropped them), and a caller must treat them as
//     possibly lost -- but also as possibly stored.
//   - Otherwise, or if the file cannot be read, the log fails for good
//     (ErrFailed) rather than chain onto a head it cannot know.
func (l *Log) afterFailedCommit(batch []Event, seq uint64, head chain.Hash, cerr error) ([]Event, error) {
	var (
		fileSeq, bucketSeq uint64
		fileHead           chain.Hash
		ok                 bool
	)
	rerr := l.db.View(func(tx *bolt.Tx) error {
		fileSeq, fileHead, ok = migrations.Head(tx)
		bucketSeq = tx.Bucket(migrations.BucketEvents).Sequence()
		return nil
	})
	switch {
	case rerr == nil && ok && fileSeq == l.lastSeq && bucketSeq == l.lastSeq && fileHead == l.lastHash:
		return nil, cerr
	case rerr == nil && ok && len(batch) > 0 && fileSeq == seq && bucketSeq == seq && fileHead == head:
		l.lastSeq, l.lastHash = seq, head
		return batch, fmt.Errorf("%w (events %d to %d are in the log but may not be on disk)", cerr, batch[0].Seq, seq)
	case rerr == nil && !ok:
		rerr = errors.New("the head record is missing")
	case rerr == nil:
		rerr = fmt.Errorf("the head is at seq %d (sequence %d), neither at %d as before nor at %d as committed", fileSeq, bucketSeq, l.lastSeq, seq)
	}
	l.failed = fmt.Errorf("%w (%w; reading the file back: %w)", ErrFailed, cerr, rerr)
	return nil, l.failed
}

// LastSeq returns the sequence number of the newest event, 0 for none.
func (l *Log) LastSeq() (uint64, error) {
	var seq uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(migrations.BucketEvents).Sequence()
		return nil
	})
	return seq, err
}

// Scan calls fn with every event after seq afterSeq, in order, until fn
// returns an error (which Scan returns) or the log ends.
func (l *Log) Scan(afterSeq uint64, fn func(Event) error) error {
	return l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(migrations.BucketEvents).Cursor()
		for k, v := c.Seek(seqKey(afterSeq + 1)); k != nil; k, v = c.Next() {
			e, err := decode(k, v)
			if err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// Events returns up to limit events after seq afterSeq, in order. limit <= 0
// means no limit.
func (l *Log) Events(afterSeq uint64, limit int) ([]Event, error) {
	var out []Event
	err := l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(migrations.BucketEvents).Cursor()
		for k, v := c.Seek(seqKey(afterSeq + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			e, err := decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Head returns the sequence number and hash of the newest event as the
// file's head record has them: what `codebeaker audit verify` prints, and
// what an auditor keeps outside the file to anchor the chain. Both are
// zero for an empty log.
func (l *Log) Head() (uint64, chain.Hash, error) {
	var (
		seq uint64
		h   chain.Hash
	)
	err := l.db.View(func(tx *bolt.Tx) error {
		seq, h, _ = migrations.Head(tx)
		return nil
	})
	return seq, h, err
}

// SessionEvents returns up to limit events of one session after seq
// afterSeq, in order. limit <= 0 means no limit.
func (l *Log) SessionEvents(sessionID string, afterSeq uint64, limit int) ([]Event, error) {
	var out []Event
	err := l.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(migrations.BucketEvents)
		prefix := []byte(sessionID)
		c := tx.Bucket(migrations.BucketSessionEvents).Cursor()
		for k, _ := c.Seek(sessionKey(sessionID, afterSeq+1)); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == sessionID; k, _ = c.Next() {
			seq := k[len(prefix):]
			e, err := decode(seq, events.Get(seq))
			if err != nil {
				return err
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// HasSession reports whether any event of the session is in the log.
func (l *Log) HasSession(sessionID string) (bool, error) {
	events, err := l.SessionEvents(sessionID, 0, 1)
	return len(events) > 0, err
}

func decode(k, v []byte) (Event, error) {
	var e Event
	if v == nil {
		return e, fmt.Errorf("eventlog: event %d is indexed but missing", binary.BigEndian.Uint64(k))
	}
	if err := json.Unmarshal(v, &e); err != nil {
		return e, fmt.Errorf("eventlog: event %d is unreadable: %w", binary.BigEndian.Uint64(k), err)
	}
	if e.Seq != binary.BigEndian.Uint64(k) {
		return e, fmt.Errorf("eventlog: event stored at %d says it is %d", binary.BigEndian.Uint64(k), e.Seq)
	}
	data, version, err := migrations.Upcast(string(e.Type), e.Version, e.Data)
	if err != nil {
		return e, fmt.Errorf("eventlog: event %d: %w", e.Seq, err)
	}
	e.Data, e.Version = data, version
	return e, nil
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func sessionKey(sessionID string, seq uint64) []byte {
	k := make([]byte, len(sessionID)+8)
	copy(k, sessionID)
	binary.BigEndian.PutUint64(k[len(sessionID):], seq)
	return k
}

func seqOf(k []byte) uint64 { return binary.BigEndian.Uint64(k) }
