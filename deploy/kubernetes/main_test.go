package manifests

import (
	"os"
	"testing"
)

// runTests runs the package's tests; the kube tier sets it to
// kubetest.Main, which also stops the shared cluster.
var runTests = func(m *testing.M) { m.Run() }

// TestMain removes the countersign binary the tests built once they are
// all done (returning lets the testing package exit with m.Run's code).
func TestMain(m *testing.M) {
	runTests(m)
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
}
