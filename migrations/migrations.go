package migrations

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Bucket names of the current layout.
var (
	BucketMeta          = []byte("meta")
	BucketEvents        = []byte("events")
	BucketSessionEvents = []byte("session_events")
)

var keyLayout = []byte("layout")

// PayloadVersion is the schema version of event payloads written now.
const PayloadVersion = 1

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

// Run brings the file in tx to LayoutVersion. It returns the version found.
func Run(tx *bolt.Tx) (from int, err error) {
	from = Version(tx)
	if from > LayoutVersion() {
		return from, fmt.Errorf("%w (file has layout %d, this binary knows up to %d): upgrade codebeaker", ErrNewerLayout, from, LayoutVersion())
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

// Upcasters lists every payload upgrade step. There are none yet: version 1
// is the first released payload schema.
var Upcasters []Upcaster

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
