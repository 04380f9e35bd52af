package deno

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroups is where session cgroups are made: the v1 hierarchies of the
// memory, pids and cpu controllers, or the v2 unified hierarchy.
type cgroups struct {
	v2     bool
	root   string            // v2: the unified hierarchy's mount point
	mounts map[string]string // v1: controller -> mount point (memory always)
	parent string            // folder under each hierarchy holding session cgroups
}

// findCgroups finds the hierarchies under root (normally /sys/fs/cgroup) and
// makes parent in them. It fails when sessions could not get a memory
// limit from a cgroup.
func findCgroups(root, parent string) (*cgroups, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the server does not run as root, so it cannot make cgroups")
	}
	if parent == "" || filepath.IsAbs(parent) || strings.Contains(parent, "..") {
		return nil, fmt.Errorf("cgroup parent %q must be a relative path", parent)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", root, err)
	}
	const cgroup2Magic = 0x63677270
	if st.Type == cgroup2Magic {
		return findV2(root, parent)
	}
	return findV1(root, parent)
}

func findV2(root, parent string) (*cgroups, error) {
	have, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	if !strings.Contains(" "+strings.TrimSpace(string(have))+" ", " memory ") {
		return nil, fmt.Errorf("the cgroup v2 hierarchy at %s has no memory controller", root)
	}
	c := &cgroups{v2: true, root: root, parent: parent}
	// Controllers are handed down level by level: from the root (which may
	// hold processes) to parent, and from parent (which holds none) to the
	// session cgroups.
	dir := root
	for _, part := range append([]string{""}, strings.Split(parent, "/")...) {
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		for _, ctl := range []string{"memory", "pids", "cpu"} {
			if strings.Contains(" "+strings.TrimSpace(string(have))+" ", " "+ctl+" ") {
				// Errors are read back below for memory; pids and cpu are
				// best effort.
				os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+ctl), 0)
			}
		}
		enabled, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil || !strings.Contains(" "+strings.TrimSpace(string(enabled))+" ", " memory ") {
			return nil, fmt.Errorf("cannot enable the memory controller in %s (%v)", dir, err)
		}
	}
	return c, nil
}

func findV1(root, parent string) (*cgroups, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &cgroups{root: root, mounts: map[string]string{}, parent: parent}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[2] != "cgroup" || !strings.HasPrefix(fields[1], root+"/") {
			continue
		}
		for _, opt := range strings.Split(fields[3], ",") {
			switch opt {
			case "memory", "pids", "cpu":
				c.mounts[opt] = fields[1]
			}
		}
	}
	if c.mounts["memory"] == "" {
		return nil, fmt.Errorf("no cgroup v1 memory controller is mounted under %s", root)
	}
	for ctl, mount := range c.mounts {
		if err := os.MkdirAll(filepath.Join(mount, parent), 0o755); err != nil {
			if ctl == "memory" {
				return nil, err
			}
			delete(c.mounts, ctl) // pids and cpu limits are best effort
		}
	}
	return c, nil
}

// describe says how memory is limited, for Health and logs.
func (c *cgroups) describe() string {
	if c.v2 {
		return fmt.Sprintf("cgroup v2 (%s)", filepath.Join(c.root, c.parent))
	}
	return fmt.Sprintf("cgroup v1 (%s)", filepath.Join(c.mounts["memory"], c.parent))
}

// cgroup is one session's cgroup, in every hierarchy it spans.
type cgroup struct {
	v2   bool
	dirs map[string]string // v1: controller -> folder; v2: "" -> folder
}

// dir is the folder that holds the memory controller's files.
func (g *cgroup) dir() string {
	if g.v2 {
		return g.dirs[""]
	}
	return g.dirs["memory"]
}

// discard removes the cgroup of session, if there is one, without making it.
func (c *cgroups) discard(session string) error {
	g := c.of(session)
	for ctl, d := range g.dirs {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			delete(g.dirs, ctl)
		}
	}
	return g.remove()
}

// of is the cgroup of session, made or not.
func (c *cgroups) of(session string) *cgroup {
	g := &cgroup{v2: c.v2, dirs: map[string]string{}}
	if c.v2 {
		g.dirs[""] = filepath.Join(c.root, c.parent, session)
	} else {
		for ctl, mount := range c.mounts {
			g.dirs[ctl] = filepath.Join(mount, c.parent, session)
		}
	}
	return g
}

