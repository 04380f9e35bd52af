package proc

import (
	"crypto/sha256"
	"hash"
)

// output is one stream of a process: the newest bytes in a ring, the
// first ones kept apart, a count and a digest of everything.
type output struct {
	ring   []byte // grows up to retain, then wraps: offset o is at ring[o%retain]
	retain int
	total  int64
	head   []byte
	keep   int // bytes of head to keep
	sum    hash.Hash
	closed bool // the stream has ended
}

func newOutput(retain, head int) *output {
	return &output{retain: max(retain, 1), keep: head, sum: sha256.New()}
}

// write appends p, dropping the oldest bytes past retain.
func (o *output) write(p []byte) {
	o.sum.Write(p)
	if room := o.keep - len(o.head); room > 0 {
		o.head = append(o.head, p[:min(room, len(p))]...)
	}
	start := o.total // offset of p's first byte
	o.total += int64(len(p))
	if len(p) > o.retain { // only its end is kept
		start += int64(len(p) - o.retain)
		p = p[len(p)-o.retain:]
	}
	if need := int(min(o.total, int64(o.retain))); len(o.ring) < need {
		o.ring = append(o.ring, make([]byte, need-len(o.ring))...)
	}
	for len(p) > 0 {
		n := copy(o.ring[int(start%int64(o.retain)):], p)
		start += int64(n)
		p = p[n:]
	}
}

// first is the offset of the oldest byte retained.
func (o *output) first() int64 { return max(0, o.total-int64(len(o.ring))) }

// read copies retained bytes from off (at least first, at most total)
// into dst.
func (o *output) read(off int64, dst []byte) int {
	n := 0
	for n < len(dst) && off < o.total {
		at := int(off % int64(o.retain))
		end := len(o.ring)
		if int64(end-at) > o.total-off {
			end = at + int(o.total-off)
		}
		c := copy(dst[n:], o.ring[at:end])
		n += c
		off += int64(c)
	}
	return n
}
