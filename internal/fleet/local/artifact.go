package local

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/countersign/countersign/internal/fleet"
)

// installArtifact copies rel.Artifact into the content-addressed store,
// checking its SHA-256 on the way, and returns the path of the copy. A copy
// already in the store is re-hashed before it is trusted again.
func (f *Fleet) installArtifact(rel fleet.Release) (string, error) {
	dir := filepath.Join(f.cfg.StateDir, "artifacts", rel.SHA256)
	dst := filepath.Join(dir, filepath.Base(rel.Artifact))
	if got, err := fleet.FileSHA256(dst); err == nil {
		if got != rel.SHA256 {
			return "", &fleet.ChecksumError{Artifact: dst, Want: rel.SHA256, Got: got}
		}
		return dst, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	src, err := os.Open(rel.Artifact)
	if err != nil {
		return "", fmt.Errorf("fleet/local: artifact of %s: %w", rel.ID, err)
	}
	defer src.Close()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".install-*")
	if err != nil {
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), src); err != nil {
		tmp.Close()
		return "", fmt.Errorf("fleet/local: copy artifact of %s: %w", rel.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != rel.SHA256 {
		tmp.Close()
		return "", &fleet.ChecksumError{Artifact: rel.Artifact, Want: rel.SHA256, Got: got}
	}
	if err := tmp.Chmod(0o555); err != nil {
		tmp.Close()
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("fleet/local: %w", err)
	}
	return dst, nil
}
