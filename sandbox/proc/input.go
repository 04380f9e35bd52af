package proc

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// inputQueue feeds a process's stdin from a goroutine, so that a client's
// write never waits for a process that does not read; what it holds is
// bounded (maxInput).
type inputQueue struct {
	w     io.Writer
	close func() error // ends stdin; nil when there is none

	mu      sync.Mutex
	cond    *sync.Cond
	chunks  [][]byte
	queued  int
	eof     bool // asked for: stdin ends after the queued bytes
	stopped bool // the process ended, or its stdin is broken
}

func newInputQueue(w io.Writer, closeIn func() error) *inputQueue {
	q := &inputQueue{w: w, close: closeIn}
	q.cond = sync.NewCond(&q.mu)
	if w != nil {
		go q.feed()
	}
	return q
}

// put queues data, then the end of stdin when eof is set.
func (q *inputQueue) put(data []byte, eof bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.w == nil:
		return errors.New("the process has no stdin")
	case q.eof:
		return errors.New("the process's stdin is closed")
	case q.stopped:
		return errors.New("the process no longer reads its stdin")
	case q.queued+len(data) > maxInput:
		return fmt.Errorf("the process has %d bytes of stdin it has not read yet; at most %d may wait", q.queued, maxInput)
	}
	if len(data) > 0 {
		q.chunks = append(q.chunks, append([]byte(nil), data...))
		q.queued += len(data)
	}
	q.eof = eof
	q.cond.Signal()
	return nil
}

// stop ends the feeding: the process has ended.
func (q *inputQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.chunks, q.queued = nil, 0
	q.cond.Signal()
	q.mu.Unlock()
}

func (q *inputQueue) feed() {
	for {
		q.mu.Lock()
		for len(q.chunks) == 0 && !q.eof && !q.stopped {
			q.cond.Wait()
		}
		if q.stopped {
			q.mu.Unlock()
			if q.close != nil {
				q.close()
			}
			return
		}
		if len(q.chunks) == 0 { // eof, all written
			q.mu.Unlock()
			q.close()
			return
		}
		chunk := q.chunks[0]
		q.mu.Unlock()

		_, err := q.w.Write(chunk)

		q.mu.Lock()
		if len(q.chunks) > 0 {
			q.chunks = q.chunks[1:]
			q.queued -= len(chunk)
		}
		if err != nil {
			q.stopped, q.chunks, q.queued = true, nil, 0
		}
		q.mu.Unlock()
	}
}
