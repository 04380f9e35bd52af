package chain

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// Hash is the SHA-256 hash of an event in the chain.
type Hash [sha256.Size]byte

// Zero is the hash the first event is chained to.
var Zero Hash

// String returns the hash in lower-case hex, as the envelope stores it.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads a hash in hex.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("chain: hash %q is not %d hex digits", s, 2*len(h))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("chain: hash %q: %w", s, err)
	}
	return h, nil
}

// Event holds the fields of a stored event the chain covers. Its JSON
// encoding, with Data replaced by the canonical payload, is the canonical
// form of the event; the field order here is part of the format.
type Event struct {
	Seq       uint64          `json:"seq"`
	ID        ulid.ULID       `json:"id"`
	SessionID string          `json:"sessionId"`
	Time      time.Time       `json:"time"`
	Type      string          `json:"type"`
	Version   int             `json:"v"`
	Data      json.RawMessage `json:"data"` // the payload as stored
}

// Canonical returns the bytes the chain hashes for e.
func Canonical(e Event) ([]byte, error) {
	data, err := CanonicalPayload(e.Type, e.Data)
	if err != nil {
		return nil, err
	}
	e.Data = data
	out, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("chain: encode event %d: %w", e.Seq, err)
	}
	return out, nil
}

// Next returns the hash of an event whose canonical form is canonical and
// whose predecessor's hash is prev.
func Next(prev Hash, canonical []byte) Hash {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canonical)
	var out Hash
	h.Sum(out[:0])
	return out
}

// Of returns the hash of e chained to prev.
func Of(prev Hash, e Event) (Hash, error) {
	c, err := Canonical(e)
	if err != nil {
		return Hash{}, err
	}
	return Next(prev, c), nil
}

// OutputType is the event type whose output retention may drop.
const OutputType = "CommandCompleted"

// CompactedMember marks a payload whose output was replaced by digests.
const CompactedMember = "outputCompacted"

// outputMember is a payload member retention may drop, with the member that
// holds its digest instead and the one that says how it holds the bytes.
type outputMember struct{ name, digest, encoding string }

var outputMembers = []outputMember{
	{"stdout", "stdoutSha256", "stdoutEncoding"},
	{"stderr", "stderrSha256", "stderrEncoding"},
}

// EncodingBase64, as the value of an output's encoding member
// ("stdoutEncoding"), says that the output member holds the base64 of the
// bytes: output that is not UTF-8, from payload version 2 on. Without an
// encoding member the output member holds the bytes as text.
const EncodingBase64 = "base64"

// ErrPayload is returned for a payload the chain cannot encode.
var ErrPayload = errors.New("chain: payload is not valid")

// CanonicalPayload returns the payload as the canonical form holds it: the
// stored payload, except that in OutputType events each output member is
// replaced, in place, by its digest member (the SHA-256 of the bytes it
// holds, see EncodingBase64), and CompactedMember is left out. A payload whose output was compacted thus has the same canonical
// form as before.
func CanonicalPayload(typ string, data json.RawMessage) (json.RawMessage, error) {
	if typ != OutputType {
		return data, nil
	}
	ms, err := members(data)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(len(data))
	out.WriteByte('{')
	compacted, digests := false, 0
	n := 0
	for _, m := range ms {
		name, value := m.name, m.value
		switch {
		case name == CompactedMember:
			if string(value) != "true" {
				return nil, fmt.Errorf("%w: %s is %s, not true", ErrPayload, CompactedMember, value)
			}
			compacted = true
			continue
		case isDigest(name):
			digests++
		default:
			if om, ok := outputOf(name); ok {
				d, err := digestMember(ms, m, om)
				if err != nil {
					return nil, err
				}
				name, value = d.name, d.value
			}
		}
		if n > 0 {
			out.WriteByte(',')
		}
		n++
		writeName(&out, name)
		out.WriteByte(':')
		out.Write(value)
	}
	out.WriteByte('}')
	if compacted != (digests > 0) {
		return nil, fmt.Errorf("%w: %s and the digest members disagree", ErrPayload, CompactedMember)
	}
	return out.Bytes(), nil
}

// CompactOutput replaces the output members of an OutputType payload by
// their digests, in place, and marks it with CompactedMember. It reports
// whether it changed anything; the result has the same canonical form.
func CompactOutput(data json.RawMessage) (json.RawMessage, bool, error) {
	ms, err := members(data)
	if err != nil {
		return nil, false, err
	}
	changed, marked := false, false
	for i, m := range ms {
		if m.name == CompactedMember {
			marked = true
		}
		if om, ok := outputOf(m.name); ok {
			if ms[i], err = digestMember(ms, m, om); err != nil {
				return nil, false, err
			}
			changed = true
		}
	}
	if !changed {
		return data, false, nil
	}
	if !marked {
		ms = append(ms, member{CompactedMember, json.RawMessage("true")})
	}
	var out bytes.Buffer
	out.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			out.WriteByte(',')
		}
		writeName(&out, m.name)
		out.WriteByte(':')
		out.Write(m.value)
	}
	out.WriteByte('}')
	return out.Bytes(), true, nil
}

