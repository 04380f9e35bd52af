package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A folder of many long names, as a program makes one in seconds, is
// listed holding only the names it returns: its memory does not grow with
// the folder (it held every name at once, in every session at once).
func TestListHoldsFewNames(t *testing.T) {
	const files, nameLen, limit = 100_000, 200, 100
	ws, _ := newWorkspace(t)
	dir := filepath.Join(ws.Dir(), "many")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", nameLen-8)
	for i := range files {
		// Made in descending order, so the names kept change all along.
		f, err := unix.Openat(fd, fmt.Sprintf("%08d%s", files-1-i, pad), unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(f)
	}
	unix.Close(fd)

	defer debug.SetGCPercent(debug.SetGCPercent(10)) // garbage goes soon: what is measured is what is held
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	_, entries, more, err := ws.List("many", limit)
	close(stop)
	<-sampled
	if err != nil || !more || len(entries) != limit {
		t.Fatalf("List = %d entries, more=%v, %v; want %d and more", len(entries), more, err, limit)
	}
	for i, e := range entries {
		if want := fmt.Sprintf("%08d%s", i, pad); e.Name != want {
			t.Fatalf("entry %d is %.12s...; want %.12s...", i, e.Name, want)
		}
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("listing %d names of %d bytes (limit %d): heap grew by at most %.1f MB", files, nameLen, limit, float64(grew)/(1<<20))
	if names := int64(files * nameLen); grew > names/4 {
		t.Errorf("the heap grew by %d bytes listing the folder; its names are %d bytes: want far less", grew, names)
	}
}
