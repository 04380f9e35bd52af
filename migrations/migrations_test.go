package migrations_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/codebeaker/codebeaker/migrations"
)

// layoutCase tests one migration: before builds the file as the previous
// layout left it, after checks it once the migration has run.
type layoutCase struct {
	before func(t *testing.T, tx *bolt.Tx)
	after  func(t *testing.T, tx *bolt.Tx)
}

// layoutCases has one case per migration, by Version.
var layoutCases = map[int]layoutCase{
	1: {
		before: func(t *testing.T, tx *bolt.Tx) {}, // a new, empty file
		after: func(t *testing.T, tx *bolt.Tx) {
			for _, name := range [][]byte{migrations.BucketMeta, migrations.BucketEvents, migrations.BucketSessionEvents} {
				b := tx.Bucket(name)
				if b == nil {
					t.Errorf("bucket %s missing", name)
					continue
				}
				if name := string(name); name != "meta" && b.Stats().KeyN != 0 {
					t.Errorf("new bucket %s is not empty", name)
				}
			}
		},
	},
	2: {
		before: func(t *testing.T, tx *bolt.Tx) {
			// Layout 1 as it was written: envelopes without a hash, and the
			// index; one output event to show its digest in the chain.
			for _, name := range [][]byte{migrations.BucketMeta, migrations.BucketEvents, migrations.BucketSessionEvents} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					t.Fatal(err)
				}
			}
			events, index := tx.Bucket(migrations.BucketEvents), tx.Bucket(migrations.BucketSessionEvents)
			for i, v := range layout1Events {
				seq, err := events.NextSequence()
				if err != nil || seq != uint64(i+1) {
					t.Fatalf("NextSequence = %d, %v", seq, err)
				}
				put(t, events, seqKey(seq), []byte(v))
				put(t, index, append([]byte("01jfs"), seqKey(seq)...), nil)
			}
		},
		after: func(t *testing.T, tx *bolt.Tx) {
			// Each envelope is as it was plus its hash, chained over the
			// canonical form that eventlog/doc.go documents, spelt out here.
			events := tx.Bucket(migrations.BucketEvents)
			prev := make([]byte, 32)
			for i, v := range layout1Events {
				sum := sha256.Sum256(append(prev, layout1Canonical[i]...))
				prev = sum[:]
				want := v[:len(v)-1] + `,"hash":"` + hex.EncodeToString(sum[:]) + `"}`
				if got := string(events.Get(seqKey(uint64(i + 1)))); got != want {
					t.Errorf("event %d after the migration:\n got %s\nwant %s", i+1, got, want)
				}
			}
			seq, head, ok := migrations.Head(tx)
			if !ok || seq != uint64(len(layout1Events)) || !bytes.Equal(head[:], prev) {
				t.Errorf("head = %d %x (%v), want %d %x", seq, head, ok, len(layout1Events), prev)
			}
		},
	},
}

// layout1Events are envelopes as layout 1 stored them, and
// layout1Canonical their canonical forms as eventlog/doc.go defines them.
var (
	layout1Events = []string{
		`{"seq":1,"id":"01JFS0000000000000000000A1","sessionId":"01jfs","time":"2025-03-01T12:00:00Z","type":"SessionCreating","v":1,"data":{"language":"python","runtime":"docker","config":{"idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"memoryLimitMB":512,"cpuShares":1024,"pidsLimit":256}}}`,
		`{"seq":2,"id":"01JFS0000000000000000000A2","sessionId":"01jfs","time":"2025-03-01T12:00:01.5Z","type":"CommandCompleted","v":1,"data":{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":98,"stdoutBytes":14,"stderrBytes":3,"stdout":"Hello, World!\n","stderr":"\u003cb\u003e"}}`,
		`{"seq":3,"id":"01JFS0000000000000000000A3","sessionId":"01jfs","time":"2025-03-01T12:00:02.123456789Z","type":"SessionClosed","v":1,"data":{"reason":"client"}}`,
	}
	layout1Canonical = []string{
		`{"seq":1,"id":"01JFS0000000000000000000A1","sessionId":"01jfs","time":"2025-03-01T12:00:00Z","type":"SessionCreating","v":1,"data":{"language":"python","runtime":"docker","config":{"idleTimeoutMinutes":30,"maxLifetimeMinutes":120,"memoryLimitMB":512,"cpuShares":1024,"pidsLimit":256}}}`,
		// sha256("Hello, World!\n") and sha256("<b>")
		`{"seq":2,"id":"01JFS0000000000000000000A2","sessionId":"01jfs","time":"2025-03-01T12:00:01.5Z","type":"CommandCompleted","v":1,"data":{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":98,"stdoutBytes":14,"stderrBytes":3,"stdoutSha256":"c98c24b677eff44860afea6f493bbaec5bb1c4cbb209c6fc2bbb47f66ff2ad31","stderrSha256":"` + sha256Hex("<b>") + `"}}`,
		`{"seq":3,"id":"01JFS0000000000000000000A3","sessionId":"01jfs","time":"2025-03-01T12:00:02.123456789Z","type":"SessionClosed","v":1,"data":{"reason":"client"}}`,
	}
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func put(t *testing.T, b *bolt.Bucket, k, v []byte) {
	t.Helper()
	if err := b.Put(k, v); err != nil {
		t.Fatal(err)
	}
}

// A layout-1 file that is not intact is not migrated, and not changed.
func TestChainMigrationRefusesDamagedFile(t *testing.T) {
	for name, damage := range map[string]func(t *testing.T, events *bolt.Bucket){
		"gap":        func(t *testing.T, events *bolt.Bucket) { events.Delete(seqKey(2)) },
		"misplaced":  func(t *testing.T, events *bolt.Bucket) { put(t, events, seqKey(2), []byte(layout1Events[2])) },
		"unreadable": func(t *testing.T, events *bolt.Bucket) { put(t, events, seqKey(3), []byte(`{"seq":3,`)) },
		"tail cut":   func(t *testing.T, events *bolt.Bucket) { events.Delete(seqKey(3)) },
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.db")
			db := openDB(t, path)
			update(t, db, func(tx *bolt.Tx) error {
				layoutCases[2].before(t, tx)
				setLayout(t, tx, 1)
				damage(t, tx.Bucket(migrations.BucketEvents))
				return nil
			})
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			damaged := readFile(t, path)
			db = openDB(t, path)
			err := db.Update(func(tx *bolt.Tx) error { _, err := migrations.Run(tx); return err })
			if err == nil || !strings.Contains(err.Error(), "layout 2") {
				t.Errorf("Run on a damaged layout-1 file = %v, want an error naming layout 2", err)
			}
			t.Log(err)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, path), damaged) {
				t.Error("the failed migration changed the file")
			}
		})
	}
}

