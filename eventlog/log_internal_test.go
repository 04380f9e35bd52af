package eventlog

import (
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// The log acknowledges an append only after fsync; that holds only while
// bbolt syncs its commits.
func TestNeverNoSync(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.db.NoSync {
		t.Error("the log's bbolt DB has NoSync set: appends would be acknowledged before they are on disk")
	}
}

// Ids stay above the newest one in the file when the clock went back and
// when a previous run made ids in the same millisecond.
func TestNewIDIncreases(t *testing.T) {
	now := time.Now()
	future := ulid.MustNew(ulid.Timestamp(now.Add(time.Hour)), rand.Reader)
	sameMs := ulid.MustNew(ulid.Timestamp(now), rand.Reader)
	full := sameMs
	for i := 6; i < len(full); i++ { // entropy at its maximum
		full[i] = 0xff
	}
	for name, last := range map[string]ulid.ULID{"clock went back": future, "same millisecond": sameMs, "entropy full": full} {
		l := &Log{entropy: ulid.Monotonic(rand.Reader, 0), lastID: last}
		prev := last
		for range 100 {
			id := l.newID(now)
			if id.Compare(prev) <= 0 {
				t.Fatalf("%s: id %s is not above %s", name, id, prev)
			}
			prev = id
		}
	}
}
