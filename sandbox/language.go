package sandbox

import (
	"fmt"
	"path"
	"strings"
)

// WorkspaceDir is where every sandbox sees its session's workspace.
const WorkspaceDir = "/workspace"

// Runtime kinds.
const (
	KindDocker = "docker"
	KindDeno   = "deno"
)

// Language says how a session language runs: in which kind of runtime, from
// which image, and how execute_code turns code into a process.
type Language struct {
	Name  string // canonical name, as session.list shows it
	Kind  string // KindDocker or KindDeno
	Image string // default image for KindDocker
	// codeFile is where execute_code puts the code, relative to the
	// workspace; %s is a unique id. Interpreted languages keep it at the
	// top so that relative imports of workspace files work as in a script
	// the client wrote there.
	codeFile string
	run      []string // program and arguments; the code file's path follows
}

var languages = []Language{
	{Name: "python", Kind: KindDocker, Image: "codebeaker-python:latest", codeFile: ".codebeaker-%s.py", run: []string{"python3"}},
	{Name: "javascript", Kind: KindDocker, Image: "codebeaker-javascript:latest", codeFile: ".codebeaker-%s.js", run: []string{"node"}},
	{Name: "go", Kind: KindDocker, Image: "codebeaker-go:latest", codeFile: ".codebeaker-%s/main.go", run: []string{"go", "run"}},
	{Name: "csharp", Kind: KindDocker, Image: "codebeaker-csharp:latest", codeFile: ".codebeaker-%s/Program.cs", run: []string{"dotnet", "script"}},
	{Name: "deno", Kind: KindDeno, codeFile: ".codebeaker-%s.ts", run: []string{"deno", "run"}},
}

var languageAliases = map[string]string{
	"python": "python", "python3": "python", "py": "python",
	"javascript": "javascript", "nodejs": "javascript", "node": "javascript", "js": "javascript",
	"go": "go", "golang": "go",
	"csharp": "csharp", "dotnet": "csharp", "cs": "csharp", "c#": "csharp",
	"deno": "deno", "typescript": "deno", "ts": "deno",
}

// LookupLanguage finds a language by name or alias, ignoring case.
func LookupLanguage(name string) (Language, error) {
	canonical, ok := languageAliases[strings.ToLower(strings.TrimSpace(name))]
	if !ok {
		return Language{}, fmt.Errorf("unsupported language %q (supported: python, javascript, go, csharp, deno)", name)
	}
	for _, l := range languages {
		if l.Name == canonical {
			return l, nil
		}
	}
	panic("sandbox: alias to unknown language " + canonical)
}

// CodeFile returns where execute_code stores code for run id: the path
// relative to the workspace, and the folder to remove afterwards (the file
// itself when it sits at the top).
func (l Language) CodeFile(id string) (file, cleanup string) {
	file = fmt.Sprintf(l.codeFile, id)
	cleanup = file
	if dir := path.Dir(file); dir != "." {
		cleanup = dir
	}
	return file, cleanup
}

// CodeCommand is the process that runs a code file stored at rel.
func (l Language) CodeCommand(rel string) []string {
	return append(append([]string(nil), l.run...), path.Join(WorkspaceDir, rel))
}

// Languages returns every language of a runtime kind.
func Languages(kind string) []Language {
	var out []Language
	for _, l := range languages {
		if l.Kind == kind {
			out = append(out, l)
		}
	}
	return out
}
