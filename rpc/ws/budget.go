package ws

import (
	"errors"
	"io"
	"sync"
	"time"
)

// budget counts the request bytes the server holds, across connections:
// frames being read, and the decoded commands that wait in a queue or run.
type budget struct {
	limit int64
	wait  time.Duration // how long a frame may wait for room before it is refused

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed when bytes are given back
}

func newBudget(limit int64, wait time.Duration) *budget {
	return &budget{limit: limit, wait: wait, freed: make(chan struct{})}
}

// take takes n bytes, waiting up to b.wait for others to give some back:
// a burst of frames waits for the ones before it to be decoded; frames
// behind commands that hold the budget are refused.
func (b *budget) take(n int64) bool {
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		if b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return true
		}
		freed := b.freed
		b.mu.Unlock()
		if n > b.limit {
			return false
		}
		if timeout == nil {
			t := time.NewTimer(b.wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-freed:
		case <-timeout:
			return false
		}
	}
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
}

// inUse is how many bytes are held.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// hold is one frame's share of the budget, from its first byte read until
// its handler returns.
type hold struct {
	b  *budget
	mu sync.Mutex
	n  int64
}

// grow takes n more bytes; false when the budget has not got them.
func (h *hold) grow(n int64) bool {
	if n == 0 {
		return true
	}
	if !h.b.take(n) {
		return false
	}
	h.mu.Lock()
	h.n += n
	h.mu.Unlock()
	return true
}

// keep shrinks the hold to n bytes: the frame is decoded and only n bytes
// of it stay.
func (h *hold) keep(n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n < h.n {
		h.b.give(h.n - n)
		h.n = n
	}
}

func (h *hold) release() { h.keep(0) }

var (
	errFrameTooLarge = errors.New("frame over the size limit")
	errOverBudget    = errors.New("request bytes in flight over the budget")
)

// DecodeCopies is how many times its buffer a frame counts against the
// budget until it is decoded: the buffer, and the copies decoding makes (a
// command's raw JSON, its decoded strings, the log's copy) before the frame
// is garbage.
const DecodeCopies = 3

// smallFrame is the buffer a frame gets without counting: requests that
// small (session.close, session.list) are served when the budget is full,
// and what they take is bounded by the connections and their frames in
// flight.
const smallFrame = 4 << 10

// counted is what a frame buffer of capacity c counts.
func counted(c int64) int64 { return DecodeCopies * max(0, c-smallFrame) }

// readFrame reads a frame of at most limit bytes, taking from b, as its
// buffer grows, what it counts. A frame over limit (errFrameTooLarge) or one
// the budget cannot hold (errOverBudget) is read to its end and dropped,
// holding nothing; other errors are the connection's.
func readFrame(rd io.Reader, limit int64, b *budget) ([]byte, *hold, error) {
	h := &hold{b: b}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			err := errOverBudget
			if int64(len(buf)) == limit {
				var one [1]byte
				n, rerr := io.ReadFull(rd, one[:])
				switch {
				case n == 0 && rerr == io.EOF:
					return buf, h, nil
				case n == 0:
					h.release()
					return nil, nil, rerr
				}
				err = errFrameTooLarge
			} else if size := min(limit, max(2*int64(cap(buf)), smallFrame)); h.grow(counted(size) - counted(int64(cap(buf)))) {
				buf = append(make([]byte, 0, size), buf...)
				err = nil
			}
			if err != nil {
				h.release()
				if _, cerr := io.Copy(io.Discard, rd); cerr != nil {
					return nil, nil, cerr
				}
				return nil, nil, err
			}
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, h, nil
		} else if err != nil {
			h.release()
			return nil, nil, err
		}
	}
}
