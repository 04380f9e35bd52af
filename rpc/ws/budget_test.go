package ws

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// A frame is counted as its buffer grows and refused, read to its end and
// holding nothing, when it passes the frame limit or the budget; once
// admitted, its hold shrinks to what is kept and goes back on release.
func TestReadFrameCountsAndRefuses(t *testing.T) {
	const limit = 1 << 20
	b := newBudget(3<<20, 10*time.Millisecond) // one frame of the limit being decoded, barely

	frame := strings.Repeat("x", 512<<10)
	got, h, err := readFrame(strings.NewReader(frame), limit, b)
	if err != nil || !bytes.Equal(got, []byte(frame)) {
		t.Fatalf("readFrame of %d bytes: %d bytes, %v", len(frame), len(got), err)
	}
	if used := b.inUse(); used < DecodeCopies*int64(len(frame)-smallFrame) {
		t.Errorf("a %d-byte frame being decoded counts %d bytes; want at least %d copies of it", len(frame), used, DecodeCopies)
	}
	h.keep(int64(len(frame)))
	if used := b.inUse(); used > int64(len(frame)) {
		t.Errorf("an admitted frame still counts %d bytes; want at most its %d", used, len(frame))
	}

	// Over the frame limit: refused, read to its end, nothing held.
	roomy := newBudget(64<<20, 0)
	big := strings.NewReader(strings.Repeat("y", limit+1))
	if _, _, err := readFrame(big, limit, roomy); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("a frame over the limit: %v; want errFrameTooLarge", err)
	}
	if big.Len() != 0 || roomy.inUse() != 0 {
		t.Errorf("after refusing a large frame: %d bytes unread, %d held", big.Len(), roomy.inUse())
	}
	before := b.inUse()

	// Over the budget: with the first frame still held, a frame of the
	// limit cannot be counted three times over.
	over := strings.NewReader(strings.Repeat("z", limit))
	if _, _, err := readFrame(over, limit, b); !errors.Is(err, errOverBudget) {
		t.Errorf("a frame past the budget: %v; want errOverBudget", err)
	}
	if over.Len() != 0 || b.inUse() != before {
		t.Errorf("after refusing a frame over budget: %d bytes unread, %d held (was %d)", over.Len(), b.inUse(), before)
	}

	// Small frames need no budget, even when it is spent.
	if _, _, err := readFrame(strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"session.list"}`), limit, b); err != nil {
		t.Errorf("a small frame with the budget spent: %v", err)
	}
	h.release()
	if b.inUse() != 0 {
		t.Errorf("%d bytes held after every frame was released", b.inUse())
	}
}
