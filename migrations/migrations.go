package migrations

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/eventlog/chain"
)

// Bucket names of the current layout.
var (
	BucketMeta          = []byte("meta")
	BucketEvents        = []byte("events")
	BucketSessionEvents = []byte("session_events")
)

var (
	keyLayout = []byte("layout")
	keyHead   = []byte("head")
)

// PayloadVersion is the schema version of event payloads written now; older
// ones are turned into the current shape by Upcast.
const PayloadVersion = 2

// ChainLayout is the first layout whose events are chained by hashes.
const ChainLayout = 2

// StoredEvent is an event as the events bucket holds it, from layout 2 on:
// the envelope the chain covers and its hash (eventlog/doc.go).
type StoredEvent struct {
	chain.Event
	Hash string `json:"hash,omitempty"`
}

// ErrNewerLayout is returned for a data file written by a newer CodeBeaker.
var ErrNewerLayout = errors.New("migrations: data file layout is newer than this binary knows")

// Migration moves the layout from Version-1 to Version.
type Migration struct {
	Version     int
	Description string
	Apply       func(tx *bolt.Tx) error
}

// All is the ordered list of layout migrations; the last one's Version is
// the current layout.
var All = []Migration{
	{1, "create the meta, events and session_events buckets", func(tx *bolt.Tx) error {
		for _, name := range [][]byte{BucketMeta, BucketEvents, BucketSessionEvents} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}},
	{ChainLayout, "chain every event to the one before by a SHA-256 hash, and record the head of the chain", chainEvents},
}

// chainEvents is layout 2: every stored envelope gets its "hash", computed
// in seq order as eventlog/doc.go describes, and meta gets the head record.
// Events are otherwise left as they were; the file must be intact (seqs
// from 1 with no gap, each equal to its key), or nothing is changed.
func chainEvents(tx *bolt.Tx) error {
	events := tx.Bucket(BucketEvents)
	if events == nil {
		return errors.New("the events bucket is missing")
	}
	prev, last := chain.Zero, uint64(0)
	c := events.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return fmt.Errorf("event key %x is not a seq: the file is damaged; it is left as it was", k)
		}
		if seq := binary.BigEndian.Uint64(k); seq != last+1 {
			return fmt.Errorf("event %d follows event %d: the file is damaged (a gap in the sequence); it is left as it was", seq, last)
		}
		last++
		var e StoredEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("event %d is unreadable: %w", last, err)
		}
		if e.Seq != last {
			return fmt.Errorf("event stored at %d says it is %d: the file is damaged; it is left as it was", last, e.Seq)
		}
		h, err := chain.Of(prev, e.Event)
		if err != nil {
			return fmt.Errorf("event %d: %w", last, err)
		}
		e.Hash, prev = h.String(), h
		value, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("event %d: %w", last, err)
		}
		// Overwriting the value of the cursor's key leaves bbolt's cursor
		// unusable; seek back to the key before moving on.
		key := bytes.Clone(k)
		if err := events.Put(key, value); err != nil {
			return err
		}
		c.Seek(key)
	}
	if seq := events.Sequence(); seq != last {
		return fmt.Errorf("the events bucket's sequence is %d but the last event is %d: the file is damaged; it is left as it was", seq, last)
	}
	return PutHead(tx, last, prev)
}

// PutHead records the seq and hash of the newest event in meta (layout 2):
// "head" -> seq (uint64 big-endian) || hash (32 bytes).
func PutHead(tx *bolt.Tx, seq uint64, h chain.Hash) error {
	meta := tx.Bucket(BucketMeta)
	if meta == nil {
		return errors.New("migrations: the meta bucket is missing")
	}
	var buf [8 + len(chain.Hash{})]byte
	binary.BigEndian.PutUint64(buf[:8], seq)
	copy(buf[8:], h[:])
	return meta.Put(keyHead, buf[:])
}

// Head reads the head record: the seq and hash of the newest event. ok is
// false when the file has none (a layout before 2, or a damaged file).
func Head(tx *bolt.Tx) (seq uint64, h chain.Hash, ok bool) {
	meta := tx.Bucket(BucketMeta)
	if meta == nil {
		return 0, h, false
	}
	v := meta.Get(keyHead)
	if len(v) != 8+len(h) {
		return 0, h, false
	}
	copy(h[:], v[8:])
	return binary.BigEndian.Uint64(v[:8]), h, true
}

// LayoutVersion is the layout this binary writes.
func LayoutVersion() int { return All[len(All)-1].Version }

// Version reads the layout version of the file; 0 means a new file.
func Version(tx *bolt.Tx) int {
	meta := tx.Bucket(BucketMeta)
	if meta == nil {
		return 0
	}
	v := meta.Get(keyLayout)
	if len(v) != 8 {
		return 0
	}
	return int(binary.BigEndian.Uint64(v))
}

