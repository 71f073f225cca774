package kubetest

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// shared is the one cluster of a test binary.
var shared struct {
	mu         sync.Mutex
	mainActive bool // Main is running m.Run
	started    bool // Start was attempted; its outcome is c or err
	c          *Cluster
	err        error
}

// Main is what TestMain calls in a package using Shared:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
// It runs the tests, then stops the shared cluster if one was started. When
// tests failed it keeps the cluster directory (logs) and prints its path.
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.mainActive = true
	shared.mu.Unlock()

	code := m.Run()

	shared.mu.Lock()
	c := shared.c
	shared.mainActive = false
	shared.mu.Unlock()
	if c == nil {
		return // the testing package exits with m.Run's code
	}
	keep := code != 0
	if err := c.stop(keep); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: stopping the shared cluster: %v\n", err)
		if code == 0 {
			// A control-plane process crashed during the run; tests that
			// passed anyway must not hide that.
			os.Exit(1)
		}
	}
	if keep && c.ownsDir {
		fmt.Fprintf(os.Stderr, "kubetest: tests failed; cluster logs kept in %s\n", c.Dir)
	}
}

// Shared returns the test binary's cluster, starting it on first use; Main
// stops it after the last test. It fails t when the cluster cannot start
// (also on every later call, without retrying) and when TestMain does not
// call Main, since nothing would then stop the cluster.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.mainActive {
		t.Fatal("kubetest.Shared: the package's TestMain must call kubetest.Main(m), which stops the shared cluster")
	}
	if !shared.started {
		shared.started = true
		began := time.Now()
		// t.Context bounds only the start; the cluster outlives this test.
		shared.c, shared.err = Start(t.Context(), Options{})
		if shared.err == nil {
			t.Logf("kubetest: shared cluster up in %s (dir %s)", time.Since(began).Round(time.Millisecond), shared.c.Dir)
		}
	}
	if shared.err != nil {
		t.Fatalf("kubetest: shared cluster: %v", shared.err)
	}
	return shared.c
}
