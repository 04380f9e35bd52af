package chain_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/codebeaker/codebeaker/eventlog/chain"
)

// The example in eventlog/doc.go: if this test changes, so does the doc.
func TestDocumentedExample(t *testing.T) {
	e := chain.Event{
		Seq: 2, ID: ulid.MustParse("01JFS0000000000000000000A2"), SessionID: "01jfs",
		Time: time.Date(2025, 3, 1, 12, 0, 1, 500_000_000, time.UTC), Type: "CommandCompleted", Version: 1,
		Data: json.RawMessage(`{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":98,"stdoutBytes":3,"stderrBytes":0,"stdout":"hi\n"}`),
	}
	c, err := chain.Canonical(e)
	if err != nil {
		t.Fatal(err)
	}
	const wantCanonical = `{"seq":2,"id":"01JFS0000000000000000000A2","sessionId":"01jfs","time":"2025-03-01T12:00:01.5Z","type":"CommandCompleted","v":1,"data":{"commandId":"c1","type":"execute_shell","success":true,"exitCode":0,"durationMs":98,"stdoutBytes":3,"stderrBytes":0,"stdoutSha256":"98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"}}`
	if string(c) != wantCanonical {
		t.Errorf("canonical form:\n got %s\nwant %s", c, wantCanonical)
	}
	prev, err := chain.ParseHash("6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b")
	if err != nil {
		t.Fatal(err)
	}
	h := chain.Next(prev, c)
	if got, want := h.String(), "e0078082a8e20662ebd3b67aff80b2a3022ab87d19145fd24c74f6065652b41c"; got != want {
		t.Errorf("hash = %s, want %s", got, want)
	}
	if via, err := chain.Of(prev, e); err != nil || via != h {
		t.Errorf("Of = %s, %v; want %s", via, err, h)
	}
	if chain.Zero.String() != strings.Repeat("0", 64) {
		t.Errorf("Zero = %s", chain.Zero)
	}
}

var outputPayloads = []string{
	`{"commandId":"c","type":"execute_shell","success":true,"stdoutBytes":3,"stdout":"hi\n"}`,
	`{"commandId":"c","type":"execute_shell","success":false,"stderr":"\u003cb\u003e \u0026 \u2028 é \"q\" \\"}`,
	`{"commandId":"c","stdout":"out","stderr":"err","stdoutTruncated":true,"nested":{"stdout":"inner"},"list":["}",{"a":"]"}]}`,
	"{ \"commandId\" : \"c\" ,\n \"stdout\" : \"spaced\" , \"n\" : -1.5e3 , \"z\" : null }",
	`{"commandId":"c","stdout":"//4gb2uA","stdoutEncoding":"base64","stderr":"caf\u00e9","stderrTruncated":true}`,
	`{"commandId":"c","stderrEncoding":"base64","stdout":"ok","stderr":"/w=="}`,
}