// KnownVersion reads the layout version of the file, as Version, and
// refuses one newer than this binary knows with an error wrapping
// ErrNewerLayout.
func KnownVersion(tx *bolt.Tx) (int, error) {
	v := Version(tx)
	if v > LayoutVersion() {
		return v, fmt.Errorf("%w (file has layout %d, this binary knows up to %d): upgrade codebeaker", ErrNewerLayout, v, LayoutVersion())
	}
	return v, nil
}

// CheckReadable refuses a file that this binary cannot read as it is,
// without migrating it: one of a newer layout, or no CodeBeaker data file.
// Layouts 1 and 2 have the same buckets, so either is read as it is.
func CheckReadable(tx *bolt.Tx) error {
	v, err := KnownVersion(tx)
	if err == nil && v == 0 {
		err = errors.New("not a CodeBeaker data file (no layout version)")
	}
	return err
}

// Run brings the file in tx to LayoutVersion. It returns the version found.
func Run(tx *bolt.Tx) (from int, err error) {
	if from, err = KnownVersion(tx); err != nil {
		return from, err
	}
	for _, m := range All {
		if m.Version <= from {
			continue
		}
		if err := m.Apply(tx); err != nil {
			return from, fmt.Errorf("migrations: layout %d (%s): %w", m.Version, m.Description, err)
		}
		if err := setVersion(tx, m.Version); err != nil {
			return from, err
		}
	}
	return from, nil
}

func setVersion(tx *bolt.Tx, v int) error {
	meta, err := tx.CreateBucketIfNotExists(BucketMeta)
	if err != nil {
		return err
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(v))
	return meta.Put(keyLayout, buf[:])
}

// Upcaster turns a payload of one event type from schema version From into
// From+1.
type Upcaster struct {
	Type  string
	From  int
	Apply func(data json.RawMessage) (json.RawMessage, error)
}

// Upcasters lists every payload upgrade step.
var Upcasters = []Upcaster{
	{Type: chain.OutputType, From: 1, Apply: flagLossyOutput},
}

// OutputLossy is the encoding member ("stdoutEncoding", "stderrEncoding")
// that Upcast gives version-1 output holding U+FFFD: that writer put U+FFFD
// for every byte that was not UTF-8, so such text may not be the bytes the
// program wrote (or it printed U+FFFD itself: the log cannot tell).
const OutputLossy = "utf8-lossy"

// flagLossyOutput is CommandCompleted from version 1 to 2. Version 2 holds
// output that is not UTF-8 as base64 under an encoding member. That changes
// what "stdout" and "stderr" mean, not only adds members (which the rules
// allow within a version): a reader of version 1 would take the base64 for
// the output. Hence a new version, which such a reader refuses, and this
// step, which marks the version-1 text that may have lost bytes, so that
// every reader of the current shape knows whether the text is the bytes.
// The text itself stays as stored: the lost bytes cannot be recovered.
func flagLossyOutput(data json.RawMessage) (json.RawMessage, error) {
	var out struct {
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	for _, o := range []struct{ text, encoding string }{{out.Stdout, "stdoutEncoding"}, {out.Stderr, "stderrEncoding"}} {
		if strings.ContainsRune(o.text, utf8.RuneError) {
			data = appendMember(data, o.encoding, `"`+OutputLossy+`"`)
		}
	}
	return data, nil
}

// appendMember adds a member to the end of a JSON object that unmarshalled.
func appendMember(object json.RawMessage, name, value string) json.RawMessage {
	object = bytes.TrimRight(object, " \t\r\n")
	body := bytes.TrimSpace(object[1 : len(object)-1])
	out := append([]byte(nil), object[:len(object)-1]...)
	if len(body) > 0 {
		out = append(out, ',')
	}
	return append(append(out, `"`+name+`":`+value...), '}')
}

// Upcast returns the payload of an event of type typ stored at version in
// the current shape.
func Upcast(typ string, version int, data json.RawMessage) (json.RawMessage, int, error) {
	if version > PayloadVersion {
		return nil, version, fmt.Errorf("migrations: %s event has payload version %d, newer than %d: upgrade codebeaker", typ, version, PayloadVersion)
	}
	for version < PayloadVersion {
		step := findUpcaster(typ, version)
		if step == nil {
			// The type did not change at this version.
			version++
			continue
		}
		var err error
		if data, err = step.Apply(data); err != nil {
			return nil, version, fmt.Errorf("migrations: upcast %s from version %d: %w", typ, version, err)
		}
		version++
	}
	return data, version, nil
}

func findUpcaster(typ string, from int) *Upcaster {
	for i := range Upcasters {
		if Upcasters[i].Type == typ && Upcasters[i].From == from {
			return &Upcasters[i]
		}
	}
	return nil
}
