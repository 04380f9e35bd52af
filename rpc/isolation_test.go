package rpc_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/rpc/ws"
	"github.com/codebeaker/codebeaker/sandbox"
)

// TestUnlabelledImageRefused: dockerImage may not name just any image on
// the host (another application's, with the secrets built into it): one
// without the runtime images' label is refused with -32003 and the reason.
func TestUnlabelledImageRefused(t *testing.T) {
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	// Runnable (FROM the python image) and unlabelled: a derived image
	// cannot drop its base's labels, only blank them. The content hash is
	// blanked too, or scripts/build-runtime-images.sh would take it for
	// the python image.
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tag := "codebeaker-test-unlabelled-" + hex.EncodeToString(suffix) + ":test"
	files := map[string]string{
		"Dockerfile": "FROM codebeaker-python:latest\nCOPY secret /secret\n" +
			`LABEL org.codebeaker.language="" org.codebeaker.sandbox-uid="" org.codebeaker.content-hash=""` + "\n",
		"secret": "another application's secret\n",
	}
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))})
		tw.Write([]byte(content))
	}
	tw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := api.ImageBuild(ctx, &ctxTar, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		t.Fatalf("build %s: %v", tag, err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Cleanup(func() {
		api.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	if _, err := api.ImageInspect(ctx, tag); err != nil {
		t.Fatalf("build %s: %v\n%s", tag, err, out)
	}

	c := newTestServer(t).dial()
	r := c.call("session.create", map[string]any{"language": "python", "dockerImage": tag})
	if r.Error == nil {
		var res struct{ SessionID string }
		json.Unmarshal(r.Result, &res)
		sh := c.shell(res.SessionID, "cat", "/secret")
		t.Fatalf("a session was made on unlabelled image %s; it reads /secret: %q", tag, sh.Stdout)
	}
	t.Logf("refused: %s", r.Error)
	text := r.Error.Message + " " + string(r.Error.Data)
	if r.Error.Code != rpc.CodeRuntimeUnavailable {
		t.Errorf("error %s; want %d", r.Error, rpc.CodeRuntimeUnavailable)
	}
	for _, says := range []string{tag, "not a CodeBeaker runtime image", "--allowed-images"} {
		if !strings.Contains(text, says) {
			t.Errorf("error %s does not say %q", r.Error, says)
		}
	}
}

// TestDataDirAndWorkspaceModes: no other host user can reach a workspace,
// nor what a program leaves in it: the data dir and its workspaces folder
// are 0700 (tightened when an earlier run left them open), a workspace is
// the sandbox user's, 0711.
func TestDataDirAndWorkspaceModes(t *testing.T) {
	ts := newTestServer(t, func(cfg *rpc.Config, _ *ws.Options) {
		// As earlier versions left them, in a folder anyone may pass
		// (the test's temporary folder is private to root).
		os.Chmod(filepath.Dir(cfg.DataDir), 0o755)
		os.MkdirAll(filepath.Join(cfg.DataDir, "workspaces"), 0o755)
		os.Chmod(filepath.Join(cfg.DataDir, "workspaces"), 0o755)
		os.Chmod(cfg.DataDir, 0o755)
	})
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	ws := filepath.Join(ts.dataDir, "workspaces", sid)
	for _, want := range []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{ts.dataDir, 0o700, os.Getuid(), os.Getgid()},
		{filepath.Join(ts.dataDir, "workspaces"), 0o700, os.Getuid(), os.Getgid()},
		{ws, 0o711, sandbox.UID, sandbox.GID},
	} {
		info, err := os.Stat(want.path)
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm() != want.mode || int(st.Uid) != want.uid || int(st.Gid) != want.gid {
			t.Errorf("%s: mode %v owner %d:%d; want %v %d:%d", want.path, info.Mode().Perm(), st.Uid, st.Gid, want.mode, want.uid, want.gid)
		}
	}
	// The sandbox user still works in it.
	if sh := c.shell(sid, "sh", "-c", "echo made > /workspace/made && id -u && stat -c '%u %a' /workspace"); sh.ExitCode != 0 ||
		sh.Stdout != strconv.Itoa(sandbox.UID)+"\n"+strconv.Itoa(sandbox.UID)+" 711\n" {
		t.Errorf("in the sandbox: exit %d stdout %q stderr %q", sh.ExitCode, sh.Stdout, sh.Stderr)
	}
	// Another host user (nobody) reaches nothing of it.
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "cat", filepath.Join(ws, "made")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("host user nobody reading the workspace's file: %v %q; want permission denied", err, out)
	}
}

// TestCopyFileDropsSetID: a program can mark its own files setuid or
// setgid; a file the server copies or writes never carries those bits,
// whether new or written over one that has them.
func TestCopyFileDropsSetID(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sid := c.create(map[string]any{"language": "python"})
	sh := c.shell(sid, "sh", "-c", "cp /bin/sh suid-sh && chmod 4755 suid-sh && cp /bin/sh sgid && chmod 2644 sgid && "+
		"cp /bin/sh both && chmod 6755 both && stat -c '%a' suid-sh sgid both")
	if sh.ExitCode != 0 || sh.Stdout != "4755\n2644\n6755\n" {
		t.Fatalf("the program's setuid copies of sh: exit %d %q %q", sh.ExitCode, sh.Stdout, sh.Stderr)
	}
	for _, dst := range []string{"copy", "sgid", "both"} {
		c.mustSucceed(sid, map[string]any{"type": "copy_file", "sourcePath": "/workspace/suid-sh", "destinationPath": "/workspace/" + dst})
	}
	c.mustSucceed(sid, map[string]any{"type": "write_file", "path": "/workspace/suid-sh", "content": "#!/bin/sh\n", "mode": "Append"})
	for _, name := range []string{"copy", "sgid", "both", "suid-sh"} {
		info, err := os.Lstat(filepath.Join(ts.dataDir, "workspaces", sid, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
			t.Errorf("%s after the server copied or wrote it: mode %v keeps a setuid/setgid bit", name, info.Mode())
		}
	}
}
