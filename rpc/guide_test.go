package rpc_test

import (
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The usage guide's examples, sent as the guide shows them, over a real
// WebSocket connection, with the guide's expected output.

func TestGuideSessionWalkthrough(t *testing.T) { eachPoolSize(t, guideSessionWalkthrough) }

func guideSessionWalkthrough(t *testing.T, pool serverOption) {
	ts := newTestServer(t, pool)
	c := ts.dial()

	// 1. session.create, with the guide's params.
	r := c.call("session.create", map[string]any{"language": "python", "idleTimeoutMinutes": 30, "maxLifetimeMinutes": 120, "memoryLimitMB": 512})
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	for _, k := range []string{"config", "containerId", "createdAt", "language", "sessionId", "state"} {
		if !slices.Contains(keys(t, r.Result), k) {
			t.Errorf("create result lacks %q: %s", k, r.Result)
		}
	}
	var created struct {
		SessionID, ContainerID, Language, State string
		CreatedAt                               string
		Config                                  struct{ IdleTimeoutMinutes, MaxLifetimeMinutes float64 }
	}
	json.Unmarshal(r.Result, &created)
	if created.Language != "python" || created.State != "Active" || created.ContainerID == "" ||
		created.Config.IdleTimeoutMinutes != 30 || created.Config.MaxLifetimeMinutes != 120 {
		t.Errorf("create result: %s", r.Result)
	}
	if _, err := time.Parse(time.RFC3339, created.CreatedAt); err != nil || !strings.HasSuffix(created.CreatedAt, "Z") {
		t.Errorf("createdAt %q is not RFC 3339 UTC", created.CreatedAt)
	}
	sid := created.SessionID

	// 2. write_file.
	env := c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/hello.py", "content": "print('Hello, World!')", "mode": "Create"})
	assertJSON(t, env.Result, `{"path": "/workspace/hello.py", "bytes": 22}`)

	// 3. execute_shell.
	env = c.mustSucceed(sid, map[string]any{"type": "execute_shell", "commandName": "python3", "args": []string{"/workspace/hello.py"}, "workingDirectory": "/workspace"})
	if got := keys(t, env.Result); !slices.Equal(got, []string{"durationMs", "exitCode", "stderr", "stdout"}) {
		t.Errorf("execute_shell result members %v", got)
	}
	var sh shellResult
	json.Unmarshal(env.Result, &sh)
	if sh.ExitCode != 0 || sh.Stdout != "Hello, World!\n" || sh.Stderr != "" {
		t.Errorf("execute_shell result %s", env.Result)
	}

	// 4. read_file.
	env = c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "/workspace/hello.py"})
	assertJSON(t, env.Result, `{"content": "print('Hello, World!')", "bytes": 22}`)

	// 5. session.list.
	var list struct {
		Count    int `json:"count"`
		Sessions []map[string]json.RawMessage
	}
	raw := c.ok("session.list", map[string]any{}, &list)
	if list.Count != 1 || len(list.Sessions) != 1 {
		t.Fatalf("session.list: %s", raw)
	}
	s := list.Sessions[0]
	want := []string{"containerId", "createdAt", "executionCount", "idleMinutes", "language", "lastActivity", "lifetimeMinutes", "sessionId", "state"}
	if got := slices.Sorted(maps.Keys(s)); !slices.Equal(got, want) {
		t.Errorf("session.list members %v, want %v", got, want)
	}
	assertJSON(t, s["executionCount"], `3`)
	assertJSON(t, s["state"], `"Idle"`)
	assertJSON(t, s["sessionId"], `"`+sid+`"`)

	// 6. session.close, then the session is gone from the list and closed.
	raw = c.ok("session.close", map[string]any{"sessionId": sid}, nil)
	assertJSON(t, raw, `{"sessionId": "`+sid+`", "closed": true}`)
	c.ok("session.list", map[string]any{}, &list)
	if list.Count != 0 {
		t.Errorf("closed session still listed: %+v", list)
	}
	// Removed in the background, promptly.
	eventually(t, "the container removed after close", func() bool { return len(containersOf(t, sid)) == 0 })
}

