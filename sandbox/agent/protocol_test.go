package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame reader and decoder, as a
// hostile peer would: they must return an error or a message, never panic
// nor allocate past MaxFrame, and whatever decodes encodes back to a frame
// that decodes the same.
func FuzzDecode(f *testing.F) {
	seed := func(t FrameType, payload string) []byte {
		b, _ := AppendFrame(nil, t, []byte(payload))
		return b
	}
	f.Add(seed(Hello, `{"version":1}`))
	f.Add(seed(Start, `{"args":["sh","-c","echo hi"],"env":["A=b"],"dir":"/workspace"}`))
	f.Add(seed(Exited, `{"exitCode":137,"signal":9,"killed":true}`))
	f.Add(seed(Stdout, "\xff\xfe bytes"))
	f.Add(seed(Kill, ""))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 'H'})
	f.Add([]byte{0, 0, 0, 0})
	f.Add(append(seed(Start, `{"args":[]}`), seed(Error, `{"code":"x","message":"y"}`)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewReader(bytes.NewReader(data))
		for {
			fr0, err := fr.Next()
			if err != nil {
				return
			}
			if len(fr0.Payload)+1 > MaxFrame {
				t.Fatalf("a frame of %d bytes passed the reader", len(fr0.Payload)+1)
			}
			msg, err := Decode(fr0)
			if err != nil {
				continue
			}
			if data, ok := msg.([]byte); ok {
				if !bytes.Equal(data, fr0.Payload) {
					t.Fatal("data frame changed by decoding")
				}
				continue
			}
			if msg == nil {
				continue
			}
			var buf bytes.Buffer
			if err := WriteJSON(&buf, fr0.Type, msg); err != nil {
				t.Fatalf("re-encode %T: %v", msg, err)
			}
			again, err := NewReader(&buf).Next()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decode(again); err != nil {
				t.Fatalf("a decoded %T does not decode again: %v", msg, err)
			}
		}
	})
}

func TestReaderRefusesOversizedFrames(t *testing.T) {
	var head [4]byte
	binary.BigEndian.PutUint32(head[:], MaxFrame+1)
	_, err := NewReader(bytes.NewReader(head[:])).Next()
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Next on a length of MaxFrame+1: %v; want ErrFrameTooLarge", err)
	}
	// A truncated body is an unexpected EOF, not a clean end.
	b, _ := AppendFrame(nil, Stdout, []byte("hello"))
	if _, err := NewReader(bytes.NewReader(b[:len(b)-1])).Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Next on a cut frame: %v; want io.ErrUnexpectedEOF", err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for name, f := range map[string]Frame{
		"unknown type":        {Type: 'Z', Payload: nil},
		"payload on Kill":     {Type: Kill, Payload: []byte("x")},
		"no program":          {Type: Start, Payload: []byte(`{"args":[]}`)},
		"empty program":       {Type: Start, Payload: []byte(`{"args":[""]}`)},
		"NUL in an argument":  {Type: Start, Payload: []byte(`{"args":["a\u0000b"]}`)},
		"env without =":       {Type: Start, Payload: []byte(`{"args":["a"],"env":["NOEQUALS"]}`)},
		"env with empty name": {Type: Start, Payload: []byte(`{"args":["a"],"env":["=x"]}`)},
		"unknown field":       {Type: Start, Payload: []byte(`{"args":["a"],"user":"root"}`)},
		"trailing data":       {Type: Hello, Payload: []byte(`{"version":1}{}`)},
		"not JSON":            {Type: Hello, Payload: []byte(`version 1`)},
	} {
		if msg, err := Decode(f); err == nil {
			t.Errorf("%s: decoded as %#v; want an error", name, msg)
		}
	}
}
