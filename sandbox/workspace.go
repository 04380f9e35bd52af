package sandbox

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"
)

// WorkspaceMode is a workspace folder's: its owner, the sandbox user, uses
// it; others may only pass through, as bwrap must (it enters the folder as
// root without capabilities, before it drops to the sandbox user). Its
// parent, the data dir's workspaces folder, is the server's alone (see
// PrivateDirs), so no host user reaches it.
const WorkspaceMode = 0o711

// Workspace is a session's folder on the host, seen as WorkspaceDir inside
// its sandbox. Every path goes through os.Root: a path or symlink that leads
// outside is refused, never followed.
type Workspace struct {
	dir      string
	root     *os.Root
	uid, gid int // owner of what the server creates, so the sandbox user can change it
}

// OpenWorkspace opens (creating it if needed) the folder dir, owned by
// uid:gid (-1 keeps the current owner), with mode WorkspaceMode.
func OpenWorkspace(dir string, uid, gid int) (*Workspace, error) {
	if err := os.MkdirAll(dir, WorkspaceMode); err != nil {
		return nil, fmt.Errorf("create workspace: %w", err)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("give workspace to the sandbox user: %w", err)
	}
	// Also a folder an earlier run made more open.
	if err := os.Chmod(dir, WorkspaceMode); err != nil {
		return nil, fmt.Errorf("make workspace private: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open workspace: %w", err)
	}
	return &Workspace{dir: dir, root: root, uid: uid, gid: gid}, nil
}

// Dir is the workspace's host folder.
func (w *Workspace) Dir() string { return w.dir }

// Close releases the folder; it does not delete it.
func (w *Workspace) Close() error { return w.root.Close() }

// Remove closes the workspace and deletes its folder.
func (w *Workspace) Remove() error {
	w.root.Close()
	return RemoveTree(w.dir)
}

// PathError is a file command that failed for a reason the client caused or
// can act on; its message is meant for the client.
type PathError struct{ Msg string }

func (e *PathError) Error() string { return e.Msg }

func pathErrorf(format string, args ...any) error {
	return &PathError{Msg: fmt.Sprintf(format, args...)}
}

// Limits on client paths.
const (
	MaxPathBytes = 4096
	MaxPathDepth = 128
)

// Rel turns a client path ("/workspace/a/b", "a/b", "./a/../a/b") into a
// path relative to the workspace, or refuses one that leads outside it.
func Rel(p string) (string, error) {
	if p == "" {
		return "", pathErrorf("path is empty")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", pathErrorf("path %q contains a NUL byte", p)
	}
	// Linux refuses longer paths anyway; deep ones cost the folder walk
	// (each level is resolved from the root) time quadratic in the depth.
	if len(p) > MaxPathBytes || strings.Count(p, "/") > MaxPathDepth {
		return "", pathErrorf("path is longer than %d bytes or deeper than %d folders", MaxPathBytes, MaxPathDepth)
	}
	if path.IsAbs(p) {
		if p != WorkspaceDir && !strings.HasPrefix(p, WorkspaceDir+"/") {
			return "", pathErrorf("path %s is outside %s", p, WorkspaceDir)
		}
		p = strings.TrimPrefix(p, WorkspaceDir)
		p = strings.TrimPrefix(p, "/")
		if p == "" {
			p = "."
		}
	}
	rel := path.Clean(p)
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", pathErrorf("path %s is outside %s", p, WorkspaceDir)
	}
	return rel, nil
}

// Display is how a relative path is shown to the client.
func Display(rel string) string {
	if rel == "." {
		return WorkspaceDir
	}
	return WorkspaceDir + "/" + rel
}

// clientError turns an os error on rel into words for the client. Errors
// that are not the client's doing are returned as they are.
func clientError(rel string, err error) error {
	shown := Display(rel)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return pathErrorf("File not found: %s", shown)
	case errors.Is(err, syscall.ENOTEMPTY): // before ErrExist, which it also is
		return pathErrorf("directory not empty: %s", shown)
	case errors.Is(err, fs.ErrExist):
		return pathErrorf("already exists: %s", shown)
	case errors.Is(err, fs.ErrPermission):
		return pathErrorf("permission denied: %s", shown)
	case errors.Is(err, syscall.EISDIR):
		return pathErrorf("is a directory: %s", shown)
	case errors.Is(err, syscall.ENOTDIR):
		return pathErrorf("not a directory: %s", shown)
	case errors.Is(err, syscall.ENXIO): // a FIFO with no reader, a socket
		return pathErrorf("not a regular file: %s", shown)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return pathErrorf("no space left for %s", shown)
	case errors.Is(err, syscall.ENAMETOOLONG):
		return pathErrorf("a name in %s is too long", shown)
	case errors.Is(err, syscall.EFBIG):
		return pathErrorf("file too large: %s", shown)
	case errors.Is(err, syscall.ELOOP), strings.Contains(err.Error(), "path escapes from parent"):
		return pathErrorf("path %s leads outside %s (through a symlink)", shown, WorkspaceDir)
	}
	return err
}

