package flags

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// defaultFile defines every flag Countersign reads, at its safe value:
// CMS digest sha256, the refactored signing path off, new keys ECDSA P-256.
//
//go:embed default.flagd.json
var defaultFile []byte

// Default returns the embedded default flag file.
func Default() []byte { return bytes.Clone(defaultFile) }

// EnsureFile writes the embedded default flag file to path unless a file is
// already there, and says whether it wrote one. An existing file is never
// overwritten: it may carry an operator's changes. `countersign up` calls it
// before Open.
func EnsureFile(path string) (created bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("flags: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("flags: %w", err)
	}
	if _, err := f.Write(defaultFile); err != nil {
		f.Close()
		os.Remove(path)
		return false, fmt.Errorf("flags: write default %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return false, fmt.Errorf("flags: write default %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("flags: write default %s: %w", path, err)
	}
	return true, nil
}
