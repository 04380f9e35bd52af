package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSandboxUIDIsNoHostAccount: the uid and gid that run sandboxed programs
// belong to no account, group or subordinate range of this host (the server
// refuses to start otherwise, so CI checks its own host too).
func TestSandboxUIDIsNoHostAccount(t *testing.T) {
	if err := CheckHostIDs(); err != nil {
		t.Fatalf("sandbox uid:gid %d:%d: %v", UID, GID, err)
	}
}

// TestCheckHostIDsRefuses: the check finds an account, a group and a
// subordinate range that hold the id.
func TestCheckHostIDsRefuses(t *testing.T) {
	dir := t.TempDir()
	none := [2]string{filepath.Join(dir, "no-subuid"), filepath.Join(dir, "no-subgid")}
	if err := checkHostIDs(0, GID, none); err == nil || !strings.Contains(err.Error(), `host account "root"`) {
		t.Errorf("uid 0: %v; want a refusal naming root", err)
	}
	if err := checkHostIDs(UID, 0, none); err == nil || !strings.Contains(err.Error(), `host group "root"`) {
		t.Errorf("gid 0: %v; want a refusal naming the root group", err)
	}
	sub := [2]string{filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")}
	os.WriteFile(sub[0], []byte("# comment\nalice:100000:65536\n"), 0o644)
	os.WriteFile(sub[1], []byte("bob:200000:10\n"), 0o644)
	if err := checkHostIDs(165535, GID, sub); err == nil || !strings.Contains(err.Error(), `"alice"`) {
		t.Errorf("uid in alice's subuid range: %v; want a refusal naming alice", err)
	}
	if err := checkHostIDs(UID, 200009, sub); err == nil || !strings.Contains(err.Error(), `"bob"`) {
		t.Errorf("gid in bob's subgid range: %v; want a refusal naming bob", err)
	}
	if err := checkHostIDs(UID, 200010, sub); err != nil {
		t.Errorf("gid just past bob's range: %v", err)
	}
}