// openFile opens rel without blocking: open(2) of a FIFO that user code
// planted would otherwise wait for its other end, holding the session's
// command forever. O_NONBLOCK changes nothing for regular files and folders.
func (w *Workspace) openFile(rel string, flag int, perm os.FileMode) (*os.File, error) {
	return w.root.OpenFile(rel, flag|syscall.O_NONBLOCK, perm)
}

// checkRegular refuses to write into anything but a regular file (a FIFO
// whose reader does not read would block the write).
func checkRegular(f *os.File, rel string) error {
	info, err := f.Stat()
	if err != nil {
		return clientError(rel, err)
	}
	if !info.Mode().IsRegular() {
		return pathErrorf("not a regular file: %s", Display(rel))
	}
	return nil
}

// WriteFile writes data to the file at client path p, replacing it, or
// appending to it when appendMode is set. Missing parent folders are made.
func (w *Workspace) WriteFile(p string, data []byte, appendMode bool) (string, error) {
	rel, err := Rel(p)
	if err != nil {
		return "", err
	}
	if rel == "." {
		return "", pathErrorf("is a directory: %s", WorkspaceDir)
	}
	if err := w.mkdirAll(path.Dir(rel)); err != nil {
		return "", err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendMode {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := w.openFile(rel, flags, 0o644)
	if err != nil {
		return "", clientError(rel, err)
	}
	if err := checkRegular(f, rel); err != nil {
		f.Close()
		return "", err
	}
	_, werr := f.Write(data)
	serr := dropSetID(f)
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return "", clientError(rel, err)
	}
	return Display(rel), clientError(rel, w.root.Lchown(rel, w.uid, w.gid))
}

// ReadFile reads the file at client path p, refusing one larger than limit.
func (w *Workspace) ReadFile(p string, limit int64) ([]byte, error) {
	rel, err := Rel(p)
	if err != nil {
		return nil, err
	}
	f, err := w.openFile(rel, os.O_RDONLY, 0)
	if err != nil {
		return nil, clientError(rel, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, clientError(rel, err)
	}
	if info.IsDir() {
		return nil, pathErrorf("is a directory: %s", Display(rel))
	}
	if !info.Mode().IsRegular() {
		return nil, pathErrorf("not a regular file: %s", Display(rel))
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, clientError(rel, err)
	}
	if int64(len(data)) > limit {
		return nil, pathErrorf("file %s is larger than the read limit of %d bytes", Display(rel), limit)
	}
	return data, nil
}

// MkdirAll makes the folder at client path p and its parents.
func (w *Workspace) MkdirAll(p string) (string, error) {
	rel, err := Rel(p)
	if err != nil {
		return "", err
	}
	return Display(rel), w.mkdirAll(rel)
}

func (w *Workspace) mkdirAll(rel string) error {
	if rel == "." {
		return nil
	}
	if info, err := w.root.Stat(rel); err == nil {
		if !info.IsDir() {
			return pathErrorf("not a directory: %s", Display(rel))
		}
		return nil
	}
	if err := w.mkdirAll(path.Dir(rel)); err != nil {
		return err
	}
	if err := w.root.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return clientError(rel, err)
	}
	return clientError(rel, w.root.Lchown(rel, w.uid, w.gid))
}

// CheckDir returns the in-sandbox path of the folder at client path p, or
// an error if it is not a folder inside the workspace.
func (w *Workspace) CheckDir(p string) (string, error) {
	rel, err := Rel(p)
	if err != nil {
		return "", err
	}
	info, err := w.root.Stat(rel)
	if err != nil {
		return "", clientError(rel, err)
	}
	if !info.IsDir() {
		return "", pathErrorf("not a directory: %s", Display(rel))
	}
	return Display(rel), nil
}

// Copy copies a regular file and returns the bytes copied.
func (w *Workspace) Copy(src, dst string, limit int64) (srcShown, dstShown string, n int64, err error) {
	srcRel, err := Rel(src)
	if err != nil {
		return "", "", 0, err
	}
	dstRel, err := Rel(dst)
	if err != nil {
		return "", "", 0, err
	}
	in, err := w.openFile(srcRel, os.O_RDONLY, 0)
	if err != nil {
		return "", "", 0, clientError(srcRel, err)
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return "", "", 0, clientError(srcRel, err)
	}
	if !info.Mode().IsRegular() {
		return "", "", 0, pathErrorf("not a regular file: %s", Display(srcRel))
	}
	// The server copies as root with no disk quota of the sandbox's: a
	// sparse file of a terabyte must not become a terabyte of real blocks.
	if info.Size() > limit {
		return "", "", 0, pathErrorf("file %s is larger than the copy limit of %d bytes", Display(srcRel), limit)
	}
	// Opening the destination truncates it: copying a file onto itself
	// (or onto a link to it) would empty it.
	if existing, err := w.root.Stat(dstRel); err == nil && os.SameFile(info, existing) {
		return "", "", 0, pathErrorf("%s and %s are the same file", Display(srcRel), Display(dstRel))
	}
	if err := w.mkdirAll(path.Dir(dstRel)); err != nil {
		return "", "", 0, err
	}
	out, err := w.openFile(dstRel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", "", 0, clientError(dstRel, err)
	}
	if err := checkRegular(out, dstRel); err != nil {
		out.Close()
		return "", "", 0, err
	}
	n, err = io.Copy(out, io.LimitReader(in, limit)) // the file may grow while copied
	if serr := dropSetID(out); err == nil {
		err = serr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", 0, clientError(dstRel, err)
	}
	return Display(srcRel), Display(dstRel), n, clientError(dstRel, w.root.Lchown(dstRel, w.uid, w.gid))
}

// Delete removes a file, a symlink (not its target) or a folder with all it
// holds. The workspace itself cannot be deleted.
func (w *Workspace) Delete(p string) (string, error) {
	rel, err := Rel(p)
	if err != nil {
		return "", err
	}
	if rel == "." {
		return "", pathErrorf("cannot delete the workspace itself")
	}
	info, err := w.root.Lstat(rel)
	if err != nil {
		return "", clientError(rel, err)
	}
	if info.IsDir() {
		// removeTree empties the folder, then removes it; that fails (with
		// ENOTEMPTY) only if something kept filling it meanwhile.
		if err = w.removeTree(rel); errors.Is(err, syscall.ENOTEMPTY) {
			return "", pathErrorf("could not delete %s: files were created in it while it was being deleted (a program in the session is writing there); the folder is still there, with those files", Display(rel))
		}
	} else {
		err = w.root.Remove(rel)
	}
	return Display(rel), clientError(rel, err)
}

// removeTree removes the folder rel with all it holds (see removeTree),
// opening its parent through the root.
func (w *Workspace) removeTree(rel string) error {
	parent, err := w.openFile(path.Dir(rel), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer parent.Close()
	return removeTree(parent, path.Base(rel))
}

// Entry is one item of a folder listing.
type Entry struct {
	Name       string    `json:"name"`
	Type       string    `json:"type"` // file, directory or symlink
	Size       int64     `json:"size"`
	ModifiedAt time.Time `json:"modifiedAt"`
}

// List returns up to limit entries of the folder at client path p, sorted
// by name, and whether more were left out.
func (w *Workspace) List(p string, limit int) (string, []Entry, bool, error) {
	rel, err := Rel(p)
	if err != nil {
		return "", nil, false, err
	}
	dir, err := w.openFile(rel, os.O_RDONLY, 0)
	if err != nil {
		return "", nil, false, clientError(rel, err)
	}
	defer dir.Close()
	names, more, err := firstNames(dir, limit)
	if err != nil {
		return "", nil, false, clientError(rel, err)
	}
	entries := make([]Entry, 0, len(names))
	for _, name := range names {
		info, err := w.root.Lstat(path.Join(rel, name))
		if err != nil {
			continue // removed while listing
		}
		kind := "file"
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			kind = "symlink"
		case info.IsDir():
			kind = "directory"
		}
		entries = append(entries, Entry{Name: name, Type: kind, Size: info.Size(), ModifiedAt: info.ModTime().UTC()})
	}
	return Display(rel), entries, more, nil
}

// firstNames returns the first limit names of the folder, sorted, and
// whether it holds more. It reads the names in batches and keeps only
// limit of them: reading them all at once cost 120 MB of server memory
// for a folder of 300,000 long names a program made in 8 seconds, in
// every session at once.
func firstNames(dir *os.File, limit int) ([]string, bool, error) {
	var kept maxNames // the smallest names seen, largest first
	more := false
	for {
		batch, err := dir.Readdirnames(1024)
		for _, name := range batch {
			switch {
			case len(kept) < limit:
				heap.Push(&kept, name)
			case limit > 0 && name < kept[0]:
				more = true
				kept[0] = name
				heap.Fix(&kept, 0)
			default:
				more = true
			}
		}
		if err == io.EOF || (err == nil && len(batch) == 0) {
			break
		} else if err != nil {
			return nil, false, err
		}
	}
	slices.Sort(kept)
	return kept, more, nil
}

// maxNames is a heap of names, the largest on top.
type maxNames []string

func (h maxNames) Len() int           { return len(h) }
func (h maxNames) Less(i, j int) bool { return h[i] > h[j] }
func (h maxNames) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *maxNames) Push(x any)        { *h = append(*h, x.(string)) }
func (h *maxNames) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// dropSetID clears the setuid and setgid bits of a file the server wrote
// or copied into: a program may have set them on the file it replaces, and
// the server writes as root, which keeps them (chown then clears setuid,
// but not setgid on a file without group execute).
func dropSetID(f *os.File) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if m := info.Mode(); m&(os.ModeSetuid|os.ModeSetgid) != 0 {
		return f.Chmod(m.Perm())
	}
	return nil
}

// PrivateDirs makes each folder (and its parents) if missing and gives it
// mode 0700, also when an earlier run left it more open: the data dir and
// its folder of workspaces are the server's alone, so no host user reaches
// a workspace or what a program left in it.
func PrivateDirs(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("make %s private to the server (mode 0700): %w", d, err)
		}
	}
	return nil
}
