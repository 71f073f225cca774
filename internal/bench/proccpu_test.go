package bench

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestStatCPUTicks(t *testing.T) {
	// A command name with spaces and a parenthesis, as the kernel writes it.
	line := []byte("4242 (post gres) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 1 0 100 1000000 200 18446744073709551615\n")
	got, err := statCPUTicks(line)
	if err != nil || got != 325 {
		t.Fatalf("statCPUTicks = %d, %v; want 250 + 75 = 325", got, err)
	}
	for _, bad := range []string{"4242 no-parens S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 1 1 0 -1 1 1 0 0 0 u 75 0"} {
		if _, err := statCPUTicks([]byte(bad)); err == nil {
			t.Errorf("statCPUTicks(%q): no error", bad)
		}
	}
}

// The test process finds itself by its command name and sees the CPU it
// burns between two readings.
func TestNamedProcessesCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, _, err := NamedProcessesCPU([]string{"x"}); err == nil {
			t.Fatal("no error off Linux")
		}
		return
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSpace(string(comm))
	before, n, err := NamedProcessesCPU([]string{name})
	if err != nil || n < 1 {
		t.Fatalf("NamedProcessesCPU(%q) = %v, %d, %v; want this process among the matches", name, before, n, err)
	}
	own0, _ := ProcessCPU()
	for { // burn 300 ms of CPU
		if own, _ := ProcessCPU(); own-own0 > 300*time.Millisecond {
			break
		}
	}
	after, _, err := NamedProcessesCPU([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 200*time.Millisecond {
		t.Errorf("CPU of %q grew by %v while this process burned 300 ms", name, d)
	}
	if _, n, err := NamedProcessesCPU([]string{"no-such-command-" + name}); err != nil || n != 0 {
		t.Errorf("unknown name: %d processes, %v", n, err)
	}
}
