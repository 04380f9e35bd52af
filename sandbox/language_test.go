package sandbox

import (
	"slices"
	"strings"
	"testing"
)

func TestLookupLanguage(t *testing.T) {
	want := map[string][]string{
		"python":     {"python", "Python", "PYTHON", " python "},
		"javascript": {"javascript", "JavaScript", "nodejs", "NodeJS", "node", "NODE"},
		"go":         {"go", "Go", "golang", "GoLang"},
		"csharp":     {"csharp", "CSharp", "dotnet", "DotNet", "cs", "CS"},
		"deno":       {"deno", "Deno", "typescript", "TypeScript", "ts", "TS"},
	}
	for canonical, names := range want {
		for _, name := range names {
			l, err := LookupLanguage(name)
			if err != nil || l.Name != canonical {
				t.Errorf("LookupLanguage(%q) = %q, %v; want %q", name, l.Name, err, canonical)
			}
		}
	}
	for _, name := range []string{"cobol", "", "py thon", "python2", "denox"} {
		l, err := LookupLanguage(name)
		if err == nil {
			t.Errorf("LookupLanguage(%q) = %q; want an error", name, l.Name)
			continue
		}
		if !strings.Contains(err.Error(), "unsupported language") || !strings.Contains(err.Error(), "python, javascript, go, csharp, deno") {
			t.Errorf("LookupLanguage(%q) error %q does not say what is supported", name, err)
		}
	}
}

func TestLanguageKinds(t *testing.T) {
	for _, name := range []string{"python", "javascript", "go", "csharp"} {
		l, _ := LookupLanguage(name)
		if l.Kind != KindDocker || l.Image != "codebeaker-"+name+":latest" {
			t.Errorf("%s: kind %q image %q", name, l.Kind, l.Image)
		}
	}
	deno, _ := LookupLanguage("deno")
	if deno.Kind != KindDeno || deno.Image != "" {
		t.Errorf("deno: kind %q image %q", deno.Kind, deno.Image)
	}
	var docker []string
	for _, l := range Languages(KindDocker) {
		docker = append(docker, l.Name)
	}
	if !slices.Equal(docker, []string{"python", "javascript", "go", "csharp"}) {
		t.Errorf("Languages(docker) = %v", docker)
	}
	if got := Languages(KindDeno); len(got) != 1 || got[0].Name != "deno" {
		t.Errorf("Languages(deno) = %v", got)
	}
	if got := Languages("nope"); len(got) != 0 {
		t.Errorf("Languages(nope) = %v", got)
	}
}

func TestCodeFileAndCommand(t *testing.T) {
	cases := []struct {
		lang, file, cleanup string
		command             []string
	}{
		{"python", ".codebeaker-ID1.py", ".codebeaker-ID1.py", []string{"python3", "/workspace/.codebeaker-ID1.py"}},
		{"javascript", ".codebeaker-ID1.js", ".codebeaker-ID1.js", []string{"node", "/workspace/.codebeaker-ID1.js"}},
		{"go", ".codebeaker-ID1/main.go", ".codebeaker-ID1", []string{"go", "run", "/workspace/.codebeaker-ID1/main.go"}},
		{"csharp", ".codebeaker-ID1/Program.cs", ".codebeaker-ID1", []string{"dotnet", "script", "/workspace/.codebeaker-ID1/Program.cs"}},
		{"deno", ".codebeaker-ID1.ts", ".codebeaker-ID1.ts", []string{"deno", "run", "/workspace/.codebeaker-ID1.ts"}},
	}
	for _, c := range cases {
		l, err := LookupLanguage(c.lang)
		if err != nil {
			t.Fatal(err)
		}
		file, cleanup := l.CodeFile("ID1")
		if file != c.file || cleanup != c.cleanup {
			t.Errorf("%s: CodeFile = %q, %q; want %q, %q", c.lang, file, cleanup, c.file, c.cleanup)
		}
		if rel, err := Rel(file); err != nil || rel != file {
			t.Errorf("%s: code file %q is not a clean workspace path (%q, %v)", c.lang, file, rel, err)
		}
		first := l.CodeCommand(file)
		if !slices.Equal(first, c.command) {
			t.Errorf("%s: CodeCommand = %q; want %q", c.lang, first, c.command)
		}
		// Each command is a fresh slice: changing one must not change the
		// language.
		first[0] = "changed"
		if again := l.CodeCommand(file); !slices.Equal(again, c.command) {
			t.Errorf("%s: CodeCommand after changing a result = %q", c.lang, again)
		}
	}
}