// make creates (or reuses, after a restart) the cgroup of session and sets
// its limits. Zero limits are left unset.
func (c *cgroups) make(session string, memoryMB, cpuShares, pids int) (*cgroup, error) {
	g := c.of(session)
	for _, d := range g.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			g.remove()
			return nil, err
		}
	}
	// What a previous process left running in it is not ours.
	g.killAll()
	if err := g.limit(memoryMB, cpuShares, pids); err != nil {
		g.remove()
		return nil, err
	}
	return g, nil
}

func (g *cgroup) limit(memoryMB, cpuShares, pids int) error {
	type setting struct {
		ctl, file, value string
		required         bool
	}
	var settings []setting
	mem := strconv.FormatInt(int64(memoryMB)<<20, 10)
	if g.v2 {
		if memoryMB > 0 {
			settings = append(settings, setting{"", "memory.max", mem, true}, setting{"", "memory.swap.max", "0", false})
		}
		if pids > 0 {
			settings = append(settings, setting{"", "pids.max", strconv.Itoa(pids), false})
		}
		if cpuShares > 0 {
			settings = append(settings, setting{"", "cpu.weight", strconv.Itoa(cpuWeight(cpuShares)), false})
		}
	} else {
		if memoryMB > 0 {
			// memsw (memory+swap) must stay at or above the memory limit, so
			// lower it last when it shrinks and raise it first when it grows:
			// setting memory first and memsw second, then memory again,
			// works both ways.
			settings = append(settings,
				setting{"memory", "memory.limit_in_bytes", mem, false},
				setting{"memory", "memory.memsw.limit_in_bytes", mem, false},
				setting{"memory", "memory.limit_in_bytes", mem, true})
		}
		if pids > 0 {
			settings = append(settings, setting{"pids", "pids.max", strconv.Itoa(pids), false})
		}
		if cpuShares > 0 {
			settings = append(settings, setting{"cpu", "cpu.shares", strconv.Itoa(cpuShares), false})
		}
	}
	for _, s := range settings {
		d, ok := g.dirs[s.ctl]
		if !ok {
			continue
		}
		err := os.WriteFile(filepath.Join(d, s.file), []byte(s.value), 0)
		if err != nil && s.required {
			return fmt.Errorf("set %s: %w", s.file, err)
		}
	}
	return nil
}

// cpuWeight converts cgroup v1 cpu.shares (2..262144) to a v2 cpu.weight
// (1..10000), as runc and systemd do.
func cpuWeight(shares int) int {
	return 1 + ((shares-2)*9999)/262142
}

// join moves pid into the cgroup (v1; v2 starts processes inside it).
func (g *cgroup) join(pid int) error {
	for ctl, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move process %d into the %s cgroup: %w", pid, ctl, err)
		}
	}
	return nil
}

// oomKills is how many processes the kernel killed in the cgroup for want
// of memory, from memory.events (v2) or memory.oom_control (v1).
func (g *cgroup) oomKills() int64 {
	file := "memory.oom_control"
	if g.v2 {
		file = "memory.events"
	}
	data, err := os.ReadFile(filepath.Join(g.dir(), file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// procs lists the processes in the cgroup (v1: in any of its hierarchies,
// the memory one first).
func (g *cgroup) procs() []int {
	data, err := os.ReadFile(filepath.Join(g.dir(), "cgroup.procs"))
	for _, d := range g.dirs {
		if err == nil {
			break
		}
		data, err = os.ReadFile(filepath.Join(d, "cgroup.procs"))
	}
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAll SIGKILLs every process in the cgroup and waits (briefly) until it
// is empty. A process forked while the list is read is caught by the next
// round.
func (g *cgroup) killAll() {
	if g.v2 {
		// cgroup.kill (Linux 5.14) kills atomically, forks in flight too.
		os.WriteFile(filepath.Join(g.dir(), "cgroup.kill"), []byte("1"), 0)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := g.procs()
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// remove kills what is left and deletes the cgroup; a cgroup already gone
// is not an error.
func (g *cgroup) remove() error {
	g.killAll()
	var errs []error
	for _, d := range g.dirs {
		var err error
		// A killed process leaves the cgroup a moment after it is reaped.
		for try := 0; try < 100; try++ {
			err = syscall.Rmdir(d)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
