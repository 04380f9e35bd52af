package rpc_test

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

// The aliases of PROTOCOL.md, binary content, stdin, env and a custom image.
func TestCommandAliasesAndOptions(t *testing.T) {
	c := newTestServer(t).dial()
	// A custom image: the javascript image serves a session that says python.
	custom := c.create(map[string]any{"language": "python", "dockerImage": "codebeaker-javascript:latest", "cpuShares": 512})
	if sh := c.shell(custom, "node", "-e", "console.log(6*7)"); sh.Stdout != "42\n" {
		t.Errorf("custom image: %q %q", sh.Stdout, sh.Stderr)
	}
	sid := c.create(map[string]any{"language": "python"})

	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "bytes.bin", "content": base64.StdEncoding.EncodeToString(every), "encoding": "base64"})
	env := c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "bytes.bin"})
	var read struct {
		Content, Encoding string
		Bytes             int
	}
	json.Unmarshal(env.Result, &read)
	got, _ := base64.StdEncoding.DecodeString(read.Content)
	if read.Encoding != "base64" || read.Bytes != 256 || string(got) != string(every) {
		t.Errorf("binary round trip: %+v", read)
	}
	if sh := c.shell(sid, "sh", "-c", "od -An -tu1 bytes.bin | wc -w"); sh.Stdout != "256\n" {
		t.Errorf("the program sees %q bytes", sh.Stdout)
	}

	steps := []struct {
		command map[string]any
		want    string
	}{
		{map[string]any{"type": "create_dir", "path": "d/e"}, `{"path": "/workspace/d/e"}`},
		{map[string]any{"type": "write_file", "path": "d/e/f.txt", "content": "f"}, `{"path": "/workspace/d/e/f.txt", "bytes": 1}`},
		{map[string]any{"type": "copy_file", "source": "d/e/f.txt", "destination": "g.txt"}, `{"sourcePath": "/workspace/d/e/f.txt", "destinationPath": "/workspace/g.txt", "bytes": 1}`},
		{map[string]any{"type": "list_files", "path": "d/e"}, ""},
		{map[string]any{"type": "delete_file", "path": "d"}, `{"path": "/workspace/d", "deleted": true}`},
		{map[string]any{"type": "shell", "command": "cat", "stdin": "from stdin"}, ""},
		{map[string]any{"type": "execute", "code": "import os\nprint(os.environ['GREETING'], open('g.txt').read())", "env": map[string]string{"GREETING": "hi"}}, `"hi f"`},
	}
	for _, st := range steps {
		env := c.mustSucceed(sid, st.command)
		if st.want != "" {
			assertJSON(t, env.Result, st.want)
		}
	}
	env = c.mustSucceed(sid, map[string]any{"type": "shell", "command": "cat", "stdin": "from stdin"})
	var sh shellResult
	json.Unmarshal(env.Result, &sh)
	if sh.Stdout != "from stdin" {
		t.Errorf("stdin: %q", sh.Stdout)
	}
	env = c.mustSucceed(sid, map[string]any{"type": "list_directory"})
	var listing struct{ Entries []struct{ Name string } }
	json.Unmarshal(env.Result, &listing)
	if len(listing.Entries) != 2 || listing.Entries[0].Name != "bytes.bin" || listing.Entries[1].Name != "g.txt" {
		t.Errorf("after delete of d: %s", env.Result)
	}
}