// Compaction drops the output but keeps the canonical form, and so the
// hash; compacting again changes nothing.
func TestCompactKeepsCanonicalForm(t *testing.T) {
	for _, p := range outputPayloads {
		data := json.RawMessage(p)
		before, err := chain.CanonicalPayload(chain.OutputType, data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		compacted, changed, err := chain.CompactOutput(data)
		if err != nil || !changed {
			t.Fatalf("CompactOutput(%s) = %s, %v, %v", p, compacted, changed, err)
		}
		var fields map[string]any
		if err := json.Unmarshal(compacted, &fields); err != nil {
			t.Fatalf("compacted payload %s is not JSON: %v", compacted, err)
		}
		if _, ok := fields["stdout"]; ok {
			t.Errorf("compacted payload %s still has stdout", compacted)
		}
		if _, ok := fields["stderr"]; ok {
			t.Errorf("compacted payload %s still has stderr", compacted)
		}
		if fields["outputCompacted"] != true {
			t.Errorf("compacted payload %s is not marked", compacted)
		}
		after, err := chain.CanonicalPayload(chain.OutputType, compacted)
		if err != nil {
			t.Fatalf("%s: %v", compacted, err)
		}
		if !bytes.Equal(before, after) {
			t.Errorf("compaction changed the canonical payload:\nbefore %s\nafter  %s", before, after)
		}
		again, changed, err := chain.CompactOutput(compacted)
		if err != nil || changed || !bytes.Equal(again, compacted) {
			t.Errorf("compacting again = %s, %v, %v", again, changed, err)
		}
	}
	// The digest is of the text the client saw, not of its JSON escaping.
	compacted, _, _ := chain.CompactOutput(json.RawMessage(`{"stdout":"\u003cb\u003e"}`))
	if want := `{"stdoutSha256":"` + chain.Digest("<b>") + `","outputCompacted":true}`; string(compacted) != want {
		t.Errorf("compacted = %s, want %s", compacted, want)
	}
	// Output held as base64 has the digest of its bytes, and keeps saying
	// how it was held.
	compacted, _, _ = chain.CompactOutput(json.RawMessage(`{"stdout":"//4gb2uA","stdoutEncoding":"base64"}`))
	if want := `{"stdoutSha256":"359d47178b9f2182725bc9558194402c68b187af96210e18247ddbea3c69147b","stdoutEncoding":"base64","outputCompacted":true}`; string(compacted) != want {
		t.Errorf("compacted = %s, want %s", compacted, want)
	}
}

// Every change an auditor cares about changes the canonical form.
func TestTamperingChangesCanonicalForm(t *testing.T) {
	base := chain.Event{Seq: 7, ID: ulid.MustParse("01JFS0000000000000000000A7"), SessionID: "s", Time: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Type: chain.OutputType, Version: 1, Data: json.RawMessage(`{"commandId":"c","success":true,"exitCode":0,"stdout":"ok"}`)}
	want, err := chain.Canonical(base)
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(e *chain.Event){
		"seq":     func(e *chain.Event) { e.Seq++ },
		"id":      func(e *chain.Event) { e.ID[15]++ },
		"session": func(e *chain.Event) { e.SessionID = "t" },
		"time":    func(e *chain.Event) { e.Time = e.Time.Add(time.Nanosecond) },
		"type":    func(e *chain.Event) { e.Type = "CommandStarted" },
		"version": func(e *chain.Event) { e.Version = 2 },
		"output": func(e *chain.Event) {
			e.Data = json.RawMessage(`{"commandId":"c","success":true,"exitCode":0,"stdout":"OK"}`)
		},
		"success": func(e *chain.Event) {
			e.Data = json.RawMessage(`{"commandId":"c","success":false,"exitCode":0,"stdout":"ok"}`)
		},
		"added": func(e *chain.Event) {
			e.Data = json.RawMessage(`{"commandId":"c","success":true,"exitCode":0,"stdout":"ok","x":1}`)
		},
		"reordered": func(e *chain.Event) {
			e.Data = json.RawMessage(`{"success":true,"commandId":"c","exitCode":0,"stdout":"ok"}`)
		},
		"digest": func(e *chain.Event) {
			e.Data = json.RawMessage(`{"commandId":"c","success":true,"exitCode":0,"stdoutSha256":"00","outputCompacted":true}`)
		},
		"other type": func(e *chain.Event) { e.Type = "SessionClosing" },
		"encoding": func(e *chain.Event) { // the same bytes, held as base64
			e.Data = json.RawMessage(`{"commandId":"c","success":true,"exitCode":0,"stdout":"b2s=","stdoutEncoding":"base64"}`)
		},
	} {
		e := base
		change(&e)
		got, err := chain.Canonical(e)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if bytes.Equal(got, want) {
			t.Errorf("changing the %s leaves the canonical form %s", name, got)
		}
	}
}

func TestInvalidPayloads(t *testing.T) {
	for _, p := range []string{
		``, `[]`, `"x"`, `{`, `{"stdout":1}`, `{"stdout":"a"`, `{"a":1}x`, `{"a" 1}`, `{"a":}`, `{"a":[}`,
		`{"outputCompacted":true}`,                      // marked, but no digest
		`{"stdoutSha256":"ab"}`,                         // a digest, but not marked
		`{"stdoutSha256":"ab","outputCompacted":false}`, // marked false
		`{"stdout":"a","stdoutEncoding":"hex"}`,         // an encoding not known
		`{"stdout":"a","stdoutEncoding":1}`,             // an encoding not a string
		`{"stdout":"!!","stdoutEncoding":"base64"}`,     // not base64
	} {
		_, err := chain.Canonical(chain.Event{Type: chain.OutputType, Data: json.RawMessage(p)})
		if err == nil {
			t.Errorf("Canonical accepted the payload %q", p)
		}
	}
	// Payloads of other types are taken as they are, but must be JSON.
	if _, err := chain.Canonical(chain.Event{Type: "SessionClosing", Data: json.RawMessage(`{"a":`)}); err == nil {
		t.Error("Canonical accepted invalid JSON in a SessionClosing payload")
	}
	if _, _, err := chain.CompactOutput(json.RawMessage(`{"stderr":false}`)); !errors.Is(err, chain.ErrPayload) {
		t.Errorf("CompactOutput of a non-string stderr = %v, want ErrPayload", err)
	}
	if _, err := chain.ParseHash("zz"); err == nil {
		t.Error("ParseHash accepted zz")
	}
}

// FuzzCompact: for any object, compaction keeps the canonical form.
func FuzzCompact(f *testing.F) {
	for _, p := range outputPayloads {
		f.Add(p)
	}
	f.Add(`{}`)
	f.Add(`{"stdout":"a","stdout":"b"}`)
	f.Fuzz(func(t *testing.T, p string) {
		data := json.RawMessage(p)
		before, err := chain.CanonicalPayload(chain.OutputType, data)
		if err != nil || !json.Valid(before) {
			return
		}
		compacted, _, err := chain.CompactOutput(data)
		if err != nil {
			t.Fatalf("CompactOutput(%q) failed after CanonicalPayload succeeded: %v", p, err)
		}
		after, err := chain.CanonicalPayload(chain.OutputType, compacted)
		if err != nil {
			t.Fatalf("CanonicalPayload of compacted %q: %v", compacted, err)
		}
		if !bytes.Equal(before, after) {
			t.Fatalf("compaction of %q changed the canonical payload:\n%s\n%s", p, before, after)
		}
	})
}