type upcastKey struct {
	Type string
	From int
}

// upcastCase tests one upcaster: in is a stored payload at From, want its
// shape at From+1.
type upcastCase struct {
	in, want string
}

// upcastCases has one case per upcaster.
var upcastCases = map[upcastKey]upcastCase{
	// Version-1 output with U+FFFD (as the writer escaped it for a byte
	// that was not UTF-8) is flagged; output without it, and the rest, stay.
	{"CommandCompleted", 1}: {
		in:   `{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":9,"stdoutBytes":6,"stderrBytes":5,"stdout":"\ufffd\ufffd ok\ufffd","stderr":"café"}`,
		want: `{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":9,"stdoutBytes":6,"stderrBytes":5,"stdout":"\ufffd\ufffd ok\ufffd","stderr":"café","stdoutEncoding":"utf8-lossy"}`,
	},
}

// TestEveryStepIsTested runs every migration and upcaster on its case and
// fails when one has none.
func TestEveryStepIsTested(t *testing.T) {
	if len(layoutCases) != len(migrations.All) {
		t.Errorf("%d layout test cases for %d migrations: every migration needs exactly one", len(layoutCases), len(migrations.All))
	}
	if len(upcastCases) != len(migrations.Upcasters) {
		t.Errorf("%d upcast test cases for %d upcasters: every upcaster needs exactly one", len(upcastCases), len(migrations.Upcasters))
	}

	for i, m := range migrations.All {
		if m.Version != i+1 {
			t.Errorf("migration %d has Version %d: versions must run 1, 2, 3...", i, m.Version)
		}
		t.Run(fmt.Sprintf("layout%d", m.Version), func(t *testing.T) {
			tc, ok := layoutCases[m.Version]
			if !ok {
				t.Fatalf("migration %d (%s) has no test case", m.Version, m.Description)
			}
			db := openDB(t, filepath.Join(t.TempDir(), "events.db"))
			update(t, db, func(tx *bolt.Tx) error {
				tc.before(t, tx)
				if m.Version > 1 {
					setLayout(t, tx, m.Version-1)
				}
				if v := migrations.Version(tx); v != m.Version-1 {
					t.Fatalf("before: file has layout %d, want %d", v, m.Version-1)
				}
				return nil
			})
			update(t, db, func(tx *bolt.Tx) error {
				if err := m.Apply(tx); err != nil {
					t.Fatalf("migration %d: %v", m.Version, err)
				}
				tc.after(t, tx)
				return nil
			})
		})
	}

	for _, u := range migrations.Upcasters {
		key := upcastKey{u.Type, u.From}
		t.Run(fmt.Sprintf("upcast-%s-%d", u.Type, u.From), func(t *testing.T) {
			tc, ok := upcastCases[key]
			if !ok {
				t.Fatalf("upcaster %s from %d has no test case", u.Type, u.From)
			}
			got, err := u.Apply(json.RawMessage(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, got, []byte(tc.want)) {
				t.Errorf("upcast %s from %d:\n got %s\nwant %s", u.Type, u.From, got, tc.want)
			}
		})
	}
}

func TestRunNewFile(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "events.db"))
	update(t, db, func(tx *bolt.Tx) error {
		if v := migrations.Version(tx); v != 0 {
			t.Errorf("a new file has layout %d, want 0", v)
		}
		from, err := migrations.Run(tx)
		if err != nil || from != 0 {
			t.Fatalf("Run on a new file = %d, %v; want 0, nil", from, err)
		}
		if v := migrations.Version(tx); v != migrations.LayoutVersion() {
			t.Errorf("after Run the layout is %d, want %d", v, migrations.LayoutVersion())
		}
		return nil
	})
}

