package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"

	"github.com/codebeaker/codebeaker/sandbox"
)

// buildImage builds an image tagged name-<random>:test from a Dockerfile
// (no other files) and removes it when the test ends. The content-hash
// label of scripts/build-runtime-images.sh is blanked: an image built FROM
// a runtime image inherits it, and the script would take it for that
// runtime image.
func buildImage(t *testing.T, r *Runtime, name, dockerfile string) string {
	t.Helper()
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))})
	tw.Write([]byte(dockerfile))
	tw.Close()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tag := name + "-" + hex.EncodeToString(suffix) + ":test"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := r.api.ImageBuild(ctx, &ctxTar, build.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true,
		Labels: map[string]string{"org.codebeaker.content-hash": ""},
	})
	if err != nil {
		t.Fatalf("build %s: %v", tag, err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Cleanup(func() {
		r.api.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	if ok, _ := r.ImageExists(ctx, tag); !ok || bytes.Contains(out, []byte(`"errorDetail"`)) {
		t.Fatalf("build %s failed:\n%s", tag, out)
	}
	return tag
}

// createImage tries to make a container of the image; the test removes
// what it made.
func createImage(t *testing.T, r *Runtime, img string) (*Container, error) {
	t.Helper()
	spec, _ := testSpec(t, r)
	spec.Image = img
	sb, err := r.Create(context.Background(), spec)
	if err != nil {
		if left := sessionContainers(t, r, spec.SessionID); len(left) != 0 {
			t.Errorf("a refused Create left %d containers behind", len(left))
		}
		return nil, err
	}
	t.Cleanup(func() { sb.Close(context.Background()) })
	return sb.(*Container), nil
}

func wantRefused(t *testing.T, err error, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("Create succeeded; want the image refused")
	}
	if !errors.Is(err, sandbox.ErrImageNotAllowed) {
		t.Errorf("error %v; want one wrapping sandbox.ErrImageNotAllowed", err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// TestUnlabelledImageRefused: an image on the host that is not a runtime
// image (no language label) runs only when an --allowed-images pattern
// names it.
func TestUnlabelledImageRefused(t *testing.T) {
	r := newRuntime(t)
	// FROM a runtime image, so that it could run, with the runtime labels
	// blanked (a derived image cannot drop them).
	img := buildImage(t, r, "codebeaker-test-other", "FROM "+python(t).Image+"\n"+
		`LABEL org.codebeaker.language="" org.codebeaker.sandbox-uid=""`+"\n")
	_, err := createImage(t, r, img)
	wantRefused(t, err, img, "not a CodeBeaker runtime image", "--allowed-images")

	if err := r.AllowImages([]string{"example/*", "codebeaker-test-other-*"}); err != nil {
		t.Fatal(err)
	}
	c, err := createImage(t, r, img)
	if err != nil {
		t.Fatalf("Create of an image an --allowed-images pattern names: %v", err)
	}
	if got := run(t, c, "id", "-u"); got != strconv.Itoa(sandbox.UID)+"\n" {
		t.Errorf("id -u in an allowed image: %q; want %d", got, sandbox.UID)
	}
	// A pattern matches the image's name, or its name:tag, as a whole.
	for p, allowed := range map[string]bool{
		"codebeaker-test-other":    false,
		"codebeaker-test-*:latest": false,
		"*/codebeaker-test-*":      false,
		"codebeaker-test-*:test":   true,
		"*":                        true,
	} {
		if err := r.AllowImages([]string{p}); err != nil {
			t.Fatal(err)
		}
		_, err := createImage(t, r, img)
		if allowed && err != nil {
			t.Errorf("pattern %q: %v; want %s allowed", p, err, img)
		} else if !allowed && !errors.Is(err, sandbox.ErrImageNotAllowed) {
			t.Errorf("pattern %q: %v; want %s refused", p, err, img)
		}
	}
	if err := r.AllowImages([]string{"[bad"}); err == nil {
		t.Error("AllowImages took a malformed pattern")
	}
}

// TestStaleRuntimeImageRefused: a runtime image built for another sandbox
// uid (or before the uid was labelled) is refused with a word on how to
// rebuild it.
func TestStaleRuntimeImageRefused(t *testing.T) {
	r := newRuntime(t)
	for _, label := range []string{`org.codebeaker.sandbox-uid="1000"`, `org.codebeaker.sandbox-uid=""`} {
		img := buildImage(t, r, "codebeaker-test-stale", "FROM "+python(t).Image+"\nLABEL "+label+"\n")
		_, err := createImage(t, r, img)
		wantRefused(t, err, img, "scripts/build-runtime-images.sh")
	}
}

// TestImageEntrypointNeverRuns: neither an image's ENTRYPOINT nor its
// HEALTHCHECK runs; the container's only process is the placeholder.
func TestImageEntrypointNeverRuns(t *testing.T) {
	r := newRuntime(t)
	img := buildImage(t, r, "codebeaker-test-entrypoint", "FROM "+python(t).Image+"\n"+
		`ENTRYPOINT ["/bin/sh", "-c", "echo entrypoint > /tmp/entrypoint-ran; exit 3", "--"]`+"\n"+
		`HEALTHCHECK --interval=1s --timeout=1s CMD echo health > /tmp/healthcheck-ran`+"\n")
	c, err := createImage(t, r, img)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	time.Sleep(2500 * time.Millisecond) // three health check intervals
	out := run(t, c, "sh", "-c", "ls /tmp; echo alive")
	if out != "alive\n" {
		t.Errorf("/tmp of the container holds %q; want nothing (the image's entrypoint or health check ran)", strings.TrimSuffix(out, "alive\n"))
	}
	info, err := r.api.ContainerInspect(context.Background(), c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Health != nil {
		t.Errorf("container health %+v; want no health check", info.State.Health)
	}
	if got := append([]string{info.Path}, info.Args...); got[0] != agentPath {
		t.Errorf("container runs %q; want the agent %s", got, agentPath)
	}
}

// TestCustomImageRunsThroughAgent: an allowed image that is no runtime
// image, with no sandbox user, no HOME and its own entrypoint, gets the
// agent all the same: output, exit codes, stdin, env, the working folder,
// HOME from the engine's rule ("/" for a user with no account), and a
// timeout that kills a tree.
func TestCustomImageRunsThroughAgent(t *testing.T) {
	r := newRuntime(t)
	img := buildImage(t, r, "codebeaker-test-custom", "FROM codebeaker-base:bookworm\n"+
		"RUN mkdir -p /srv/app\n"+
		`ENTRYPOINT ["/bin/false"]`+"\n")
	if err := r.AllowImages([]string{"codebeaker-test-custom-*"}); err != nil {
		t.Fatal(err)
	}
	c, err := createImage(t, r, img)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	ctx := context.Background()
	res, err := c.Exec(ctx, sandbox.Process{
		Args: []string{"sh", "-c", `read line; echo "$line|$GREETING|$HOME|$(id -u)|$(pwd)"; echo err >&2; exit 7`},
		Env:  []string{"GREETING=hi"}, Dir: "/srv/app", Stdin: []byte("from stdin\n"), Timeout: time.Minute, OutputLimit: 1 << 10,
	})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	want := "from stdin|hi|/|" + strconv.Itoa(sandbox.UID) + "|/srv/app\n"
	if string(res.Stdout) != want || string(res.Stderr) != "err\n" || res.ExitCode != 7 {
		t.Errorf("stdout %q, stderr %q, exit %d; want %q, %q, 7", res.Stdout, res.Stderr, res.ExitCode, want, "err\n")
	}
	start := time.Now()
	res, err = c.Exec(ctx, sandbox.Process{Args: []string{"sh", "-c", "sleep 100 & setsid sleep 100 & sleep 100"},
		Dir: sandbox.WorkspaceDir, Timeout: time.Second, OutputLimit: 1 << 10})
	if err != nil || !res.TimedOut {
		t.Fatalf("a 1 s timeout: timedOut %v, err %v", res.TimedOut, err)
	}
	t.Logf("a 1 s timeout returned after %v", time.Since(start).Round(time.Millisecond))
	top, err := r.api.ContainerTop(ctx, c.ID(), nil)
	if left := NotAgents(top); err != nil || len(left) != 0 {
		t.Errorf("after the timeout the container runs %v (err %v); want the agent's processes alone", left, err)
	}
}
