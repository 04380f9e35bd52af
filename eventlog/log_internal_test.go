package eventlog

import (
	"context"
	"crypto/rand"
	"errors"
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

// A commit that fails when the file cannot be read back either leaves the
// head of the chain unknown: the log takes no more appends.
func TestFailedWhenCommitCannotBeReadBack(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	r := Record{SessionID: "s1", Type: SessionClosing, Data: SessionClosingData{Reason: ReasonClient}}
	if _, err := l.Append(ctx, r); err != nil {
		t.Fatal(err)
	}
	// The bbolt DB closed under the writer: both the commit and the read
	// back fail.
	if err := l.db.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := l.Append(ctx, r); !errors.Is(err, ErrFailed) {
			t.Fatalf("append %d after the file became unreadable: err = %v, want ErrFailed", i+1, err)
		}
	}
}