func TestRunTwiceIsNoOp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	db := openDB(t, path)
	update(t, db, func(tx *bolt.Tx) error { _, err := migrations.Run(tx); return err })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	migrated := readFile(t, path)

	// On a file at the current layout Run writes nothing: it succeeds in a
	// read-only transaction of a read-only database.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		from, err := migrations.Run(tx)
		if err == nil && from != migrations.LayoutVersion() {
			err = fmt.Errorf("second Run found layout %d, want %d", from, migrations.LayoutVersion())
		}
		return err
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if !bytes.Equal(readFile(t, path), migrated) {
		t.Error("the second Run changed the file")
	}
}

func TestNewerLayoutRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	db := openDB(t, path)
	update(t, db, func(tx *bolt.Tx) error {
		if _, err := migrations.Run(tx); err != nil {
			return err
		}
		setLayout(t, tx, migrations.LayoutVersion()+1)
		return nil
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	newer := readFile(t, path)

	db = openDB(t, path)
	err := db.Update(func(tx *bolt.Tx) error {
		from, err := migrations.Run(tx)
		if from != migrations.LayoutVersion()+1 {
			t.Errorf("Run found layout %d, want %d", from, migrations.LayoutVersion()+1)
		}
		return err
	})
	if !errors.Is(err, migrations.ErrNewerLayout) {
		t.Errorf("Run on a newer layout returned %v, want ErrNewerLayout", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, path), newer) {
		t.Error("Run changed a file it refused")
	}
}

func TestUpcastCurrentVersionUnchanged(t *testing.T) {
	in := json.RawMessage(`{"reason":"client", "extra": [1, 2]}`)
	got, v, err := migrations.Upcast("SessionClosing", migrations.PayloadVersion, in)
	if err != nil || v != migrations.PayloadVersion || !bytes.Equal(got, in) {
		t.Errorf("Upcast at the current version = %s, %d, %v; want the data unchanged at %d", got, v, err, migrations.PayloadVersion)
	}
}

// Upcast's stepping, with a step registered for the test: the one payload
// version released so far has no upcaster to exercise it.
func TestUpcastAppliesSteps(t *testing.T) {
	saved := migrations.Upcasters
	t.Cleanup(func() { migrations.Upcasters = saved })
	broken := errors.New("cannot")
	migrations.Upcasters = []migrations.Upcaster{
		{Type: "Renamed", From: migrations.PayloadVersion - 1, Apply: func(data json.RawMessage) (json.RawMessage, error) {
			return bytes.ReplaceAll(data, []byte(`"old"`), []byte(`"new"`)), nil
		}},
		{Type: "Broken", From: migrations.PayloadVersion - 1, Apply: func(json.RawMessage) (json.RawMessage, error) { return nil, broken }},
	}
	from := migrations.PayloadVersion - 1
	got, v, err := migrations.Upcast("Renamed", from, json.RawMessage(`{"old":1}`))
	if err != nil || v != migrations.PayloadVersion || string(got) != `{"new":1}` {
		t.Errorf("Upcast through a step = %s, %d, %v; want {\"new\":1} at %d", got, v, err, migrations.PayloadVersion)
	}
	// A type without a step at that version keeps its payload.
	got, v, err = migrations.Upcast("Other", from, json.RawMessage(`{"old":1}`))
	if err != nil || v != migrations.PayloadVersion || string(got) != `{"old":1}` {
		t.Errorf("Upcast of a type without a step = %s, %d, %v", got, v, err)
	}
	if _, _, err := migrations.Upcast("Broken", from, json.RawMessage(`{}`)); !errors.Is(err, broken) {
		t.Errorf("Upcast through a failing step returned %v, want its error wrapped", err)
	}
}

func TestUpcastNewerVersionRefused(t *testing.T) {
	_, _, err := migrations.Upcast("SessionClosing", migrations.PayloadVersion+1, json.RawMessage(`{}`))
	if err == nil {
		t.Fatal("Upcast of a payload newer than this binary knows succeeded")
	}
	if want := fmt.Sprint(migrations.PayloadVersion + 1); !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say the version", err)
	}
}

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func update(t *testing.T, db *bolt.DB, fn func(*bolt.Tx) error) {
	t.Helper()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// setLayout writes the layout version as doc.go's on-disk format says.
func setLayout(t *testing.T, tx *bolt.Tx, v int) {
	t.Helper()
	meta, err := tx.CreateBucketIfNotExists(migrations.BucketMeta)
	if err != nil {
		t.Fatal(err)
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(v))
	if err := meta.Put([]byte("layout"), buf[:]); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
