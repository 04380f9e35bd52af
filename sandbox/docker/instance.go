package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
)

// Instance names the server that owns dataDir: it labels the sandboxes the
// server makes, so that servers sharing an engine tell theirs apart, and a
// restarted server on the same data dir finds its own.
func Instance(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:8])
}
