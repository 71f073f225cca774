package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/countersign/countersign/internal/fleet"
)

// stateVersion is the version of fleet.json.
const stateVersion = 1

// persisted is the content of <StateDir>/fleet.json.
type persisted struct {
	Version int                   `json:"version"`
	Pools   map[string]*poolState `json:"pools"`
}

type poolState struct {
	Desired   int              `json:"desired"`
	Revisions []fleet.Revision `json:"revisions"` // oldest first
}

func (p *poolState) current() *fleet.Revision {
	for i := len(p.Revisions) - 1; i >= 0; i-- {
		if p.Revisions[i].Status == fleet.StatusCurrent {
			return &p.Revisions[i]
		}
	}
	return nil
}

func (p *poolState) revision(n int) *fleet.Revision {
	for i := range p.Revisions {
		if p.Revisions[i].Number == n {
			return &p.Revisions[i]
		}
	}
	return nil
}

func (p *poolState) nextNumber() int {
	if len(p.Revisions) == 0 {
		return 1
	}
	return p.Revisions[len(p.Revisions)-1].Number + 1
}

func statePath(dir string) string { return filepath.Join(dir, "fleet.json") }

func loadState(dir string) (*persisted, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return &persisted{Version: stateVersion, Pools: map[string]*poolState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet/local: read state: %w", err)
	}
	var st persisted
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("fleet/local: decode %s: %w", statePath(dir), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("fleet/local: %s has version %d, want %d", statePath(dir), st.Version, stateVersion)
	}
	if st.Pools == nil {
		st.Pools = map[string]*poolState{}
	}
	return &st, nil
}

// saveLocked writes fleet.json atomically (temp file, fsync, rename).
// f.mu must be held.
func (f *Fleet) saveLocked() error {
	b, err := json.MarshalIndent(f.st, "", "  ")
	if err != nil {
		return fmt.Errorf("fleet/local: encode state: %w", err)
	}
	tmp, err := os.CreateTemp(f.cfg.StateDir, ".fleet-*.json")
	if err != nil {
		return fmt.Errorf("fleet/local: save state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("fleet/local: save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fleet/local: save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("fleet/local: save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), statePath(f.cfg.StateDir)); err != nil {
		return fmt.Errorf("fleet/local: save state: %w", err)
	}
	return nil
}
