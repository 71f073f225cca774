package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/fleet"
)

// testnodeBin is the testdata/testnode binary, built once in TestMain.
var testnodeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleet-local-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testnodeBin = filepath.Join(dir, "testnode")
	out, err := exec.Command("go", "build", "-o", testnodeBin, "./testdata/testnode").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build testnode: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// artifact copies the test node to a fresh path, with extra bytes appended
// (an ELF binary still runs) so each variant has its own digest.
func artifact(t *testing.T, variant string) (path, sum string) {
	t.Helper()
	b, err := os.ReadFile(testnodeBin)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, variant...)
	path = filepath.Join(t.TempDir(), "countersign-node")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return path, hex.EncodeToString(h[:])
}

func release(t *testing.T, id string, args ...string) fleet.Release {
	t.Helper()
	path, sum := artifact(t, id)
	return fleet.Release{ID: id, Artifact: path, SHA256: sum, Args: args, SchemaMin: 1, SchemaMax: 3,
		Env: []string{"TESTNODE_EXTRA=" + id + "-env"}}
}

// sinkLog records what the fleet told its EndpointSink.
type sinkLog struct {
	mu    sync.Mutex
	calls [][]string
}

func (s *sinkLog) sink() EndpointSink {
	return func(_ context.Context, pool string, eps []string) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.calls = append(s.calls, append([]string{pool}, eps...))
		return nil
	}
}

func (s *sinkLog) last() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return nil
	}
	return s.calls[len(s.calls)-1]
}

func newTestFleet(t *testing.T, dir string, mod func(*Config)) *Fleet {
	t.Helper()
	cfg := Config{StateDir: dir, ReadyTimeout: 15 * time.Second, StopTimeout: 5 * time.Second, ReadyInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

type whoamiResp struct {
	PID      int      `json:"pid"`
	Listen   string   `json:"listen"`
	Args     []string `json:"args"`
	Release  string   `json:"release"`
	Instance string   `json:"instance"`
	Extra    string   `json:"extra"`
	Secret   string   `json:"secret"`
	InFlight int      `json:"in_flight"`
}

func whoami(base string) (whoamiResp, error) {
	var w whoamiResp
	resp, err := http.Get(base + "/whoami")
	if err != nil {
		return w, err
	}
	defer resp.Body.Close()
	return w, json.NewDecoder(resp.Body).Decode(&w)
}

func mustWhoami(t *testing.T, base string) whoamiResp {
	t.Helper()
	w, err := whoami(base)
	if err != nil {
		t.Fatalf("whoami %s: %v", base, err)
	}
	return w
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func poolStatus(t *testing.T, f *Fleet, pool string) fleet.PoolStatus {
	t.Helper()
	st, err := f.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Pool == pool {
			return s
		}
	}
	t.Fatalf("pool %s not in status %+v", pool, st)
	return fleet.PoolStatus{}
}

// eventually polls cond every 20 ms for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
