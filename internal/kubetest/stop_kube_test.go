//go:build kube

package kubetest

import (
	"os"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStartStopLeavesNothing starts a second, private cluster with two
// nodes and checks that Stop leaves no process and no directory behind.
func TestStartStopLeavesNothing(t *testing.T) {
	began := time.Now()
	c, err := Start(t.Context(), Options{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	t.Logf("cluster up in %s", time.Since(began).Round(time.Millisecond))
	nodes, err := c.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Errorf("%d nodes, want 2", len(nodes.Items))
	}
	if len(c.procs) != len(binaries) {
		t.Fatalf("%d processes, want one per binary %v", len(c.procs), binaries)
	}
	pids := map[string]int{}
	for _, p := range c.procs {
		pids[p.name] = p.cmd.Process.Pid
	}
	stopped := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("cluster down in %s", time.Since(stopped).Round(time.Millisecond))
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("%s (pid %d) still exists after Stop: kill 0 = %v", name, pid, err)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("Stat(%s) after Stop = %v, want not exist", c.Dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := c.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{}); err == nil {
		t.Error("apiserver still answers after Stop")
	}
}
