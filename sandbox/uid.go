package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// UID and GID run every sandboxed program, in Docker containers and Deno
// jails alike, and own the workspaces. scripts/build-runtime-images.sh reads
// this line to build the images' user, and labels each image with the uid
// (LabelSandboxUID); CheckHostIDs refuses a host where someone has them.
//
// 71000 is in the range no default allocator hands out: above login.defs'
// UID_MAX/GID_MAX (60000) and Debian's and systemd's reserved ids (60000 to
// 65535: homed, DynamicUser, nobody, 16-bit -1), below useradd's first
// subordinate range (SUB_UID_MIN 100000, for rootless containers) and
// systemd-nspawn's container ranges (524288 up). Debian leaves 65536 and up
// to local use, which adduser does not allocate by default.
const UID, GID = 71000, 71000

// Labels of the runtime images (images/*/Dockerfile).
const (
	// LabelLanguage marks a CodeBeaker runtime image.
	LabelLanguage = "org.codebeaker.language"
	// LabelSandboxUID is the uid the image's sandbox user was built with.
	LabelSandboxUID = "org.codebeaker.sandbox-uid"
)

// Files that delegate uid and gid ranges to users (rootless containers).
var subIDFiles = [2]string{"/etc/subuid", "/etc/subgid"}

// CheckHostIDs checks that UID and GID belong to no one on this host: no
// account or group has them and no subordinate range (rootless
// containers) covers them. A program then owns nothing outside its
// sandbox, and a file it marks setuid lends no host account's rights.
func CheckHostIDs() error {
	return checkHostIDs(UID, GID, subIDFiles)
}

func checkHostIDs(uid, gid int, subFiles [2]string) error {
	const fix = "; remove or renumber it, or change sandbox.UID/GID and rebuild the runtime images"
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Errorf("the sandbox uid %d is the host account %q's: sandboxed programs would act as it%s", uid, u.Username, fix)
	} else if !errors.As(err, new(user.UnknownUserIdError)) {
		return fmt.Errorf("look up the sandbox uid %d among the host's accounts: %w", uid, err)
	}
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return fmt.Errorf("the sandbox gid %d is the host group %q's: sandboxed programs would act as it%s", gid, g.Name, fix)
	} else if !errors.As(err, new(user.UnknownGroupIdError)) {
		return fmt.Errorf("look up the sandbox gid %d among the host's groups: %w", gid, err)
	}
	for i, id := range []int{uid, gid} {
		owner, err := subIDOwner(subFiles[i], id)
		if err != nil {
			return err
		}
		if owner != "" {
			return fmt.Errorf("the sandbox id %d is in the range %s gives to %q (for rootless containers)%s", id, subFiles[i], owner, fix)
		}
	}
	return nil
}

// subIDOwner returns who the subordinate id file (lines "name:start:count")
// gives id to; "" for no one or no file.
func subIDOwner(file string, id int) (string, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		fields := strings.Split(strings.TrimSpace(lines.Text()), ":")
		if len(fields) != 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		start, err1 := strconv.ParseInt(fields[1], 10, 64)
		count, err2 := strconv.ParseInt(fields[2], 10, 64)
		if err1 == nil && err2 == nil && int64(id) >= start && int64(id) < start+count {
			return fields[0], nil
		}
	}
	return "", lines.Err()
}