// Digest is the hex SHA-256 of an output's bytes, as a digest member holds
// it.
func Digest(output string) string {
	sum := sha256.Sum256([]byte(output))
	return hex.EncodeToString(sum[:])
}

// digestMember returns the digest member that stands for the output member
// m of the payload ms: the SHA-256 of the bytes m holds, as text or, if the
// payload's encoding member for it says so, as base64.
func digestMember(ms []member, m member, om outputMember) (member, error) {
	var text, encoding string
	if err := json.Unmarshal(m.value, &text); err != nil {
		return member{}, fmt.Errorf("%w: %s is not a string", ErrPayload, m.name)
	}
	for _, e := range ms {
		if e.name == om.encoding {
			if err := json.Unmarshal(e.value, &encoding); err != nil || encoding != EncodingBase64 {
				return member{}, fmt.Errorf("%w: %s is %s, not %q", ErrPayload, e.name, e.value, EncodingBase64)
			}
		}
	}
	output := text
	if encoding == EncodingBase64 {
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return member{}, fmt.Errorf("%w: %s is not base64: %v", ErrPayload, m.name, err)
		}
		output = string(b)
	}
	return member{om.digest, json.RawMessage(`"` + Digest(output) + `"`)}, nil
}

func outputOf(name string) (outputMember, bool) {
	for _, m := range outputMembers {
		if m.name == name {
			return m, true
		}
	}
	return outputMember{}, false
}

func isDigest(name string) bool {
	for _, m := range outputMembers {
		if m.digest == name {
			return true
		}
	}
	return false
}

func writeName(out *bytes.Buffer, name string) {
	if plain(name) {
		out.WriteByte('"')
		out.WriteString(name)
		out.WriteByte('"')
		return
	}
	b, _ := json.Marshal(name) // a string always encodes
	out.Write(b)
}

// plain reports whether encoding/json writes name as it is, in quotes.
func plain(name string) bool {
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c < 0x20, c >= 0x80, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// memberName decodes a member name (a JSON string with its quotes).
func memberName(quoted []byte) (string, error) {
	if inner := quoted[1 : len(quoted)-1]; plain(string(inner)) {
		return string(inner), nil
	}
	var name string
	if err := json.Unmarshal(quoted, &name); err != nil {
		return "", fmt.Errorf("%w: member name: %v", ErrPayload, err)
	}
	return name, nil
}

// member is one member of a JSON object: its decoded name and its value as
// stored.
type member struct {
	name  string
	value json.RawMessage
}

// members splits a JSON object into its members, in order, keeping each
// value's bytes as they are.
func members(data []byte) ([]member, error) {
	s := scanner{data: data}
	s.space()
	if !s.take('{') {
		return nil, fmt.Errorf("%w: not a JSON object", ErrPayload)
	}
	var out []member
	s.space()
	if s.take('}') {
		return out, s.end()
	}
	for {
		s.space()
		start := s.pos
		if err := s.str(); err != nil {
			return nil, err
		}
		name, err := memberName(data[start:s.pos])
		if err != nil {
			return nil, err
		}
		s.space()
		if !s.take(':') {
			return nil, fmt.Errorf("%w: no ':' after member %q", ErrPayload, name)
		}
		s.space()
		start = s.pos
		if err := s.value(); err != nil {
			return nil, err
		}
		out = append(out, member{name, json.RawMessage(data[start:s.pos])})
		s.space()
		if s.take(',') {
			continue
		}
		if s.take('}') {
			return out, s.end()
		}
		return nil, fmt.Errorf("%w: expected ',' or '}' at byte %d", ErrPayload, s.pos)
	}
}

// scanner finds the extent of JSON values. It does not validate their
// insides (numbers, escapes): json.Marshal of the canonical form does.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) take(c byte) bool {
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

func (s *scanner) end() error {
	s.space()
	if s.pos != len(s.data) {
		return fmt.Errorf("%w: data after the object at byte %d", ErrPayload, s.pos)
	}
	return nil
}

func (s *scanner) str() error {
	if !s.take('"') {
		return fmt.Errorf("%w: expected a string at byte %d", ErrPayload, s.pos)
	}
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case '\\':
			s.pos += 2
		case '"':
			s.pos++
			return nil
		default:
			s.pos++
		}
	}
	return fmt.Errorf("%w: unterminated string", ErrPayload)
}

func (s *scanner) value() error {
	if s.pos >= len(s.data) {
		return fmt.Errorf("%w: value missing at the end", ErrPayload)
	}
	switch s.data[s.pos] {
	case '"':
		return s.str()
	case '{', '[':
		depth := 0
		for s.pos < len(s.data) {
			switch s.data[s.pos] {
			case '"':
				if err := s.str(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.pos++
			if depth == 0 {
				return nil
			}
		}
		return fmt.Errorf("%w: unterminated object or array", ErrPayload)
	default: // number, true, false, null
		start := s.pos
		for s.pos < len(s.data) {
			switch s.data[s.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if s.pos == start {
					return fmt.Errorf("%w: value missing at byte %d", ErrPayload, s.pos)
				}
				return nil
			}
			s.pos++
		}
		return nil
	}
}