// program runs the guide's write-then-run pattern and returns stdout.
func program(t *testing.T, c *wsClient, language, path, content, commandName string, args ...string) string {
	t.Helper()
	sid := c.create(map[string]any{"language": language})
	defer c.ok("session.close", map[string]any{"sessionId": sid}, nil)
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": path, "content": content})
	env := c.mustSucceed(sid, map[string]any{"type": "execute_shell", "commandName": commandName, "args": args})
	var sh shellResult
	json.Unmarshal(env.Result, &sh)
	return sh.Stdout
}

func TestGuideLanguages(t *testing.T) { eachPoolSize(t, guideLanguages) }

func guideLanguages(t *testing.T, pool serverOption) {
	ts := newTestServer(t, pool)
	cases := []struct {
		name, language, path, content, command string
		args                                   []string
		want                                   string
	}{
		{"python", "python", "/workspace/script.py", "for i in range(5):\n    print(f\"Count: {i}\")", "python3", []string{"/workspace/script.py"},
			"Count: 0\nCount: 1\nCount: 2\nCount: 3\nCount: 4\n"},
		{"javascript", "javascript", "/workspace/app.js", "const numbers = [1, 2, 3, 4, 5];\nconst sum = numbers.reduce((a, b) => a + b, 0);\nconsole.log(`Sum: ${sum}`);",
			"node", []string{"/workspace/app.js"}, "Sum: 15\n"},
		{"go", "go", "/workspace/main.go", "package main\n\nimport \"fmt\"\n\nfunc main() {\n    fmt.Println(\"Hello from Go\")\n}",
			"go", []string{"run", "/workspace/main.go"}, "Hello from Go\n"},
		{"csharp", "csharp", "/workspace/Program.cs", "using System;\n\nclass Program\n{\n    static void Main()\n    {\n        Console.WriteLine(\"Hello from C#\");\n    }\n}",
			"dotnet", []string{"script", "/workspace/Program.cs"}, "Hello from C#\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := program(t, ts.dial(), tc.language, tc.path, tc.content, tc.command, tc.args...); got != tc.want {
				t.Errorf("stdout %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGuideMultiTurn(t *testing.T) { eachPoolSize(t, guideMultiTurn) }

func guideMultiTurn(t *testing.T, pool serverOption) {
	c := newTestServer(t, pool).dial()
	sid := c.create(map[string]any{"language": "python"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/data.py", "content": "x = 10\ny = 20"})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/calc.py", "content": "from data import x, y\nprint(f\"Sum: {x + y}\")"})
	if sh := c.shell(sid, "python3", "/workspace/calc.py"); sh.Stdout != "Sum: 30\n" {
		t.Errorf("calc.py printed %q (stderr %q)", sh.Stdout, sh.Stderr)
	}
}

func TestGuidePackages(t *testing.T) { eachPoolSize(t, guidePackages) }

func guidePackages(t *testing.T, pool serverOption) {
	c := newTestServer(t, pool).dial()
	sid := c.create(map[string]any{"language": "python"})
	// No network in the sandbox: requests is preinstalled in the image, so
	// pip finds it satisfied.
	if sh := c.shell(sid, "pip", "install", "--no-cache-dir", "requests"); sh.ExitCode != 0 {
		t.Fatalf("pip install: exit %d\n%s\n%s", sh.ExitCode, sh.Stdout, sh.Stderr)
	}
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/api_test.py", "content": "import requests\nprint(\"requests version:\", requests.__version__)"})
	sh := c.shell(sid, "python3", "/workspace/api_test.py")
	if !regexp.MustCompile(`^requests version: \d+\.\d+\.\d+\n$`).MatchString(sh.Stdout) {
		t.Errorf("api_test.py printed %q (stderr %q)", sh.Stdout, sh.Stderr)
	}
}

func TestGuideCSV(t *testing.T) { eachPoolSize(t, guideCSV) }

func guideCSV(t *testing.T, pool serverOption) {
	c := newTestServer(t, pool).dial()
	sid := c.create(map[string]any{"language": "python"})
	csv := "name,age\nAlice,30\nBob,25\nCharlie,35"
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/data.csv", "content": csv})
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/process.py", "content": `
import csv

with open('/workspace/data.csv', 'r') as f:
    reader = csv.DictReader(f)
    total_age = sum(int(row['age']) for row in reader)

print(f"Total age: {total_age}")
`})
	if sh := c.shell(sid, "python3", "/workspace/process.py"); sh.Stdout != "Total age: 90\n" {
		t.Errorf("process.py printed %q (stderr %q)", sh.Stdout, sh.Stderr)
	}
	env := c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "/workspace/data.csv"})
	var read struct{ Content string }
	json.Unmarshal(env.Result, &read)
	if read.Content != csv {
		t.Errorf("read_file %q, want %q", read.Content, csv)
	}
}

// The command types section of the guide, each as shown there.
func TestGuideCommandTypes(t *testing.T) { eachPoolSize(t, guideCommandTypes) }

func guideCommandTypes(t *testing.T, pool serverOption) {
	c := newTestServer(t, pool).dial()
	sid := c.create(map[string]any{"language": "python"})
	env := c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/file.txt", "content": "파일 내용", "mode": "Create"})
	assertJSON(t, env.Result, `{"path": "/workspace/file.txt", "bytes": 13}`)
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/file.txt", "content": "!", "mode": "Append"})
	env = c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "/workspace/file.txt"})
	assertJSON(t, env.Result, `{"content": "파일 내용!", "bytes": 14}`)

	env = c.mustSucceed(sid, map[string]any{"type": "create_directory", "path": "/workspace/data"})
	assertJSON(t, env.Result, `{"path": "/workspace/data"}`)
	env = c.mustSucceed(sid, map[string]any{"type": "copy_file", "sourcePath": "/workspace/file.txt", "destinationPath": "/workspace/file2.txt"})
	assertJSON(t, env.Result, `{"sourcePath": "/workspace/file.txt", "destinationPath": "/workspace/file2.txt", "bytes": 14}`)
	env = c.mustSucceed(sid, map[string]any{"type": "list_directory", "path": "/workspace"})
	var listing struct {
		Path    string
		Entries []struct {
			Name, Type, ModifiedAt string
			Size                   int64
		}
	}
	json.Unmarshal(env.Result, &listing)
	var names []string
	for _, e := range listing.Entries {
		names = append(names, e.Name+":"+e.Type)
		if _, err := time.Parse(time.RFC3339, e.ModifiedAt); err != nil {
			t.Errorf("entry %s modifiedAt %q", e.Name, e.ModifiedAt)
		}
	}
	if listing.Path != "/workspace" || !slices.Equal(names, []string{"data:directory", "file.txt:file", "file2.txt:file"}) {
		t.Errorf("list_directory %s", env.Result)
	}
	env = c.mustSucceed(sid, map[string]any{"type": "delete_file", "path": "/workspace/file.txt"})
	assertJSON(t, env.Result, `{"path": "/workspace/file.txt", "deleted": true}`)

	// The guide's command error: success false, result null, error says why.
	env = c.exec(sid, map[string]any{"type": "read_file", "path": "/workspace/missing.py"})
	if env.Success || string(env.Result) != "null" || env.Error == nil || *env.Error != "File not found: /workspace/missing.py" {
		t.Errorf("missing file: %+v %s", env, env.Result)
	}
	// The program sees what the file commands did, and the other way round.
	if sh := c.shell(sid, "sh", "-c", "cat file2.txt; ls; echo made > by-program.txt"); sh.Stdout != "파일 내용!data\nfile2.txt\n" {
		t.Errorf("program sees %q", sh.Stdout)
	}
	env = c.mustSucceed(sid, map[string]any{"type": "read_file", "path": "by-program.txt"})
	assertJSON(t, env.Result, `{"content": "made\n", "bytes": 5}`)
}

func assertJSON(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %s", got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s", want)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("got %s, want %s", gb, wb)
	}
}
