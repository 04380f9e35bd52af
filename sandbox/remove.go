package sandbox

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// treeFDs bounds the folders a removal holds open at once. os.RemoveAll
// holds one per level: a folder chain a program made 30,000 levels deep
// (a second's work, no limit stops it) took every descriptor the server
// had, failing its other sessions' commands and connections meanwhile.
const treeFDs = 32

// treePasses bounds the passes over one folder that find entries in it
// (one more for each folder moved into it): a removal skips no entry, so
// more passes mean a program is filling the folder while it is removed,
// and the removal gives up rather than race it for ever.
const treePasses = 8

// RemoveTree removes the file, symlink (not its target) or folder at the
// host path p, with everything the folder holds, however deep, holding at
// most treeFDs folders open. A missing p is not an error.
func RemoveTree(p string) error {
	p = filepath.Clean(p)
	parent, err := os.Open(filepath.Dir(p))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer parent.Close()
	return removeTree(parent, filepath.Base(p))
}

// level is one folder being emptied.
type level struct {
	dir     *os.File
	name    string   // its name in the folder above
	pending []string // names read from it and not yet removed
	seen    bool     // this pass read entries
	passes  int      // passes that read entries
	movedIn int      // folders moved into it
	err     error    // why an entry was left, the last time one was
}

// removeTree removes name in the folder parent. It goes down the tree
// through descriptors opened with O_NOFOLLOW, never by path and never up
// through "..", so nothing a program does meanwhile (symlinks, moved
// folders) leads it out of the tree. A folder deeper than treeFDs levels
// below name is moved up into name's own folder (renameat, within the same
// tree) and removed from there, so the work stays linear in the entries.
func removeTree(parent *os.File, name string) error {
	pfd := int(parent.Fd())
	err := unix.Unlinkat(pfd, name, 0)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES):
		return &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	top, err := openDirAt(pfd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	stack := []*level{{dir: top, name: name}}
	defer func() {
		for _, l := range stack {
			l.dir.Close()
		}
	}()
	moved := 0
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		cfd := int(cur.dir.Fd())
		if len(cur.pending) == 0 {
			names, err := cur.dir.Readdirnames(1024)
			if err != nil && err != io.EOF {
				return &os.PathError{Op: "readdirnames", Path: name, Err: err}
			}
			if len(names) > 0 {
				cur.pending, cur.seen = names, true
				continue
			}
			if cur.seen { // the pass is over: read again what is left
				if cur.passes++; cur.passes >= treePasses+cur.movedIn {
					return &os.PathError{Op: "unlinkat", Path: name, Err: cmp.Or[error](cur.err, unix.ENOTEMPTY)}
				}
				cur.seen = false
				if _, err := cur.dir.Seek(0, io.SeekStart); err != nil {
					return &os.PathError{Op: "seek", Path: name, Err: err}
				}
				continue
			}
			// Empty: remove it from the folder above.
			cur.dir.Close()
			stack = stack[:len(stack)-1]
			above := pfd
			if len(stack) > 0 {
				above = int(stack[len(stack)-1].dir.Fd())
			}
			err = unix.Unlinkat(above, cur.name, unix.AT_REMOVEDIR)
			switch {
			case err == nil, errors.Is(err, unix.ENOENT):
			case len(stack) > 0 && (errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)):
				// Refilled meanwhile: the folder above's next pass finds it.
			default:
				return &os.PathError{Op: "unlinkat", Path: name, Err: err}
			}
			continue
		}
		entry := cur.pending[0]
		cur.pending = cur.pending[1:]
		err := unix.Unlinkat(cfd, entry, 0)
		if err == nil || errors.Is(err, unix.ENOENT) {
			continue
		}
		if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
			cur.err = err // left; the next pass tries again
			continue
		}
		if rerr := unix.Unlinkat(cfd, entry, unix.AT_REMOVEDIR); rerr == nil { // an empty folder
			continue
		} else if errors.Is(rerr, unix.ENOTDIR) {
			cur.err = err // a file that cannot be removed
			continue
		}
		if len(stack) < treeFDs {
			child, err := openDirAt(cfd, entry)
			if err == nil {
				stack = append(stack, &level{dir: child, name: entry})
			}
			continue // gone, or not a folder any more: the next pass sees
		}
		// Too deep to hold open: move it up into the top folder, whose
		// passes go on until it is empty.
		for range 16 {
			moved++
			to := fmt.Sprintf(".codebeaker-removing-%d", moved)
			err := unix.Renameat2(cfd, entry, int(stack[0].dir.Fd()), to, unix.RENAME_NOREPLACE)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
				// No RENAME_NOREPLACE here: a plain rename replaces at
				// most an empty folder, in the tree being removed.
				err = unix.Renameat(cfd, entry, int(stack[0].dir.Fd()), to)
			}
			if err == nil {
				stack[0].movedIn++
				break
			}
		}
	}
	return nil
}

// openDirAt opens the folder name in the folder dirfd, not following a
// symlink, and refusing anything but a folder.
func openDirAt(dirfd int, name string) (*os.File, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}
