package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ):
// 100 on every Linux architecture Go supports; the kernel converts to it
// whatever its internal HZ.
const clockTicks = 100

// NamedProcessesCPU returns the CPU time (user + system) used so far by
// every process on this host whose command name (/proc/PID/comm) is one of
// names, e.g. "postgres" for a PostgreSQL server and its backends, and how
// many processes matched. A benchmark reads it before and after its load
// to count the CPU a store running beside the node spends per signature,
// which the node's own CPU figure leaves out. Processes that start or exit
// in between make the difference approximate; a database's backends live
// as long as the node's connections. Linux only.
func NamedProcessesCPU(names []string) (time.Duration, int, error) {
	if runtime.GOOS != "linux" {
		return 0, 0, errors.New("bench: reading other processes' CPU needs Linux /proc")
	}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, 0, err
	}
	var ticks int64
	n := 0
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || !slices.Contains(names, strings.TrimSpace(string(comm))) {
			continue // gone, or not one of ours
		}
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // exited since
		}
		t, err := statCPUTicks(stat)
		if err != nil {
			return 0, 0, fmt.Errorf("bench: %s/stat: %w", d, err)
		}
		ticks += t
		n++
	}
	return time.Duration(ticks) * time.Second / clockTicks, n, nil
}

// statCPUTicks returns utime + stime from a /proc/PID/stat line. The
// command name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so fields are counted after its last ')'.
func statCPUTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}
